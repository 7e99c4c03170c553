"""One trial: how many fit the cluster (:func:`size_trials`) and the Tune function trainable
that trains it (:func:`sweep_trial`: the run's TorchTrainer, reporting to Tune)."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

from raygan.platform.core import storage
from raygan.platform import tracking
from raygan.platform.core.config import flatten, to_dict
from raygan.platform.core.errors import ConfigError
from raygan.platform.sweep.plan import SWEEP_TAG, TRIAL_TAG
from raygan.platform.sweep.space import VARIANT, trial_config, trial_values
from raygan.platform.plan import RunPlan, resolve_run_plan, with_settings
from raygan.platform.trainer import build_torch_trainer

#: the CPU a trial's own process (Tune function + Train controller) reserves; its workers
#: get the rest. A whole CPU per trial driver deadlocks 2 workers on a 2-CPU machine.
TRIAL_DRIVER_CPU = 0.01


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


def trial_run(cfg: Any, data: Dict[str, Any]) -> RunPlan:
    """A trial's run plan: the sweep's data plan (resolved once, by the sweep's driver) and
    the trial config's own schedule."""
    from raygan.datasets.pipeline import DataPlan

    return resolve_run_plan(cfg, cfg.ray.workers, DataPlan.from_dict(data, cfg.storage))


def sweep_trial(config: Dict[str, Any], setup: Dict[str, Any]) -> None:
    """One trial (a Tune function trainable): the run's TorchTrainer, reporting to Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    key = config["trial"]
    point = setup["points"][key]
    values = trial_values(point, setup["variants"])
    cfg = with_settings(trial_config(setup["base"], values), **{"ray.name": f"trial_{key}"})
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
        cfg, {"run": trial_run(cfg, setup["data"]).to_dict(), "mlflow_run_id": run_id,
              "tracking_uri": setup["tracking_uri"]},
        storage_path, filesystem, callbacks=[TuneReportCallback()],
        score=setup["metric_key"], score_order=setup["mode"], cpus_per_worker=setup["cpus_per_worker"])
    trainer.fit()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
