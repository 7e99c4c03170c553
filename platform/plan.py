"""The run plan: what one run will do, resolved once on the driver into frozen values.

A :class:`RunPlan` holds the loaded config (as JSON: a worker rebuilds its own copy), the data
plan (:class:`~raygan.datasets.pipeline.DataPlan`: where the shards are, their counts) and the
:class:`Schedule` (iterations, the generator-only phase, the step decay's period, the logging
and validation cadence; a checkpoint is written at each validation). The driver resolves it
(:func:`resolve_run_plan`) and sends it to every Ray worker as plain data; the engine and the
loop read their numbers from it. Nothing changes a config after it is loaded: a run setting
the driver decides (its name, its storage, its work folder) makes a new config
(:func:`with_settings`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

from raygan.datasets.pipeline import DataPlan, ShardSet, epoch_samples, resolve_data, steps_per_epoch
from raygan.platform.core.config import RunConfigSpec, apply_overrides, build_config, to_dict


@dataclass(frozen=True)
class Schedule:
    """A run's schedule in iterations (optimizer steps of every rank)."""

    steps: int               # total iterations
    pretrain_steps: int      # generator-only iterations first (0: adversarial from the start)
    lr_step: int             # the step decay's period (optim.lr_schedule: step)
    steps_per_epoch: int     # iterations of one epoch (0: nothing was counted in epochs)
    log_every: int
    val_every: int           # validation, checkpoint and report cadence

    @property
    def adversarial_steps(self) -> int:
        """Iterations of the adversarial phase (at least 1: what a cosine over it spans)."""
        return max(1, self.steps - self.pretrain_steps)

    def to_dict(self) -> Dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Schedule":
        return cls(**{f.name: int(data[f.name]) for f in dataclasses.fields(cls)})


def resolve_schedule(cfg: Any, world: int, shardset: Optional[ShardSet]) -> Schedule:
    """The :class:`Schedule` of ``cfg`` for ``world`` workers of ``data.batch``: epoch-valued
    keys (``train.epochs``, ``optim.lr_step_epochs``, ``train.pretrain_epochs``) become the
    iterations of that many epochs of ``shardset`` (in the unit of ``train.epoch_unit``);
    iteration-valued ones are taken as they are. ``cfg`` is only read.

    The training data is only read (its manifest) when an epoch-valued key needs it."""
    t, o = cfg.train, cfg.optim
    needs = (t.epochs is not None or o.lr_step_epochs is not None
             or (t.pretrain_steps is None and t.pretrain_epochs > 0))
    spe = 0
    if needs:
        if shardset is None:
            raise ValueError("resolve_schedule: epoch-valued keys need the training ShardSet")
        spe = steps_per_epoch(epoch_samples(shardset, t, cfg.data), cfg.data.batch, world)
    steps = max(1, int(math.ceil(t.epochs * spe))) if t.epochs is not None else int(t.steps)
    lr_step = max(1, int(math.ceil(o.lr_step_epochs * spe))) if o.lr_step_epochs is not None else int(o.lr_step)
    pretrain = (int(t.pretrain_steps) if t.pretrain_steps is not None
                else int(math.ceil(t.pretrain_epochs * spe)))
    return Schedule(steps=steps, pretrain_steps=pretrain, lr_step=lr_step, steps_per_epoch=spe,
                    log_every=int(t.log_every), val_every=int(t.val_every))


def iteration_schedule(cfg: Any) -> Schedule:
    """The schedule of ``cfg`` as its iteration-valued keys say, without data: what an engine
    built on its own (a benchmark, a test, the GPU check) uses. Epoch-valued keys count as 0
    epochs of data here; a run resolves them with :func:`resolve_schedule`."""
    t, o = cfg.train, cfg.optim
    return Schedule(steps=int(t.steps), pretrain_steps=int(t.pretrain_steps or 0), lr_step=int(o.lr_step),
                    steps_per_epoch=0, log_every=int(t.log_every), val_every=int(t.val_every))


@dataclass(frozen=True)
class RunPlan:
    """One run, resolved: the config (JSON), the data plan, the schedule, the worker count."""

    config: str
    data: DataPlan
    schedule: Schedule
    world: int

    def cfg(self) -> RunConfigSpec:
        """A fresh copy of the run's config (each caller gets its own)."""
        return build_config(json.loads(self.config))

    def to_dict(self) -> Dict[str, Any]:
        return {"config": json.loads(self.config), "data": self.data.to_dict(),
                "schedule": self.schedule.to_dict(), "world": self.world}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "RunPlan":
        cfg = build_config(data["config"])
        return cls(config=json.dumps(data["config"], sort_keys=True),
                   data=DataPlan.from_dict(data["data"], cfg.storage),
                   schedule=Schedule.from_dict(data["schedule"]), world=int(data["world"]))


def resolve_run_plan(cfg: RunConfigSpec, world: int, data: Optional[DataPlan] = None) -> RunPlan:
    """``cfg``'s run for ``world`` workers: where its data is (resolved here when ``data`` is
    None: manifests read once) and its schedule in iterations."""
    data = data if data is not None else resolve_data(cfg.data, cfg.storage, cfg.workdir)
    # the run's config records where its data is: the shards chosen (the demo's when data.train
    # was unset), as absolute paths
    chosen = {"data.train": data.train.uri}
    if cfg.data.val and data.val is not None:
        chosen["data.val"] = data.val.uri
    cfg = with_settings(cfg, **chosen)
    return RunPlan(config=json.dumps(to_dict(cfg), sort_keys=True), data=data,
                   schedule=resolve_schedule(cfg, world, data.train), world=int(world))


def with_settings(cfg: RunConfigSpec, **settings: Any) -> RunConfigSpec:
    """A new config: ``cfg`` with dotted keys set (``with_settings(cfg, **{"ray.name": n})``),
    validated like a loaded one; ``cfg`` itself is left as it was."""
    return build_config(apply_overrides(to_dict(cfg), [f"{k}={json.dumps(v)}" for k, v in settings.items()]))


__all__ = ["RunPlan", "Schedule", "iteration_schedule", "resolve_run_plan", "resolve_schedule", "with_settings"]
