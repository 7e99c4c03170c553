"""Train pan (Perceptual adversarial network with a feature pyramid (Li, Wu, Zheng, Yu)). Usage: python jobs/train_pan.py [--config ...] [key=value ...]"""
import sys
from raygan.platform.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(family="pan"))
