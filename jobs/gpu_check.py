"""The GPU check (``make gpu-check``): every family's paper config on CUDA with AMP, CPU vs GPU
losses, throughput with and without torch.compile, GPU-hours of each paper recipe, and NCCL
DDP with 2+ GPUs. No Ray needed. One table and one JSON line; exit 0 passed (or skipped: no
GPU), 1 failed. ``--help`` lists the options (raygan.platform.gpu_check)."""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.platform.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
