"""Sweep a GAN family's loss weights or run its paper's ablation on Ray Tune.

Locally (a private Ray on 127.0.0.1, embedded demo data when --data is absent):
    python jobs/sweep.py --family pan --space ablation --config pan_edges_cpu.yaml
On a cluster:
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/sweep.py --family dagan --space losses --trials 16 \
        --data s3://bucket/shards --storage s3://bucket/sweeps --promote
A killed sweep goes on with --resume [NAME]. See raygan.platform.sweep for space files.
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.platform.sweep import sweep_main

if __name__ == "__main__":
    sys.exit(sweep_main())
