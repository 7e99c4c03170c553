"""Command line shared by every ``jobs/train_<family>.py``.

    python jobs/train_wcdgan.py [--config YAML] [--data URI] [--val-data URI]
        [--storage URI] [--workers N] [--steps N] [--experiment NAME] [--name NAME]
        [--resume [NAME]] [--summary-json PATH] [key=value ...]

Options are shorthands for overrides (``--steps 100`` = ``train.steps=100``). The job ends
by printing one JSON line (the run summary); ``--summary-json`` writes it to a file too.
Configuration, storage and weight errors exit with status 2 and a one-line message; a
``FileNotFoundError`` or ``ValueError`` raised inside a library exits with status 1 and one
line naming its type, its file and the frame it came from (``errors.error_line``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import List, Optional, Tuple

from raygan.platform.core.errors import (OWN_ERRORS, CapacityError, CheckpointError, ConfigError, StorageError,
                                    error_line)
from raygan.platform.core.config import load_config
from raygan.platform.trainer import check_run, run_training


_SHORTHANDS = {
    "data": "data.train", "val_data": "data.val", "storage": "ray.storage",
    "workers": "ray.workers", "steps": "train.steps", "experiment": "mlflow.experiment",
    "name": "ray.name", "address": "ray.address", "endpoint_url": "storage.endpoint_url",
    "workdir": "workdir",
}


def build_parser(family: str, prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or f"train_{family}.py",
                                description=f"Train the {family} GAN family on Ray.")
    p.add_argument("--config", help="YAML config (default: the family's paper config)")
    p.add_argument("--data", help="training shards: folder or s3://bucket/prefix")
    p.add_argument("--val-data", help="validation shards (default: the val split of --data)")
    p.add_argument("--storage", help="Ray Train storage for checkpoints: folder or s3://...")
    p.add_argument("--workers", type=int, help="number of Ray Train workers")
    p.add_argument("--steps", type=int, help="total training iterations")
    p.add_argument("--experiment", help="MLflow experiment name")
    p.add_argument("--name", help="Ray run name")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    p.add_argument("--endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--workdir", help="folder for local defaults (demo shards, MLflow db, Ray results); "
                   "default .raygan, or $RAYGAN_HOME (else ~/.raygan) under `ray job submit`")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="NAME",
                   help="resume a finished or killed run (default: the latest run of this family)")
    p.add_argument("--summary-json", help="also write the summary JSON to this file")
    p.add_argument("--check", action="store_true",
                   help="resolve the config, weights, data and schedule as a run would, print "
                        "them as JSON and exit without training")
    p.add_argument("--score-sets", nargs="+", metavar="SET",
                   help="after training, score the best checkpoint and the degraded input on "
                        "these whole images (folders or shard sets, no crop) and add the "
                        "numbers to the summary as whole_photos")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def score_whole_photos(summary: dict, cfg, sets: List[str]) -> dict:
    """The best checkpoint against its degraded input on whole images (the papers' way of
    scoring: no centre crop), both metrics RGB and Y: ``{"sets", "images", "model", "input",
    "gain_psnr", "gain_psnr_y", "protocol", "seconds"}``."""
    import time

    from raygan.platform.evaluation import data_config, evaluate
    from raygan.platform.core.config import to_dict

    t0 = time.time()
    data = {k: v for k, v in to_dict(cfg)["data"].items() if k not in ("val_crop", "val_max_images")}
    protocol = "y" if cfg.data.channels == 1 else "rgb"
    baseline = "bicubic" if cfg.data.task == "sr" else "input"
    result = evaluate([summary["best_checkpoint"], baseline], sets,
                      data_config(cfg.data.task, base=data), protocol=protocol, lpips_weights="off",
                      grid_images=0, storage_cfg=cfg.storage, progress=False,
                      tracking_uri=summary.get("mlflow_tracking_uri"))
    keys = ("psnr", "ssim", "psnr_y", "ssim_y")
    means = {}
    for which, name in (("model", summary["best_checkpoint"]), ("input", baseline)):
        rows = [r for r in result["rows"] if r["model"] == name]
        n = sum(r["images"] for r in rows)
        means[which] = {k: sum(r[k] * r["images"] for r in rows) / max(n, 1) for k in keys}
    # each set on its own too: a mean over Set5 + Set14 could hide one set behind its input
    per_set = {}
    for row in result["rows"]:
        if row["model"] != summary["best_checkpoint"]:
            continue
        ref = next(r for r in result["rows"] if r["model"] == baseline and r["set"] == row["set"])
        per_set[row["set"]] = {"images": row["images"],
                               "gain_psnr": row["psnr"] - ref["psnr"],
                               "gain_psnr_y": row["psnr_y"] - ref["psnr_y"]}
    out = {"sets": list(sets), "images": n, "protocol": protocol, "baseline": baseline,
           "model": means["model"], "input": means["input"],
           "gain_psnr": means["model"]["psnr"] - means["input"]["psnr"],
           "gain_psnr_y": means["model"]["psnr_y"] - means["input"]["psnr_y"],
           "per_set": per_set, "seconds": round(time.time() - t0, 1)}
    return out


def collect_overrides(args: argparse.Namespace) -> List[str]:
    out = []
    for opt, key in _SHORTHANDS.items():
        value = getattr(args, opt, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out + list(args.overrides)


#: a ``key=value`` override (``mlflow.alias=champion``), told apart from a set's path
_OVERRIDE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=")


def train_main(family: str, argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(family, prog).parse_intermixed_args(argv)
    if args.score_sets:  # --score-sets takes one or more sets; overrides after it are overrides
        args.overrides = list(args.overrides) + [s for s in args.score_sets if _OVERRIDE.match(s)]
        args.score_sets = [s for s in args.score_sets if not _OVERRIDE.match(s)]
    try:
        cfg = load_config(args.config, collect_overrides(args), family=None if args.config else family)
        if cfg.family != family:
            raise ConfigError(f"family: this job trains {family!r} but the config names {cfg.family!r}")

        if args.check:
            summary = check_run(cfg)
        else:
            t0 = time.time()
            summary = run_training(cfg, resume=args.resume)
            summary["train_wall_s"] = round(time.time() - t0, 1)  # Ray start-up included
            if args.score_sets and summary.get("best_checkpoint"):
                summary["whole_photos"] = score_whole_photos(summary, cfg, args.score_sets)
                w = summary["whole_photos"]
                print(f"raygan: whole photos ({w['images']} images of {', '.join(args.score_sets)}): "
                      f"model {w['model']['psnr']:.3f} dB RGB / {w['model']['psnr_y']:.3f} dB Y, "
                      f"{w['baseline']} {w['input']['psnr']:.3f} / {w['input']['psnr_y']:.3f}: "
                      f"{w['gain_psnr']:+.3f} dB RGB, {w['gain_psnr_y']:+.3f} dB Y"
                      + "".join(f"; {name} {g['gain_psnr']:+.3f} / {g['gain_psnr_y']:+.3f}"
                                for name, g in w["per_set"].items()), flush=True)
    except UserFacingErrors() as exc:
        message, status = error_line(exc)  # a library's error: its type, file and frame
        print(f"error: {message}", file=sys.stderr)
        return status
    except Exception as exc:
        found = training_failure(exc)
        if found is None or not isinstance(found[0], UserFacingErrors() + OWN_ERRORS):
            raise  # not the user's to fix: the traceback is the report
        cause, where = found
        # the worker's traceback came back as text only: Ray's message holds it
        message, status = error_line(cause, remote_frame=worker_frame(exc, cause))
        if cause.__traceback__ is None and os.environ.get("RAYGAN_TRACEBACK", "") not in ("", "0"):
            print(str(exc), file=sys.stderr)
        print(f"error: {where}: {message}", file=sys.stderr)
        return status
    line = json.dumps(summary, default=str)
    print(line, flush=True)
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(json.dumps(summary, indent=2, default=str))
    return 0


def training_failure(exc: BaseException) -> Optional[Tuple[BaseException, str]]:
    """What failed a Ray Train run and where: ``trainer.fit()`` wraps an error raised in a
    training worker in a ``WorkerGroupError`` (one entry per failed rank, the lowest first
    here) and one raised in Train's controller in a ``ControllerError``; None otherwise."""
    from ray.train import ControllerError, WorkerGroupError

    if isinstance(exc, WorkerGroupError) and exc.worker_failures:
        rank = min(exc.worker_failures)
        return exc.worker_failures[rank], f"rank {rank}"
    if isinstance(exc, ControllerError):
        return exc.controller_failure, "Ray Train's controller"
    return None


def worker_frame(exc: BaseException, cause: BaseException) -> str:
    """``raised at FILE:LINE (FUNCTION)`` from the worker's traceback text, for an error of a
    library whose frames did not survive the trip back (own errors name what they are about)."""
    if isinstance(cause, OWN_ERRORS) or cause.__traceback__ is not None:
        return ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)', str(exc))
    return f"raised at {frames[-1][0]}:{frames[-1][1]} ({frames[-1][2]})" if frames else ""


def UserFacingErrors() -> tuple:
    """Errors that are the user's to fix: reported in one line, without a traceback."""

    return (ConfigError, StorageError, CheckpointError, CapacityError, FileNotFoundError, ValueError)
