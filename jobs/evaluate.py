"""Evaluate restoration models and baselines on image sets: ``raygan evaluate`` from a checkout
(or under ``ray job submit``); ``--help`` and :data:`raygan.cli.EVALUATE_DOC` describe it.

    python jobs/evaluate.py --task jpeg --model models:/raygan-wcdgan-jpeg-q10-rgb/1 input \
        --sets ../shared/data/val/set5 ../shared/data/val/set14 data.quality=10
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import sys

from raygan.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main(prog="evaluate"))
