"""Each paper config's schedule, from a shard manifest of known image sizes, against the
arithmetic written in its comments; where each learning-rate schedule starts; and the
GPU-hours arithmetic of docs/reproduce.md (estimated, not measured)."""
import json
import math
from pathlib import Path

import pytest

import raygan.datasets.tasks  # noqa: F401
import raygan.models  # noqa: F401
from raygan.datasets.pipeline import ShardSet, epoch_samples
from raygan.platform.plan import resolve_schedule
from raygan.datasets.shards import FORMAT
from raygan.platform.budget import ASSUMED_GPU, flops_per_iteration, gpu_hours, implied_tflops
from raygan.platform.core.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"


def manifest(tmp_path, sizes, name="set"):
    """A shard set whose manifest records ``sizes`` = [(width, height, n), ...] (the shards
    themselves are never read: the schedule comes from the manifest alone)."""
    root = tmp_path / name
    root.mkdir()
    n = sum(k for _, _, k in sizes)
    (root / "manifest.json").write_text(json.dumps({
        "format": FORMAT,
        "splits": {"train": {"count": n, "shards": [{"name": "train-000000.tar", "count": n}],
                             "image_sizes": [list(s) for s in sizes]}}}))
    return ShardSet.open(str(root), "train")


def test_dagan_epochs_count_64px_patches_of_div2k(tmp_path):
    """80 epochs of non-overlapping 64x64 patches: 651 per 2040x1356 image, 32,550
    iterations an epoch at batch 16, 2,604,000 in all, lr / 10 every 325,500."""
    cfg = load_config(CONFIGS / "dagan.yaml")
    assert (cfg.train.epochs, cfg.train.epoch_unit, cfg.train.epoch_patch, cfg.train.epoch_stride) == (
        80, "patches", 64, 64)
    div2k = manifest(tmp_path, [(2040, 1356, 800)])
    assert epoch_samples(div2k, cfg.train, cfg.data) == 800 * 21 * 31 == 520_800
    s = resolve_schedule(cfg, 1, div2k)
    assert (s.steps_per_epoch, s.steps, s.lr_step) == (32_550, 2_604_000, 325_500)
    s = resolve_schedule(cfg, 2, div2k)
    assert (s.steps_per_epoch, s.steps, s.lr_step) == (16_275, 1_302_000, 162_750)
    # mixed sizes, by hand: a portrait image has the same grid transposed; 2040x1152 gives
    # (floor(1088/64)+1 = 18) x 31; a 50x50 image (below the patch) counts once
    mixed = manifest(tmp_path, [(2040, 1356, 3), (1356, 2040, 1), (2040, 1152, 1), (50, 50, 1)], "mixed")
    assert epoch_samples(mixed, cfg.train, cfg.data) == 4 * 651 + 18 * 31 + 1 == 3163
    assert resolve_schedule(cfg, 1, mixed).steps_per_epoch == 3163 // 16
    # the 2-hour check of the config's comment: 32,550 iterations in 2 h is 4.5 it/s
    assert 32_550 / 7200 == pytest.approx(4.52, abs=0.01)


