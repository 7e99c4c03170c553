"""Sweeps: Ray Tune over loss weights and over the papers' ablations (``jobs/sweep.py``).

    python jobs/sweep.py --family pan --space ablation --config pan_edges_cpu.yaml
    python jobs/sweep.py --family dagan --space losses --trials 8 --promote

**Spaces.** A family declares its weight searches (``search_spaces``) and its paper's
ablation (``ablations``) beside its model (``raygan.models.<family>``). ``--space`` takes
names (``losses``, ``lr``, ``losses,lr``; ``ablation``) or a YAML file::

    family: dagan                 # optional: refused when it is not --family
    params:                       # a weight search ...
      loss.beta: {uniform: [0.0, 1.0]}
      loss.adversarial: {loguniform: [1.0e-4, 1.0e-1]}
      loss.gan_kind: {choice: [hinge, vanilla]}
      optim.lr_g: {grid: [1.0e-4, 2.0e-4]}
    variants:                     # ... or an ablation (one of the two)
      full: {}
      no attention: {model.self_attention: false}

Every parameter is a dotted config key; each end of a range, each choice and each variant is
built into a full run config before any trial starts, so an unknown key, an empty range, a
value the family refuses or missing VGG19 weights fail at once, naming the problem.

**Trials.** Each trial is a Tune function trainable (:func:`sweep_trial`) that builds the
run's TorchTrainer (:func:`raygan.platform.trainer.build_torch_trainer`, the same as a
training job) with ``TuneReportCallback``; the trial's driver takes :data:`TRIAL_DRIVER_CPU`
of a CPU and its workers what fits (:func:`size_trials`). Weight searches sample
``--trials`` points and stop poor ones early with ASHA on ``step``; ablations run each
variant once (a grid, no early stopping). Checkpoints go to the sweep's storage, local or
S3, under ``<storage>/<sweep>/trial_runs/trial_<key>``.

**Resume without unpickling.** The sweep's points are drawn once, up front, from a seeded
generator (the trials of a search, the rows of an ablation) and saved with the plan as JSON
(``raygan_sweep.json``); each trial has a stable key (``t000``...). When a trial ends, the
driver writes its record (``trials/<key>.json``: status and last metrics) at once. A
killed sweep's ``--resume`` reads those JSON files and runs a new Tuner over the keys that
have no record (or failed); an unfinished trial's TorchTrainer has the same run name, so it
continues from its last checkpoint. Tune's own ``tuner.pkl`` (cloudpickle) is never read
back: nothing is unpickled from storage. (ASHA's rung history of the killed attempt is not
carried over; the resumed trials are compared among themselves.)

**Out.** One MLflow parent run per sweep, one child per trial (params, curves, grids);
an ablation table (markdown + CSV) or a ranked trial table and a metric-vs-weight plot,
printed, written to ``<workdir>/sweeps/<sweep>/`` and logged to the parent; with
``--promote``, the best trial's best checkpoint registered under the family/task model name
with alias ``champion``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from raygan.platform import storage, tracking
from raygan.platform.config import (apply_overrides, build_config, flatten, load_config,
                                    to_dict, yaml_load)
from raygan.platform.engine import build_family
from raygan.platform.errors import ConfigError
from raygan.platform.metrics import LPIPSMetric
from raygan.platform.registry import FAMILIES
from raygan.platform.trainer import (RAY_JOB_ENV, _alive_nodes, _init_ray, build_torch_trainer,
                                     check_node_local_storage, place_job_outputs, prepare_run,
                                     stable_workdir)

#: the CPU a trial's own process (Tune function + Train controller) reserves; its workers
#: get the rest. A whole CPU per trial driver deadlocks 2 workers on a 2-CPU machine.
TRIAL_DRIVER_CPU = 0.01
#: --metric -> the reported key and Tune's mode
METRICS = {"psnr": "max", "psnr_y": "max", "ssim": "max", "ssim_y": "max", "lpips": "min"}
DISTRIBUTIONS = ("uniform", "loguniform", "choice", "grid")
#: an ablation point's key holding the variant's name
VARIANT = "variant"
SWEEP_TAG, TRIAL_TAG, KIND_TAG = "raygan.sweep", "raygan.trial", "raygan.sweep_kind"
SPEC_FILE = "raygan_sweep.json"
#: reported keys kept in a trial's record
RECORDED = ("step", "skipped_records", "storage_retries", "storage_wait_s", "resumed_from_step",
            "images_per_s", "val_images")


# ------------------------------------------------------------------------------ spaces


@dataclass
class SweepSpace:
    """A weight search (``params``) or an ablation (``variants``), validated."""

    name: str
    params: Dict[str, Dict[str, list]] = field(default_factory=dict)
    variants: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "ablation" if self.variants else "search"


def lr_space(cfg) -> Dict[str, Dict[str, list]]:
    """Learning rates log-uniform over a decade each side of the base config's."""
    return {key: {"loguniform": [lr / 10, lr * 10]}
            for key, lr in (("optim.lr_g", cfg.optim.lr_g), ("optim.lr_d", cfg.optim.lr_d))}


