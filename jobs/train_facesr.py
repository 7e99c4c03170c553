"""Train facesr (Prior-guided face super-resolution x8 (Yun Liu, Waseda master's thesis, 2023)). Usage: python jobs/train_facesr.py [--config ...] [key=value ...]"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys
from raygan.platform.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(family="facesr"))
