"""A sweep's driver (:func:`run_sweep`): Ray, the MLflow parent run, one Tune experiment over
the trials still to run (ASHA or FIFO), then the report and, with ``--promote``, the champion."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any, Dict

from raygan.platform.core import storage
from raygan.platform import tracking
from raygan.platform.core.config import build_config, flatten
from raygan.platform.core.errors import ConfigError
from raygan.platform.sweep.plan import (KIND_TAG, SWEEP_TAG, SweepPlan, latest_file, read_records,
                                        spec_uri, trial_recorder)
from raygan.platform.sweep.report import promote_champion, report_sweep
from raygan.platform.sweep.trial import TRIAL_DRIVER_CPU, size_trials, sweep_trial
from raygan.platform.trainer import alive_nodes, check_node_local_storage, init_ray

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
    if not resume and storage.exists(spec_uri(plan.storage, plan.name), scfg):
        raise ConfigError(f"sweep {plan.name} already exists in {plan.storage}: finish it with "
                          f"--resume {plan.name}, or give a new --name")
    init_ray(cfg)
    tracking_uri = tracking.run_tracking_uri(cfg)
    # trials run on every node: node-local trial storage or MLflow file is refused, as for runs
    check_node_local_storage(plan.storage, alive_nodes(), cfg.ray.shared_storage, tracking_uri)
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
        storage.write_bytes(spec_uri(plan.storage, plan.name),
                            json.dumps(asdict(plan), indent=2).encode(), scfg)
    latest = latest_file(cfg.workdir, plan.family)
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
                                      callbacks=[trial_recorder(plan, cfg.train.steps, scfg)]),
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