def load_space(spec: str, cfg, variants: Optional[List[str]] = None) -> SweepSpace:
    """``--space``: declared names (comma-joined) or a YAML file, checked against ``cfg``."""
    family = FAMILIES.get(cfg.family)
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        space = _space_from_yaml(path, cfg.family)
    else:
        space = SweepSpace(spec)
        names = [n.strip() for n in spec.split(",") if n.strip()]
        declared = sorted(family.search_spaces) + ["lr"] + (["ablation"] if family.ablations else [])
        for name in names:
            if name == "ablation" and family.ablations:
                if len(names) > 1:
                    raise ConfigError("--space ablation cannot be combined with a weight search")
                space.variants = family.ablation_variants(cfg)
            elif name == "lr":
                space.params.update(lr_space(cfg))
            elif name in family.search_spaces:
                space.params.update(copy.deepcopy(family.search_spaces[name]))
            else:
                raise ConfigError(f"--space {name}: family {cfg.family} declares no space {name!r}; "
                                  f"declared: {', '.join(declared)} (or give a space YAML file)")
    if variants:
        if not space.variants:
            raise ConfigError("--variants selects rows of an ablation; this space is a weight search")
        unknown = [v for v in variants if v not in space.variants]
        if unknown:
            raise ConfigError(f"--variants: no variant {unknown[0]!r} in the {cfg.family} ablation; "
                              f"variants: {', '.join(space.variants)}")
        space.variants = {v: space.variants[v] for v in variants}
    check_space(space, cfg)
    return space