def test_wcdgan_table_configs_share_the_papers_schedule(tmp_path):
    """Tables 1 and 2: 4 pretraining epochs of 80x80 patches at stride 75 (486 per DIV2K
    image: 97,200 iterations), 200,000 in all (the adversarial length is ours)."""
    div2k = manifest(tmp_path, [(2040, 1356, 800)])
    from raygan.platform.engine import GANEngine

    tiny = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
            "model.d_max_features=8", "model.d_fc=8", "model.d_pool=1", "loss.perceptual=0"]
    seen = {}
    for name in ("wcdgan_y_q5", "wcdgan_y_q10", "wcdgan_y_q20", "wcdgan_rgb_q5", "wcdgan_rgb_q10"):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        table, q = name.split("_")[1], int(name.split("_q")[1])
        assert cfg.data.quality == q and cfg.data.channels == (1 if table == "y" else 3)
        s = resolve_schedule(cfg, 1, div2k)
        assert (s.steps_per_epoch, s.steps) == (800 * 486 // 16, 200_000)
        assert s.pretrain_steps == 4 * 24_300 == 97_200
        assert (cfg.train.pretrain_epochs, cfg.optim.lr_schedule_start) == (4, "adversarial")
        seen[name] = cfg.family
    assert set(seen.values()) == {"wcdgan"}
    cfg = load_config(CONFIGS / "wcdgan_y_q10.yaml", tiny)
    engine = GANEngine(cfg, schedule=resolve_schedule(cfg, 1, div2k))
    assert engine.pretrain_steps == 4 * 24_300 == 97_200
    assert not engine.g_schedule_counts_pretraining  # G enters the GAN phase at lr_g


def test_dequantizer_runs_are_50_epochs_of_8000_images(tmp_path):
    images = manifest(tmp_path, [(500, 375, 8000)])
    for name in ("dequantizer_alef", "dequantizer_gimel", "dequantizer_beta", "dequantizer_phi"):
        cfg = load_config(CONFIGS / f"{name}.yaml", ["train.init_from=null"])
        s = resolve_schedule(cfg, 1, images)
        assert (s.steps_per_epoch, s.steps) == (500, 25_000), name
        assert cfg.data.crop == "center_square_resize" and cfg.data.patch == 96


def test_pan_inpainting_trains_5_epochs_of_celeba(tmp_path):
    """5 epochs at batch 1: 813,850 iterations for CelebA's 162,770 training images."""
    cfg = load_config(CONFIGS / "pan_inpaint.yaml")
    assert (cfg.train.epochs, cfg.train.epoch_unit, cfg.data.batch) == (5, "images", 1)
    celeba = manifest(tmp_path, [(178, 218, 162_770)])
    s = resolve_schedule(cfg, 1, celeba)
    assert (s.steps_per_epoch, s.steps) == (162_770, 813_850)
    assert resolve_schedule(cfg, 2, celeba).steps == 5 * (162_770 // 2)
    cpu = load_config(CONFIGS / "pan_inpaint_cpu.yaml")  # the CPU preset keeps its steps
    assert (cpu.train.epochs, cpu.train.steps) == (None, 120)


def test_fixed_step_schedules_read_no_data():
    """Face SR and PAN SR are given in iterations (ours): nothing epoch-valued to resolve."""
    for name, steps in (("facesr_cnn", 100_000), ("facesr_gan", 100_000), ("pan_sr", 200_000)):
        cfg = load_config(CONFIGS / f"{name}.yaml")
        s = resolve_schedule(cfg, 1, None)
        assert (s.steps, s.steps_per_epoch) == (steps, 0) and cfg.train.steps == steps


def test_every_paper_config_starts_its_schedules_with_the_adversarial_phase():
    """Checked per family: WCDGAN pretrains G for 4 epochs, then G and D start at 2e-4 / 1e-4;
    the others have no generator-only phase (their schedules count from step 0 either way)."""
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path, ["train.init_from=null"])
        if cfg.optim.lr_schedule_start == "pretraining":
            # CPU presets only (the demo, its previous version, the 20-minute recipes): their
            # cosine spans the whole run, L1 phase included, and their header says so
            assert not cfg.preset.startswith("paper"), path.name
            assert "cosine" in path.read_text().split("base:")[0], path.name
            continue
        assert cfg.optim.lr_schedule_start == "adversarial", path.name
        if cfg.preset.startswith("paper") and cfg.family != "wcdgan":
            assert cfg.train.pretrain_epochs == 0 and cfg.train.pretrain_steps is None, path.name
    wcdgan = load_config(CONFIGS / "wcdgan.yaml")
    assert (wcdgan.train.pretrain_epochs, wcdgan.optim.lr_g, wcdgan.optim.lr_d) == (4, 2e-4, 1e-4)


def test_gpu_hours_arithmetic_by_hand():
    # 1 TFLOP per iteration, 3,600 iterations at 1 TFLOP/s: one hour
    assert gpu_hours(1e12, 3600, 1.0) == pytest.approx(1.0)
    # 10 GFLOP pretraining its x 1,000 + 30 GFLOP adversarial its x 2,000 = 70 TFLOP;
    # at 31.2 TFLOP/s: 70 / 31.2 s = 2.2436 s = 6.232e-4 h
    assert gpu_hours(30e9, 2000, 31.2, pretrain_flops=10e9, pretrain_iterations=1000) == pytest.approx(
        70 / 31.2 / 3600, rel=1e-12)
    assert ASSUMED_GPU.sustained_tflops == pytest.approx(156.0 * 0.20)
    # DAGAN's 2-hour check: F FLOPs x 32,550 iterations in 7,200 s
    assert implied_tflops(1e11, 32_550, 7200) == pytest.approx(1e11 * 32_550 / 7200 / 1e12)
    with pytest.raises(ValueError):
        gpu_hours(1e9, 10, 0.0)
    with pytest.raises(ValueError):
        gpu_hours(-1.0, 10, 1.0)


def test_flops_per_iteration_counts_a_real_step():
    """A tiny WCDGAN: the generator-only step is G's forward and backward, counted by hand
    from its convolutions (2 x k*k x in x out x output pixels each; backward twice that,
    except the first conv's input gradient, which nothing needs); the adversarial step (D
    and G) costs more; FLOPs scale with the batch."""
    import torch
    from torch import nn

    from raygan.models.wcdgan import WCDGANGenerator

    tiny = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
            "model.d_max_features=8", "model.d_fc=8", "model.d_pool=1", "loss.perceptual=0",
            "data.patch=32"]
    one = flops_per_iteration(load_config(CONFIGS / "wcdgan.yaml", tiny + ["data.batch=1"]))
    four = flops_per_iteration(load_config(CONFIGS / "wcdgan.yaml", tiny + ["data.batch=4"]))
    assert one["adversarial"] > one["pretrain"] > 0
    assert four == {k: 4 * v for k, v in one.items()}

    g = WCDGANGenerator(3, load_config(CONFIGS / "wcdgan.yaml", tiny).model)
    convs = []

    def hook(m, _, out):
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        convs.append(2 * k * m.out_channels * out.shape[-2] * out.shape[-1])

    for m in g.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    g(torch.rand(1, 3, 32, 32))
    forward, first = sum(convs), convs[0]
    assert one["pretrain"] == 3 * forward - first
