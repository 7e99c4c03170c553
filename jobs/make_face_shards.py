#!/usr/bin/env python
"""Pack CelebAMask-HQ faces and their parsing maps into raygan shards: ``raygan shards faces``
from a checkout (or under ``ray job submit``); ``--help`` describes it.

    python jobs/make_face_shards.py --src data/CelebAMask-HQ --dst s3://bucket/celebamask128 \
        --val-last 2000 --endpoint-url http://127.0.0.1:9000
    python jobs/make_face_shards.py --synthetic 64 --dst .raygan/faces-demo   # no data needed
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.cli import shards_faces_main

if __name__ == "__main__":
    sys.exit(shards_faces_main(prog="make_face_shards"))
