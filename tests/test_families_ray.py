"""Every family trains a few steps through the same engine on 2 Ray Train workers (gloo),
then its registered generator loads back and restores an image."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raygan.platform.core.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "models" / "configs"
pytestmark = pytest.mark.slow

COMMON = ["train.steps=2", "train.val_every=2", "train.log_every=1", "train.pretrain_steps=1",
          "data.batch=2", "data.loader_workers=0", "data.val_max_images=2", "data.shuffle_buffer=4",
          "ray.workers=2", "ray.cpus_per_worker=1", "train.perceptual_weights=random",
          "train.lpips_weights=off"]

#: DAGAN, DequantizerNet (bf16 all-reduce), face SR's CNN and PAN's edges preset train on 2
#: workers under `ray job submit` (tests/test_ray_train.py), with the same checks; WCDGAN in
#: tests/test_ray_train.py too. Here: the other presets.
CASES = {
    "facesr_gan": ("facesr_gan_cpu.yaml", ["model.nf=8", "model.n_blocks=1", "model.prior_nf=8",
                                           "model.prior_depth=2", "model.d_nf=8"]),
    "pan_sr": ("pan_sr_cpu.yaml", []),
    "pan_inpaint": ("pan_inpaint_cpu.yaml", []),
    "pan_paired": ("pan_paired_cpu.yaml", []),
}


@pytest.fixture(scope="module")
def ray_local():
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def face_shards(tmp_path_factory):
    from raygan.datasets.faces import make_synthetic_celebamask, write_face_shards

    root = tmp_path_factory.mktemp("celebamask")
    make_synthetic_celebamask(str(root), 8, image_size=128, mask_size=128)
    dst = tmp_path_factory.mktemp("faces") / "shards"
    write_face_shards(str(root), str(dst), val_last=2, parallel="none", progress=False)
    return str(dst)


@pytest.fixture(scope="module")
def paired_shards(tmp_path_factory, demo_shards):
    from raygan.datasets.paired import write_paired_shards
    from raygan.datasets.samples import demo_image_paths

    src = tmp_path_factory.mktemp("pairs")
    train, val = demo_image_paths()
    for i, p in enumerate(list(train)[:4] + list(val)[:2]):
        b = np.asarray(Image.open(p).convert("RGB").resize((96, 96)))
        a = 255 - b  # a deterministic, learnable "translation"
        Image.fromarray(np.concatenate([a, b], axis=1)).save(src / f"p{i}.png")
    dst = tmp_path_factory.mktemp("paired") / "shards"
    write_paired_shards(str(dst), pairs=str(src), val_fraction=0.34, progress=False)
    return str(dst)


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_trains_on_two_ray_workers(case, ray_local, tmp_path, demo_shards, request):
    from raygan.platform.restorer import load_generator
    from raygan.platform.trainer import run_training

    config, extra = CASES[case]
    data = demo_shards
    if case == "facesr_gan":
        data = request.getfixturevalue("face_shards")
    elif case == "pan_paired":
        data = request.getfixturevalue("paired_shards")
    cfg = load_config(CONFIGS / config, COMMON + extra + [f"data.train={data}",
                                                          f"workdir={tmp_path / 'work'}"])
    summary = run_training(cfg)
    assert summary["steps"] == 2
    assert summary["params_generator"] > 0
    for key in ("psnr", "ssim", "psnr_y", "ssim_y"):
        assert np.isfinite(summary["val_model"][key]) and np.isfinite(summary["val_degraded_input"][key])
    assert summary["registered_model"].startswith(f"raygan-{cfg.family}") or cfg.mlflow.registered_model
    model, config_dict = load_generator(f"models:/{summary['registered_model']}/{summary['registered_version']}",
                                        summary["mlflow_tracking_uri"])
    assert config_dict["family"] == cfg.family
    import torch

    size = cfg.data.patch // (cfg.data.scale if cfg.data.task in ("sr", "face_sr") else 1)
    if cfg.data.task == "face_sr":
        size = cfg.data.patch // cfg.data.scale
    x = torch.rand(1, cfg.data.channels, size, size)
    y = model(x)
    ratio = cfg.data.scale if cfg.data.task in ("sr", "face_sr") else 1
    assert y.shape == (1, cfg.data.channels, size * ratio, size * ratio)
