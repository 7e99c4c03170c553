"""The run plan (platform/plan.py): resolved once from a loaded config, frozen, sent to the
workers as plain data, and never a reason to change the config it came from."""
import dataclasses
import json
from pathlib import Path

import pytest

from raygan.datasets.shards import write_shards
from raygan.platform.core.config import load_config, to_dict
from raygan.platform.plan import RunPlan, Schedule, iteration_schedule, resolve_run_plan, with_settings

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"


@pytest.fixture
def shards(image_folder, tmp_path):
    dst = str(tmp_path / "shards")
    write_shards([image_folder], dst, shard_size=4, val_fraction=0.25, seed=0, parallel="none", progress=False)
    return dst


def test_a_plan_is_resolved_once_and_leaves_the_config_as_loaded(shards):
    cfg = load_config(CONFIGS / "wcdgan.yaml", [f"data.train={shards}", "train.epoch_unit=images",
                                                "train.pretrain_steps=null", "data.batch=3"])
    before = json.dumps(to_dict(cfg), sort_keys=True)
    run = resolve_run_plan(cfg, world=2)
    assert json.dumps(to_dict(cfg), sort_keys=True) == before  # nothing written back
    # wcdgan.yaml: 200,000 iterations, 4 pretraining epochs of the 8 training images at 3 x 2
    assert run.schedule == Schedule(steps=200_000, pretrain_steps=4, lr_step=cfg.optim.lr_step,
                                    steps_per_epoch=1, log_every=cfg.train.log_every,
                                    val_every=cfg.train.val_every)
    assert run.data.train.count == 8 and run.cfg().data.train == str(Path(shards).resolve())
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.schedule = iteration_schedule(cfg)  # type: ignore[misc]
    # what a Ray worker receives is plain data, and gives back the same plan
    again = RunPlan.from_dict(json.loads(json.dumps(run.to_dict())))
    assert (again.schedule, again.world, again.config) == (run.schedule, run.world, run.config)
    assert again.data.train.shards == run.data.train.shards
    assert run.cfg() is not run.cfg()  # each caller gets its own copy


def test_settings_make_a_new_config():
    cfg = load_config(CONFIGS / "wcdgan_cpu_demo.yaml")
    named = with_settings(cfg, **{"ray.name": "run-1", "workdir": "/tmp/w", "train.val_every": 7})
    assert (named.ray.name, named.workdir, named.train.val_every) == ("run-1", "/tmp/w", 7)
    assert (cfg.ray.name, cfg.workdir) == (load_config(CONFIGS / "wcdgan_cpu_demo.yaml").ray.name, ".raygan")
    with pytest.raises(Exception, match="train.val_every"):
        with_settings(cfg, **{"train.val_every": 0})  # validated like a loaded config


def test_iteration_valued_keys_are_taken_as_they_are():
    """What an engine built without a plan follows, and what a run resolves when nothing is
    counted in epochs: the config's own numbers, no data read."""
    from raygan.platform.plan import resolve_schedule

    cfg = load_config(CONFIGS / "wcdgan_cpu_demo.yaml", ["train.pretrain_steps=40", "train.steps=90",
                                                         "optim.lr_step=30", "train.log_every=5",
                                                         "train.val_every=45"])
    want = Schedule(steps=90, pretrain_steps=40, lr_step=30, steps_per_epoch=0, log_every=5, val_every=45)
    assert iteration_schedule(cfg) == resolve_schedule(cfg, 2, None) == want
    assert want.adversarial_steps == 50 and Schedule.from_dict(want.to_dict()) == want
    assert iteration_schedule(load_config(CONFIGS / "wcdgan.yaml", ["train.pretrain_steps=null"])).pretrain_steps == 0
