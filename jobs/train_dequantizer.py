"""Train dequantizer (Geleta, Martin Redondo: DequantizerNet, JPEG quality restoration). Usage: python jobs/train_dequantizer.py [--config ...] [key=value ...]"""
import sys
from raygan.platform.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(family="dequantizer"))
