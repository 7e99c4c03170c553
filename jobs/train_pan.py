"""Train pan (Perceptual adversarial network with a feature pyramid (Li, Wu, Zheng, Yu)). Usage: python jobs/train_pan.py [--config ...] [key=value ...]"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys
from raygan.platform.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(family="pan"))
