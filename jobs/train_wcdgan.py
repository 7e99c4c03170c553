"""Train WCDGAN (Xie, Zhang, Jung, IEEE Access 2021): JPEG artifact removal.

Locally (starts a private Ray on 127.0.0.1, embedded demo data when --data is absent):
    python jobs/train_wcdgan.py --config models/configs/wcdgan_cpu_demo.yaml
On a cluster:
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python jobs/train_wcdgan.py --data s3://bucket/shards --storage s3://bucket/ray
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.platform.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(family="wcdgan"))
