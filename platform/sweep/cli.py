"""Sweeps: Ray Tune over loss weights and over the papers' ablations (``jobs/sweep.py``).

The command line of ``raygan sweep`` and ``jobs/sweep.py``: the parser (its description is the
paragraph above) and :func:`sweep_main` (plan or resume, ``--check`` or run, one-line errors)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from raygan.platform.core.registry import FAMILIES
from raygan.platform.sweep.plan import METRICS, load_plan, plan_sweep
from raygan.platform.sweep.run import run_sweep


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "sweep.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, help="GAN family: " + ", ".join(FAMILIES))
    p.add_argument("--space", default="losses",
                   help="declared spaces (losses, lr, losses,lr, ablation) or a space YAML file")
    p.add_argument("--config", help="base run config (default: the family's paper config)")
    p.add_argument("--variants", help="ablation rows to run, comma-separated (default: all)")
    p.add_argument("--trials", type=int, default=8, help="sampled trials of a weight search")
    p.add_argument("--steps-per-trial", type=int, help="train.steps of each trial (pretraining "
                   "steps scale with it)")
    p.add_argument("--reports", type=int, default=4, help="validations per trial (ASHA's rungs)")
    p.add_argument("--workers-per-trial", type=int, help="Ray Train workers per trial")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what fits)")
    p.add_argument("--metric", default="psnr", choices=sorted(METRICS),
                   help="validation metric to rank by (lpips: lower is better)")
    p.add_argument("--scheduler", choices=("asha", "fifo"),
                   help="early stopping (default: asha for searches, fifo for ablations)")
    p.add_argument("--data", help="training shards: folder or s3://bucket/prefix")
    p.add_argument("--val-data", help="validation shards")
    p.add_argument("--storage", help="trial checkpoints and Tune state: folder or s3://...")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--workdir", help="local defaults (demo shards, MLflow db, tables); default .raygan")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    p.add_argument("--experiment", help="MLflow experiment name")
    p.add_argument("--name", help="sweep name (default: <family>-<space>-<timestamp>)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="NAME",
                   help="finish a killed sweep (default: this family's latest)")
    p.add_argument("--promote", action="store_true",
                   help="register the best trial's generator with alias 'champion'")
    p.add_argument("--seed", type=int, help="search seed (default: the config's seed)")
    p.add_argument("--check", action="store_true",
                   help="plan and check the sweep (space, configs, weights, data), print the "
                        "trials as JSON and exit without starting Ray")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="base config overrides")
    return p


def sweep_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    from raygan.platform.cli import UserFacingErrors
    from raygan.platform.core.errors import error_line

    args = build_parser(prog).parse_intermixed_args(argv)
    try:
        plan = load_plan(args) if args.resume else plan_sweep(args)
        if args.check:
            summary = {"check": "ok", "sweep": plan.name, "kind": plan.sweep_space().kind,
                       "steps_per_trial": plan.base["train"]["steps"], "metric": plan.metric_key,
                       "scheduler": plan.scheduler, "trials": plan.points}
        else:
            summary = run_sweep(plan, resume=bool(args.resume), promote=args.promote)
    except UserFacingErrors() as exc:
        message, status = error_line(exc)
        print(f"error: {message}", file=sys.stderr)
        return status
    print(json.dumps(summary, default=str), flush=True)
    return 0
