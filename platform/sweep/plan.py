"""A sweep's plan and what it leaves in storage: :class:`SweepPlan` (resolved once by
:func:`plan_sweep`, saved as JSON, read back by :func:`load_plan` on ``--resume``), the
trials' records (written by :func:`trial_recorder` as each trial ends, read by
:func:`read_records`), and the MLflow tags that name a sweep's runs."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from raygan.platform.core import storage
from raygan.platform.core.config import apply_overrides, build_config, load_config, to_dict
from raygan.platform.core.errors import ConfigError
from raygan.platform.core.metrics import LPIPSMetric
from raygan.platform.sweep.space import SweepSpace, load_space, sample_points, trial_key
from raygan.platform.plan import with_settings
from raygan.platform.trainer import RAY_JOB_ENV, place_job_outputs, prepare_run, stable_workdir

#: --metric -> the reported key and Tune's mode
METRICS = {"psnr": "max", "psnr_y": "max", "ssim": "max", "ssim_y": "max", "lpips": "min"}
#: MLflow tags: the sweep's name (parent and children), a child's trial key, the sweep's kind
SWEEP_TAG, TRIAL_TAG, KIND_TAG = "raygan.sweep", "raygan.trial", "raygan.sweep_kind"
#: the saved plan, at <storage>/<sweep>/
SPEC_FILE = "raygan_sweep.json"
#: reported keys kept in a trial's record
RECORDED = ("step", "skipped_records", "storage_retries", "storage_wait_s", "resumed_from_step",
            "images_per_s", "val_images")


_SHORTHANDS = {"data": "data.train", "val_data": "data.val", "endpoint_url": "storage.endpoint_url",
               "workdir": "workdir", "address": "ray.address", "experiment": "mlflow.experiment",
               "workers_per_trial": "ray.workers", "seed": "seed"}


@dataclass
class SweepPlan:
    """Everything a sweep needs, saved as JSON in its storage so ``--resume`` rebuilds it."""

    name: str
    family: str
    space: Dict[str, Any]
    base: Dict[str, Any]
    metric: str
    scheduler: str
    storage: str
    max_concurrent: Optional[int]
    data: Dict[str, Any]  # the resolved DataPlan, as the trials' workers get it
    points: Dict[str, Dict[str, Any]]  # trial key -> its values (an ablation: {"variant": name})

    @property
    def metric_key(self) -> str:
        return f"val_{self.metric}"

    @property
    def mode(self) -> str:
        return METRICS[self.metric]

    def sweep_space(self) -> SweepSpace:
        return SweepSpace(**self.space)


def plan_sweep(args: argparse.Namespace) -> SweepPlan:
    """Resolve and check a new sweep (no Ray yet); ConfigError on anything wrong."""
    overrides = [f"{key}={getattr(args, opt)}" for opt, key in _SHORTHANDS.items()
                 if getattr(args, opt, None) is not None] + list(args.overrides)
    cfg = load_config(args.config, overrides, family=None if args.config else args.family)
    if cfg.family != args.family:
        raise ConfigError(f"--config {args.config} is a {cfg.family} config, not {args.family}")
    cfg = with_settings(cfg, **{"ray.storage": args.storage})
    cfg, job_note = place_job_outputs(cfg)  # a submitted job: outputs outside Ray's temporary copy
    if job_note:
        print(job_note, flush=True)
    if args.trials < 1 or args.reports < 1:
        raise ConfigError("--trials and --reports must be >= 1")
    if args.steps_per_trial is not None:
        if args.steps_per_trial < 1:
            raise ConfigError(f"--steps-per-trial must be >= 1, got {args.steps_per_trial}")
        scaled = []
        if cfg.train.epochs is None and cfg.train.pretrain_steps is not None:
            # keep the adversarial phase's share of the run
            share = cfg.train.pretrain_steps / max(cfg.train.steps, 1)
            scaled = [f"train.pretrain_steps={int(round(share * args.steps_per_trial))}"]
        raw = to_dict(cfg)
        apply_overrides(raw, [f"train.steps={args.steps_per_trial}"] + scaled)
        cfg = build_config(raw)
    prepared = prepare_run(cfg)  # the data plan is the same for every trial; the cadence is not
    cfg = with_settings(cfg, **{"train.val_every": max(1, prepared["schedule"].steps // args.reports)})
    if args.metric == "lpips" and not LPIPSMetric(cfg.train.lpips_weights).available:
        raise ConfigError("--metric lpips: no LPIPS weights (train.lpips_weights="
                          f"{cfg.train.lpips_weights!r}); place them or rank by psnr/ssim")
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    space = load_space(args.space, cfg, variants)
    scheduler = args.scheduler or ("fifo" if space.kind == "ablation" else "asha")
    label = Path(args.space).stem if space.name.endswith((".yaml", ".yml")) else args.space.replace(",", "+")
    name = args.name or f"{cfg.family}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir = Path(cfg.workdir).resolve()
    cfg = with_settings(cfg, workdir=str(workdir))
    store = args.storage or str(workdir / "ray_results")
    if storage.is_local(store):
        store = str(Path(storage.local_path(store)).resolve())
    base = to_dict(cfg)
    base["data"].update(train=prepared["plan"].train.uri, val=prepared["plan"].val.uri)
    points = sample_points(space, args.trials, cfg.seed)
    return SweepPlan(name, cfg.family, {"name": space.name, "params": space.params,
                                        "variants": space.variants},
                     base, args.metric, scheduler, store, args.max_concurrent,
                     prepared["plan"].to_dict(), {trial_key(i): p for i, p in enumerate(points)})


def latest_file(workdir: str, family: str) -> Path:
    return Path(workdir).resolve() / "runs" / f"latest-sweep-{family}.json"


def spec_uri(store: str, name: str) -> str:
    return storage.join(store, name, SPEC_FILE)


def load_plan(args: argparse.Namespace) -> SweepPlan:
    """``--resume [NAME]``: the plan saved by the sweep (its storage: --storage, else the
    one this workdir recorded for the family's latest sweep)."""
    from raygan.platform.core.config import DEFAULT_WORKDIR, StorageConfig

    workdir = args.workdir or (str(stable_workdir()) if RAY_JOB_ENV in os.environ else DEFAULT_WORKDIR)
    latest = latest_file(workdir, args.family)
    recorded = json.loads(latest.read_text()) if latest.exists() else {}
    name = recorded.get("name") if args.resume == "latest" else args.resume
    if not name:
        raise ConfigError(f"--resume: no earlier {args.family} sweep recorded in {latest.parent}; "
                          "name it: --resume NAME --storage URI")
    store = args.storage or recorded.get("storage") or str(Path(workdir).resolve() / "ray_results")
    scfg = StorageConfig(endpoint_url=args.endpoint_url)
    uri = spec_uri(store, name)
    if not storage.exists(uri, scfg):
        raise ConfigError(f"--resume {name}: no sweep at {uri}")
    plan = SweepPlan(**json.loads(storage.read_bytes(uri, scfg)))
    if plan.family != args.family:
        raise ConfigError(f"--resume {name}: that sweep trains {plan.family}, not {args.family}")
    return plan


def _record_uri(plan: SweepPlan, key: str) -> str:
    return storage.join(plan.storage, plan.name, "trials", f"{key}.json")


def read_records(plan: SweepPlan, storage_cfg) -> Dict[str, Dict[str, Any]]:
    """The records of the sweep's ended trials, by key (JSON written by TrialRecorder)."""
    out = {}
    for key in plan.points:
        uri = _record_uri(plan, key)
        if storage.exists(uri, storage_cfg):
            out[key] = json.loads(storage.read_bytes(uri, storage_cfg))
    return out


def trial_recorder(plan: SweepPlan, steps: int, storage_cfg):
    """A Tune callback, in the sweep's driver, writing each trial's record as it ends."""
    from ray import tune

    class TrialRecorder(tune.Callback):
        def _write(self, trial, failed: bool) -> None:
            result = trial.last_result or {}
            metrics = {k: v for k, v in result.items() if k.startswith("val_") or k in RECORDED}
            key = trial.config["trial"]
            if failed:
                status = "failed"
            elif (metrics.get("step") or 0) < steps:
                status = f"stopped early at {metrics.get('step')}"
            else:
                status = "done"
            record = {"trial_id": key, "config": plan.points[key], "metrics": metrics,
                      "status": status, "tune_trial_id": trial.trial_id,
                      "error": str(getattr(trial, "error_file", "") or "") if failed else None}
            storage.write_bytes(_record_uri(plan, key), json.dumps(record, indent=2).encode(), storage_cfg)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._write(trial, failed=False)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._write(trial, failed=True)

    return TrialRecorder()
