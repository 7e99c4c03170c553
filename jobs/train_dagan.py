"""Train dagan (Zhang, Hu, Lu: Deep Attentive GAN for Photo-Realistic Image De-Quantization). Usage: python jobs/train_dagan.py [--config ...] [key=value ...]"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys
from raygan.platform.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(family="dagan"))
