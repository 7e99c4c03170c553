"""Train dequantizer (Geleta, Martin Redondo: DequantizerNet, JPEG quality restoration). Usage: python jobs/train_dequantizer.py [--config ...] [key=value ...]"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys
from raygan.platform.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(family="dequantizer"))
