"""Typed config: YAML + overrides, validated with errors that name the key."""
from pathlib import Path

import pytest

from raygan.platform.config import ConfigError, flatten, load_config, to_dict, config_from_dict

CONFIGS = Path(__file__).resolve().parent.parent / "jobs" / "configs"


def test_paper_defaults_load():
    cfg = load_config(CONFIGS / "wcdgan.yaml")
    assert cfg.family == "wcdgan"
    assert cfg.optim.betas == (0.5, 0.999)
    assert (cfg.optim.lr_g, cfg.optim.lr_d) == (2e-4, 1e-4)
    assert (cfg.optim.lr_step, cfg.optim.lr_gamma) == (20000, 0.5)
    assert (cfg.data.batch, cfg.data.patch, cfg.data.task) == (16, 80, "jpeg")
    assert cfg.train.pretrain_epochs == 4


def test_overrides_are_typed():
    cfg = load_config(CONFIGS / "wcdgan.yaml", ["data.quality=5", "optim.lr_g=1e-3",
                                                 "optim.betas=[0.9,0.99]", "data.val_crop=null"])
    assert cfg.data.quality == 5 and cfg.optim.lr_g == 1e-3
    assert cfg.optim.betas == (0.9, 0.99) and cfg.data.val_crop is None


def test_demo_preset_is_named_and_inherits_the_paper_model():
    paper = load_config(CONFIGS / "wcdgan.yaml")
    demo = load_config(CONFIGS / "wcdgan_cpu_demo.yaml")
    assert demo.preset.startswith("cpu")
    assert to_dict(demo.model) == to_dict(paper.model)
    assert demo.train.perceptual_weights == "random"


@pytest.mark.parametrize("override, key", [
    ("data.qualty=5", "data.qualty"),
    ("trian.steps=5", "trian"),
    ("model.blocks_x=3", "model.blocks_x"),
    ("loss.nope=1", "loss.nope"),
])
def test_unknown_keys_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(CONFIGS / "wcdgan.yaml", [override])


@pytest.mark.parametrize("override, key", [
    ("data.quality=0", "data.quality"),
    ("data.quality=abc", "data.quality"),
    ("train.amp=fp8", "train.amp"),
    ("data.batch=0", "data.batch"),
    ("data.bits=9", "data.bits"),
    ("optim.betas=[0.9]", "optim.betas"),
    ("ray.workers=two", "ray.workers"),
    ("family=nosuch", "family"),
    ("data.task=nosuch", "data.task"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(CONFIGS / "wcdgan.yaml", [override])


def test_malformed_override_and_missing_file():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(CONFIGS / "wcdgan.yaml", ["data.quality"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(CONFIGS / "nope.yaml")


def test_round_trip_through_dict_and_flatten():
    cfg = load_config(CONFIGS / "wcdgan.yaml", ["data.quality=7"])
    again = config_from_dict(to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)
    flat = flatten(to_dict(cfg))
    assert flat["data.quality"] == 7 and "model.features" in flat
