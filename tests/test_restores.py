"""Models that restore: identity-initialised input skips, the CPU demo preset pulling ahead
of its JPEG input, and the console progress line."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raygan.platform.core.config import load_config
from raygan.platform.engine import GANEngine, build_family
from raygan.platform.trainer import progress_line

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"

# (preset, override switching the input skip on, input size, scale of the task)
SKIPS = [
    ("wcdgan.yaml", ["model.global_residual=true", "model.identity_init=true"], 24, 1),
    ("dagan.yaml", ["model.identity_init=true", "model.features=16", "model.modules=1"], 24, 1),
    ("dequantizer.yaml", ["model.input_skip=true", "model.res_blocks=1"], 24, 1),
    ("pan_sr_cpu.yaml", ["model.input_skip=true"], 16, 4),
    ("facesr_cnn_cpu.yaml", ["model.input_skip=true"], 8, 8),
]


@pytest.mark.parametrize("config,overrides,size,scale", SKIPS, ids=[s[0] for s in SKIPS])
def test_untrained_generator_with_input_skip_is_its_baseline(config, overrides, size, scale):
    cfg = load_config(CONFIGS / config, overrides + ["train.perceptual_weights=random"])
    family = build_family(cfg)
    g = family.build_generator().eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = family.restored(g(x))
    base = x if scale == 1 else F.interpolate(x, scale_factor=scale, mode="bicubic",
                                              align_corners=False).clamp(0, 1)
    assert out.shape == base.shape
    assert torch.equal(out, base)
    # ... and it is not stuck there: one gradient step moves the output
    g.train()
    out = family.restored(g(x))
    F.l1_loss(out, torch.rand_like(out)).backward()
    grads = [p.grad.abs().sum() for p in g.parameters() if p.grad is not None]
    assert sum(float(v) for v in grads) > 0


def test_paper_configs_keep_the_papers_outputs():
    """The skips are CPU-preset deviations: the paper configs do not switch them on."""
    for config in ("wcdgan.yaml", "dagan.yaml", "dequantizer.yaml", "pan_sr.yaml",
                   "facesr_cnn.yaml"):
        m = load_config(CONFIGS / config).model
        assert not getattr(m, "input_skip", False), config
        assert not getattr(m, "identity_init", False), config


def test_demo_preset_declares_its_deviations_and_no_random_vgg():
    cfg = load_config(CONFIGS / "wcdgan_cpu_demo.yaml")
    assert cfg.model.global_residual and not cfg.model.identity_init
    # a randomly initialised VGG is never on silently: the demo has no perceptual term,
    # and the run's params say so (perceptual_init=unused)
    assert cfg.loss.perceptual == 0
    family = build_family(cfg)
    family.setup(torch.device("cpu"))
    assert family.perceptual_init == "unused"
    # every key the preset changes in model/loss is explained in its header comment
    text = (CONFIGS / "wcdgan_cpu_demo.yaml").read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for key in ("global_residual", "identity_init", "model.features", "model.blocks", "loss.perceptual",
                "loss.tv", "adversarial", "lr_schedule", "lr_g", "betas", "ema_decay", "ray.workers"):
        assert key in header, key


def _photos(names):
    from PIL import Image

    from raygan.datasets.samples import demo_image_paths

    train, val = demo_image_paths()
    by_name = {Path(p).name: p for p in train + val}
    return [np.asarray(Image.open(by_name[n]).convert("RGB")) for n in names]


#: steps of the demo preset in the test, and the gains (dB over the JPEG q10 input, mean over
#: the demo's two validation photos, whole) it must beat. Measured here (2 cores, 2026-12-07,
#: the paper-width preset, 75 s; the narrow preset it replaced, now wcdgan_cpu_demo_narrow.yaml,
#: measured 0.317 / 0.254 on 2026-12-06): DEMO_MEASURED. The margins are two thirds of that:
#: room for another machine's arithmetic, not for a preset that learns late (the
#: identity-initialised v1 was at +0.13 Y / +0.10 RGB after 563 steps at this learning rate, on
#: Set5; this one is at +0.13 / +0.10 after 400 steps of a cosine over 400) or not at all.
DEMO_TEST_STEPS = 600
DEMO_MEASURED = {"gain_y": 0.244, "gain_rgb": 0.194}
DEMO_MARGINS = {"gain_y": 0.16, "gain_rgb": 0.13}


def test_cpu_demo_preset_restores_photos_it_never_saw():
    """The demo preset, trained on random crops of the demo's *training* photos, restores the
    two validation photos (in no training split), scored whole as the papers score: RGB and Y
    PSNR gains over the JPEG q10 input, each above a margin set from a measured run."""
    from raygan.datasets.degradations import get_task, jpeg, to_tensor
    from raygan.datasets.samples import DEMO_TRAIN, DEMO_VAL
    from raygan.platform.core import metrics as M

    torch.manual_seed(0)
    cfg = load_config(CONFIGS / "wcdgan_cpu_demo.yaml", ["train.lpips_weights=off"])
    cfg.data.batch *= cfg.ray.workers  # one process takes the workers' global batch
    cfg.train.steps = DEMO_TEST_STEPS
    engine = GANEngine(cfg, device=torch.device("cpu"))
    task, rng = get_task("jpeg"), np.random.default_rng(0)
    train = _photos([n for n in DEMO_TRAIN])
    assert not set(DEMO_TRAIN) & set(DEMO_VAL)
    val = [(to_tensor(jpeg(img, 10))[None], to_tensor(img)[None]) for img in _photos(DEMO_VAL)]

    def gains():
        g = engine.eval_generator().eval()
        with torch.no_grad():
            scores = [(M.score(g(x).clamp(0, 1), t, 0, None), M.score(x, t, 0, None)) for x, t in val]
        return {"gain_y": float(np.mean([float(m["psnr_y"][0] - i["psnr_y"][0]) for m, i in scores])),
                "gain_rgb": float(np.mean([float(m["psnr"][0] - i["psnr"][0]) for m, i in scores]))}

    while engine.step < DEMO_TEST_STEPS:
        samples = [task({"target": train[int(rng.integers(len(train)))], "key": "k"}, cfg.data, rng, train=True)
                   for _ in range(cfg.data.batch)]
        engine.train_step({k: torch.stack([s[k] for s in samples]) for k in ("input", "target")})
    after = gains()
    print(f"demo preset after {DEMO_TEST_STEPS} steps, whole unseen photos: {after}")
    for key, margin in DEMO_MARGINS.items():
        assert after[key] > margin, (key, after, DEMO_MEASURED)


def test_progress_line_shows_step_losses_rate_and_eta():
    line = progress_line(40, 400, {"g_total": 0.02131, "g_pixel": 0.02131, "lr_g": 1e-3,
                                   "pretraining": 1.0}, images=320, elapsed_s=20.0)
    assert line.startswith("step 40/400 (10%) pretrain | g_total 0.02131 g_pixel 0.02131 |")
    assert "16.0 img/s" in line
    assert line.endswith("ETA 3m00s")  # 360 steps left at 2 s per step
    assert "lr_g" not in line
    resumed = progress_line(110, 200, {"g_total": 0.5, "d_total": 0.25}, images=80,
                            elapsed_s=10.0, start_step=100)
    assert "pretrain" not in resumed and "d_total 0.25" in resumed
    assert resumed.endswith("ETA 1m30s")  # 10 steps took 10 s since the resume
