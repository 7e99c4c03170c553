#!/usr/bin/env python
"""Pack paired images (pix2pix A|B or two aligned folders) into raygan shards: ``raygan shards
paired`` from a checkout (or under ``ray job submit``); ``--help`` describes it.

    python jobs/make_paired_shards.py --pairs data/facades --direction BtoA --dst .raygan/facades
    python jobs/make_paired_shards.py --inputs data/sketches --targets data/photos \
        --dst s3://bucket/sketch2photo --endpoint-url http://127.0.0.1:9000
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.cli import shards_paired_main

if __name__ == "__main__":
    sys.exit(shards_paired_main(prog="make_paired_shards"))
