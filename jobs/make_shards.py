#!/usr/bin/env python
"""Pack image folders into raygan shards: ``raygan shards folder`` from a checkout (or under
``ray job submit``); ``--help`` describes it.

    python jobs/make_shards.py --src data/DIV2K_train_HR --dst s3://bucket/div2k \
        --val-src data/Set5 data/Set14 --val-fraction 0 --endpoint-url http://127.0.0.1:9000
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.cli import shards_folder_main

if __name__ == "__main__":
    sys.exit(shards_folder_main(prog="make_shards"))
