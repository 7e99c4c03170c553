"""Serve the restoration endpoints: ``raygan serve`` from a checkout; ``--help`` and
:data:`raygan.cli.SERVE_DOC` describe it.

    RAYGAN_SERVE_TOKEN=... python jobs/serve.py --task jpeg=models:/raygan-wcdgan-jpeg-q10-rgb@champion
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.cli import serve_main

if __name__ == "__main__":
    sys.exit(serve_main(prog="serve"))