def _space_from_yaml(path: Path, family: str) -> SweepSpace:
    if not path.is_file():
        raise ConfigError(f"--space {path}: no such file (named spaces: losses, lr, ablation)")
    try:
        data = yaml_load(path.read_text()) or {}
    except Exception as exc:  # yaml.YAMLError; a space file is small and user-written
        raise ConfigError(f"space {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"space {path}: expected a mapping with params: or variants:")
    unknown = sorted(set(data) - {"family", "params", "variants"})
    if unknown:
        raise ConfigError(f"space {path}: unknown key {unknown[0]!r}; valid keys: family, params, variants")
    if data.get("family") not in (None, family):
        raise ConfigError(f"space {path} is written for family {data['family']!r}, "
                          f"but this sweep trains {family!r}")
    if bool(data.get("params")) == bool(data.get("variants")):
        raise ConfigError(f"space {path}: give either params: (a weight search) or variants: "
                          "(an ablation), not both and not neither")
    for section in ("params", "variants"):
        if data.get(section) is not None and not isinstance(data[section], dict):
            raise ConfigError(f"space {path}: {section}: expected a mapping")
    return SweepSpace(str(path), params=data.get("params") or {}, variants=data.get("variants") or {})


def _ends(key: str, dist: Any) -> List[Any]:
    """The values of one parameter a trial may get at the extremes (checked ahead)."""
    if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        raise ConfigError(f"space parameter {key}: expected one of "
                          f"{', '.join(f'{{{d}: [...]}}' for d in DISTRIBUTIONS)}, got {dist!r}")
    kind, args = next(iter(dist.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space parameter {key}: {kind} needs a non-empty list, got {args!r}")
    if kind in ("uniform", "loguniform"):
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise ConfigError(f"space parameter {key}: {kind} needs [low, high] numbers, got {args!r}")
        low, high = args
        if not low < high:
            raise ConfigError(f"space parameter {key}: empty range {kind} [{low}, {high}] (low must be < high)")
        if kind == "loguniform" and low <= 0:
            raise ConfigError(f"space parameter {key}: loguniform needs low > 0, got {low}")
        # a drawn value is almost never an end: the midpoint catches integer-typed keys
        return [low, (low + high) / 2, high]
    return list(args)


def check_space(space: SweepSpace, cfg) -> None:
    """Build every end of every range and every variant into a run config (ConfigError
    naming the parameter or variant), and set up each distinct loss network once (missing
    VGG19 weights fail here, not in a trial)."""
    base = to_dict(cfg)
    configs = []
    if space.kind == "search":
        if not space.params:
            raise ConfigError(f"space {space.name}: no parameters")
        for key, dist in space.params.items():
            if key.split(".")[0] in ("family", "ray", "mlflow", "workdir"):
                raise ConfigError(f"space parameter {key}: {key.split('.')[0]} cannot be searched")
            for value in _ends(key, dist):
                configs.append((f"space parameter {key}={value!r}", trial_config(base, {key: value}, key)))
    else:
        for name, overrides in space.variants.items():
            if not isinstance(overrides, dict):
                raise ConfigError(f"ablation variant {name!r}: expected a mapping of config "
                                  f"keys to values, got {overrides!r}")
            configs.append((f"ablation variant {name!r}", trial_config(base, overrides, f"variant {name!r}")))
    seen = set()
    for what, trial_cfg in configs:
        family = build_family(trial_cfg)
        if family.perceptual_spec() in seen:
            continue
        seen.add(family.perceptual_spec())
        try:
            family.setup(torch.device("cpu"))
        except Exception as exc:
            raise type(exc)(f"{what}: {exc}") from None


def trial_config(base: Dict[str, Any], values: Dict[str, Any], what: str = "trial"):
    """The run config of one trial: ``base`` (a config as a dict) with dotted ``values``."""
    raw = copy.deepcopy(base)
    try:
        apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in values.items()])
        return build_config(raw)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def trial_values(config: Dict[str, Any], variants: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """A Tune trial's config -> the dotted overrides it trains with."""
    if VARIANT in config:
        return dict(variants[config[VARIANT]])
    return dict(config)


def sample_points(space: SweepSpace, trials: int, seed: int) -> List[Dict[str, Any]]:
    """The sweep's trials, drawn once: an ablation's rows in order; for a search, every
    combination of the ``grid`` parameters times ``trials`` draws of the others (Tune's
    num_samples x grid), from ``numpy.random.default_rng(seed)``."""
    import itertools

    import numpy as np

    if space.kind == "ablation":
        return [{VARIANT: name} for name in space.variants]
    rng = np.random.default_rng(seed)
    grid = {k: d["grid"] for k, d in space.params.items() if "grid" in d}
    points = []
    for combo in itertools.product(*grid.values()):
        for _ in range(trials):
            point = {}
            for key, dist in space.params.items():
                kind, args = next(iter(dist.items()))
                if kind == "uniform":
                    point[key] = float(rng.uniform(*args))
                elif kind == "loguniform":
                    point[key] = float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
                elif kind == "choice":
                    point[key] = args[int(rng.integers(len(args)))]
            point.update(zip(grid, combo))
            points.append({k: point[k] for k in space.params})
    return points


def trial_key(index: int) -> str:
    return f"t{index:03d}"


# --------------------------------------------------------------------------- resources


def size_trials(cluster_cpus: float, workers: int, cpus_per_worker: float,
                max_concurrent: Optional[int]) -> Tuple[int, float]:
    """``(max concurrent trials, CPUs per worker)`` that fit the cluster: each trial is its
    driver (:data:`TRIAL_DRIVER_CPU`) and ``workers`` workers of at most
    ``cpus_per_worker``. ConfigError when even one trial of ``workers`` cannot fit."""
    if max_concurrent is None:
        max_concurrent = max(1, int(cluster_cpus // (workers * cpus_per_worker + TRIAL_DRIVER_CPU)))
    fit = (cluster_cpus - TRIAL_DRIVER_CPU * max_concurrent) / (workers * max_concurrent)
    cpus = min(cpus_per_worker, math.floor(fit * 100) / 100)
    if cpus < 0.01:
        raise ConfigError(f"{max_concurrent} concurrent trials of {workers} workers do not fit the "
                          f"cluster's {cluster_cpus:g} CPUs: lower --max-concurrent or --workers-per-trial")
    return max_concurrent, cpus


# ------------------------------------------------------------------------------ trials


def sweep_trial(config: Dict[str, Any], setup: Dict[str, Any]) -> None:
    """One trial (a Tune function trainable): the run's TorchTrainer, reporting to Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    key = config["trial"]
    point = setup["points"][key]
    values = trial_values(point, setup["variants"])
    cfg = trial_config(setup["base"], values)
    cfg.ray.name = f"trial_{key}"
    label = point.get(VARIANT) or ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())
    params = flatten(to_dict(cfg))
    params.update({f"sweep.{k}": v for k, v in values.items()})
    run_id, _ = tracking.open_run(
        setup["tracking_uri"], setup["experiment_id"],
        {SWEEP_TAG: setup["sweep"], TRIAL_TAG: key}, f"{setup['sweep']} {key}: {label}",
        {"mlflow.parentRunId": setup["parent_run_id"], "raygan.family": cfg.family,
         "raygan.trial_label": label}, params)
    storage_path, filesystem = storage.ray_storage(setup["trial_storage"], cfg.storage)
    trainer = build_torch_trainer(
        cfg, {"cfg": to_dict(cfg), "data": setup["data"], "mlflow_run_id": run_id,
              "tracking_uri": setup["tracking_uri"]},
        storage_path, filesystem, callbacks=[TuneReportCallback()],
        score=setup["metric_key"], score_order=setup["mode"], cpus_per_worker=setup["cpus_per_worker"])
    trainer.fit()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# ----------------------------------------------------------------------------- tables

#: table columns: (header, reported key)
SCORE_COLUMNS = (("PSNR", "val_psnr"), ("SSIM", "val_ssim"), ("PSNR-Y", "val_psnr_y"),
                 ("SSIM-Y", "val_ssim_y"), ("LPIPS", "val_lpips"))
INPUT_COLUMNS = (("input PSNR", "val_input_psnr"), ("input PSNR-Y", "val_input_psnr_y"))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.3f}" if abs(v) < 1000 else f"{v:.4g}"
    return str(v)


def table_rows(space: SweepSpace, trials: List[Dict[str, Any]], metric_key: str,
               mode: str) -> Tuple[List[str], List[List[Any]]]:
    """``(header, rows)``: an ablation in the space's variant order, a search ranked by the
    metric (best first; failed trials last). Columns without any value (LPIPS without
    weights) are left out."""
    scores = [c for c in SCORE_COLUMNS + INPUT_COLUMNS
              if any(t["metrics"].get(c[1]) is not None for t in trials)]
    if space.kind == "ablation":
        order = {name: i for i, name in enumerate(space.variants)}
        trials = sorted(trials, key=lambda t: order.get(t["config"].get(VARIANT), len(order)))
        header = ["variant"] + [h for h, _ in scores] + ["steps", "status"]
        rows = [[t["config"].get(VARIANT)] + [t["metrics"].get(k) for _, k in scores]
                + [t["metrics"].get("step"), t["status"]] for t in trials]
        return header, rows
    sign = -1 if mode == "max" else 1
    trials = sorted(trials, key=lambda t: (t["metrics"].get(metric_key) is None,
                                           sign * (t["metrics"].get(metric_key) or 0.0)))
    params = list(space.params)
    header = ["rank", "trial"] + params + [h for h, _ in scores] + ["steps", "status"]
    rows = [[i + 1, t["trial_id"]] + [t["config"].get(p) for p in params]
            + [t["metrics"].get(k) for _, k in scores] + [t["metrics"].get("step"), t["status"]]
            for i, t in enumerate(trials)]
    return header, rows


def markdown(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: List[str], rows: List[List[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def plot_search(space: SweepSpace, trials: List[Dict[str, Any]], metric_key: str, out: Path) -> Path:
    """The metric against each searched weight, one panel per parameter (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(space.params)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    done = [t for t in trials if t["metrics"].get(metric_key) is not None]
    for ax, key in zip(axes[0], keys):
        xs = [t["config"].get(key) for t in done]
        ys = [t["metrics"][metric_key] for t in done]
        kind = next(iter(space.params[key]))
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, ys)
            if kind == "loguniform":
                ax.set_xscale("log")
        else:
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], ys)
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(metric_key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ------------------------------------------------------------------------------ driver


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
    cfg.ray.storage = args.storage
    job_note = place_job_outputs(cfg)  # a submitted job: outputs outside Ray's temporary copy
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
    prepared = prepare_run(cfg)
    steps = prepared["schedule"].train.steps
    cfg.train.val_every = max(1, steps // args.reports)
    if args.metric == "lpips" and not LPIPSMetric(cfg.train.lpips_weights).available:
        raise ConfigError("--metric lpips: no LPIPS weights (train.lpips_weights="
                          f"{cfg.train.lpips_weights!r}); place them or rank by psnr/ssim")
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    space = load_space(args.space, cfg, variants)
    scheduler = args.scheduler or ("fifo" if space.kind == "ablation" else "asha")
    label = Path(args.space).stem if space.name.endswith((".yaml", ".yml")) else args.space.replace(",", "+")
    name = args.name or f"{cfg.family}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    workdir = Path(cfg.workdir).resolve()
    cfg.workdir = str(workdir)
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


def _latest_file(workdir: str, family: str) -> Path:
    return Path(workdir).resolve() / "runs" / f"latest-sweep-{family}.json"


def _spec_uri(store: str, name: str) -> str:
    return storage.join(store, name, SPEC_FILE)


def load_plan(args: argparse.Namespace) -> SweepPlan:
    """``--resume [NAME]``: the plan saved by the sweep (its storage: --storage, else the
    one this workdir recorded for the family's latest sweep)."""
    from raygan.platform.config import DEFAULT_WORKDIR, StorageConfig

    workdir = args.workdir or (str(stable_workdir()) if RAY_JOB_ENV in os.environ else DEFAULT_WORKDIR)
    latest = _latest_file(workdir, args.family)
    recorded = json.loads(latest.read_text()) if latest.exists() else {}
    name = recorded.get("name") if args.resume == "latest" else args.resume
    if not name:
        raise ConfigError(f"--resume: no earlier {args.family} sweep recorded in {latest.parent}; "
                          "name it: --resume NAME --storage URI")
    store = args.storage or recorded.get("storage") or str(Path(workdir).resolve() / "ray_results")
    scfg = StorageConfig(endpoint_url=args.endpoint_url)
    uri = _spec_uri(store, name)
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


def _trial_recorder(plan: SweepPlan, steps: int, storage_cfg):
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


def run_sweep(plan: SweepPlan, resume: bool = False, promote: bool = False) -> Dict[str, Any]:
    import ray
    from ray import tune

    cfg = build_config(plan.base)
    space = plan.sweep_space()
    scfg = cfg.storage
    storage_path, filesystem = storage.ray_storage(plan.storage, scfg)
    sweep_uri = storage.join(plan.storage, plan.name)
    records = read_records(plan, scfg) if resume else {}
    remaining = [k for k in plan.points if records.get(k, {}).get("status") in (None, "failed")]
    if not resume and storage.exists(_spec_uri(plan.storage, plan.name), scfg):
        raise ConfigError(f"sweep {plan.name} already exists in {plan.storage}: finish it with "
                          f"--resume {plan.name}, or give a new --name")
    _init_ray(cfg)
    tracking_uri = tracking.run_tracking_uri(cfg)
    # trials run on every node: node-local trial storage or MLflow file is refused, as for runs
    check_node_local_storage(plan.storage, _alive_nodes(), cfg.ray.shared_storage, tracking_uri)
    cluster_cpus = float(ray.cluster_resources().get("CPU", 1))
    max_concurrent, cpus_per_worker = size_trials(cluster_cpus, cfg.ray.workers,
                                                  cfg.ray.cpus_per_worker or 1.0, plan.max_concurrent)

    exp_id = tracking.get_or_create_experiment(tracking_uri, cfg.mlflow.experiment, cfg.workdir)
    parent_params = {"sweep.kind": space.kind, "sweep.space": json.dumps(space.params or list(space.variants)),
                     "sweep.metric": plan.metric, "sweep.trials": len(plan.points),
                     "sweep.scheduler": plan.scheduler, "sweep.storage": sweep_uri,
                     **{f"base.{k}": v for k, v in flatten(plan.base).items()}}
    parent_id, _ = tracking.open_run(tracking_uri, exp_id, {SWEEP_TAG: plan.name, KIND_TAG: space.kind},
                                     plan.name, {"raygan.family": plan.family}, parent_params,
                                     reuse=resume)
    if not resume:
        storage.write_bytes(_spec_uri(plan.storage, plan.name),
                            json.dumps(asdict(plan), indent=2).encode(), scfg)
    latest = _latest_file(cfg.workdir, plan.family)
    latest.parent.mkdir(parents=True, exist_ok=True)
    latest.write_text(json.dumps({"name": plan.name, "storage": plan.storage}))
    print(f"raygan sweep {plan.name}: {space.kind} of {cfg.family}, {len(remaining)} of "
          f"{len(plan.points)} trials to run ({max_concurrent} at once, {cfg.ray.workers} workers x "
          f"{cpus_per_worker} CPU, {cfg.train.steps} steps, metric {plan.metric_key} {plan.mode}); "
          f"state -> {sweep_uri}; MLflow parent run {parent_id} at {tracking_uri}", flush=True)

    if remaining:
        setup = {"sweep": plan.name, "base": plan.base, "variants": space.variants,
                 "points": plan.points, "data": plan.data, "tracking_uri": tracking_uri,
                 "experiment_id": exp_id, "parent_run_id": parent_id,
                 "trial_storage": storage.join(plan.storage, plan.name, "trial_runs"),
                 "metric_key": plan.metric_key, "mode": plan.mode, "cpus_per_worker": cpus_per_worker}
        trainable = tune.with_resources(tune.with_parameters(sweep_trial, setup=setup),
                                        {"cpu": TRIAL_DRIVER_CPU})
        scheduler = None
        if plan.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="step", max_t=cfg.train.steps,
                                      grace_period=cfg.train.val_every, reduction_factor=2)
        tuner = tune.Tuner(
            trainable, param_space={"trial": tune.grid_search(remaining)},
            tune_config=tune.TuneConfig(metric=plan.metric_key, mode=plan.mode,
                                        max_concurrent_trials=max_concurrent, scheduler=scheduler),
            # each attempt is a new Tune experiment inside the sweep's folder
            run_config=tune.RunConfig(name=f"tune-{time.strftime('%Y%m%d-%H%M%S')}",
                                      storage_path=f"{storage_path}/{plan.name}",
                                      storage_filesystem=filesystem, verbose=1,
                                      callbacks=[_trial_recorder(plan, cfg.train.steps, scfg)]),
        )
        tuner.fit()
    records = read_records(plan, scfg)
    trials = [records.get(k) or {"trial_id": k, "config": plan.points[k], "metrics": {},
                                 "status": "not run"} for k in plan.points]
    summary = report_sweep(plan, space, trials, tracking_uri, exp_id, parent_id, cfg)
    if promote:
        summary["champion"] = promote_champion(plan, trials, tracking_uri, cfg, filesystem)
    logger = tracking.RunLogger(tracking_uri, parent_id)
    logger.text(json.dumps(summary, indent=2, default=str), "sweep_summary.json")
    logger.finish("FINISHED")
    return summary


def report_sweep(plan: SweepPlan, space: SweepSpace, trials, tracking_uri, exp_id, parent_id,
                 cfg) -> Dict[str, Any]:
    """Close the child runs, write and log the table (and plot), return the summary."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for t in trials:
        found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{plan.name}' and "
                                   f"tags.`{TRIAL_TAG}` = '{t['trial_id']}'", max_results=1)
        if found:
            t["mlflow_run_id"] = found[0].info.run_id
            client.set_tag(t["mlflow_run_id"], "raygan.status", t["status"])
            client.set_terminated(t["mlflow_run_id"], "FAILED" if t["status"] == "failed" else "FINISHED")
    header, rows = table_rows(space, trials, plan.metric_key, plan.mode)
    out = Path(cfg.workdir) / "sweeps" / plan.name
    out.mkdir(parents=True, exist_ok=True)
    stem = "ablation" if space.kind == "ablation" else "trials"
    md = markdown(header, rows)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.csv").write_text(to_csv(header, rows))
    files = [out / f"{stem}.md", out / f"{stem}.csv"]
    if space.kind == "search":
        files.append(plot_search(space, trials, plan.metric_key, out / f"{plan.metric}_vs_weights.png"))
    for f in files:
        client.log_artifact(parent_id, str(f))
    print(f"\n{stem} table ({plan.metric_key}, {cfg.train.steps} steps per trial):\n{md}", flush=True)
    best = best_trial(plan, trials)
    if best is not None:
        client.log_metric(parent_id, f"best_{plan.metric_key}", best["metrics"][plan.metric_key])
    return {"sweep": plan.name, "kind": space.kind, "metric": plan.metric_key, "mode": plan.mode,
            "trials": len(trials), "failed": sum(t["status"] == "failed" for t in trials),
            "best_trial": best and best["trial_id"], "best_config": best and best["config"],
            "best_value": best and best["metrics"][plan.metric_key],
            "table": str(out / f"{stem}.md"), "files": [str(f) for f in files],
            "mlflow_parent_run_id": parent_id, "mlflow_tracking_uri": tracking_uri}


def best_trial(plan: SweepPlan, trials) -> Optional[Dict[str, Any]]:
    ranked = [t for t in trials if t["metrics"].get(plan.metric_key) is not None]
    pick = max if plan.mode == "max" else min
    return pick(ranked, key=lambda t: t["metrics"][plan.metric_key], default=None)


def promote_champion(plan: SweepPlan, trials, tracking_uri, cfg, filesystem) -> Dict[str, Any]:
    """Register the best trial's best checkpoint and point alias ``champion`` at it."""
    from mlflow import MlflowClient
    from ray.train import Result

    best = best_trial(plan, [t for t in trials if "mlflow_run_id" in t])
    if best is None:
        raise RuntimeError(f"--promote: no trial of sweep {plan.name} reported {plan.metric_key}")
    storage_path, _ = storage.ray_storage(plan.storage, cfg.storage)
    run_path = f"{storage_path}/{plan.name}/trial_runs/trial_{best['trial_id']}"
    result = Result.from_path(run_path, storage_filesystem=filesystem)  # S3: bucket/key + fs
    checkpoint = result.get_best_checkpoint(plan.metric_key, plan.mode) or result.checkpoint
    trial_cfg = trial_config(plan.base, trial_values(best["config"], plan.sweep_space().variants))
    family = build_family(trial_cfg)
    name = trial_cfg.mlflow.registered_model or f"raygan-{trial_cfg.family}-{family.task_tag()}"
    with checkpoint.as_directory() as local:
        info = tracking.log_generator_model(tracking_uri, best["mlflow_run_id"], local, name)
    version = str(info["registered_version"])
    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_registered_model_alias(name, "champion", version)
    tags = {"sweep": plan.name, "trial_id": best["trial_id"], "metric": plan.metric_key,
            "value": f"{best['metrics'][plan.metric_key]:.6g}", "config": json.dumps(best["config"])}
    for k, v in tags.items():
        client.set_model_version_tag(name, version, f"raygan.{k}", v)
    print(f"champion: models:/{name}@champion -> version {version} ({plan.metric_key} "
          f"{tags['value']}, trial {best['trial_id']})", flush=True)
    return {"registered_model": name, "version": version, "alias": "champion",
            "model_uri": f"models:/{name}@champion", **tags}


def sweep_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    from raygan.platform.cli import UserFacingErrors
    from raygan.platform.errors import error_line

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
