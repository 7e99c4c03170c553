"""The GAN engine without Ray: steps, schedules, EMA, AMP, checkpoints, validation."""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from raygan.platform.checkpoint import load_checkpoint, save_checkpoint
from raygan.platform.core.config import load_config, to_dict
from raygan.platform.engine import GANEngine

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
TINY = ["model.features=16", "model.blocks=1", "model.mixed_width=8", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2",
        "train.perceptual_weights=random", "train.lpips_weights=off", "data.patch=16",
        "data.batch=2", "train.pretrain_steps=1", "train.ema_decay=0.9"]


def tiny_cfg(*extra):
    return load_config(CONFIGS / "wcdgan.yaml", TINY + list(extra))


def batch(seed=0, n=2, size=16):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 3, size, size, generator=g)
    noisy = (target + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    return {"input": noisy, "target": target}


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_pretraining_touches_only_g_then_d_and_g_alternate():
    torch.manual_seed(0)
    eng = GANEngine(tiny_cfg())
    assert eng.pretrain_steps == 1
    d0 = params(eng.discriminator)
    logs = eng.train_step(batch())
    assert "d_total" not in logs
    assert all(torch.equal(a, b) for a, b in zip(d0, params(eng.discriminator)))
    g1 = params(eng.generator)
    logs = eng.train_step(batch(1))
    assert "d_total" in logs and "g_adversarial" in logs
    assert any(not torch.equal(a, b) for a, b in zip(d0, params(eng.discriminator)))
    assert any(not torch.equal(a, b) for a, b in zip(g1, params(eng.generator)))  # G steps too
    assert eng.step == 2


def test_pretraining_from_epochs():
    from types import SimpleNamespace

    from raygan.platform.plan import resolve_schedule

    cfg = tiny_cfg("train.pretrain_steps=null", "train.pretrain_epochs=2.5", "train.epoch_unit=images")
    four_epoch_steps = SimpleNamespace(count=4 * cfg.data.batch)  # images: 4 steps an epoch
    eng = GANEngine(cfg, schedule=resolve_schedule(cfg, 1, four_epoch_steps))
    assert eng.pretrain_steps == 10


def test_learning_rate_halves_every_lr_step():
    eng = GANEngine(tiny_cfg("optim.lr_step=2", "optim.lr_gamma=0.5", "train.pretrain_steps=0"))
    for i in range(4):
        eng.train_step(batch(i))
    assert eng.opt_g.param_groups[0]["lr"] == pytest.approx(2e-4 / 4)
    assert eng.opt_d.param_groups[0]["lr"] == pytest.approx(1e-4 / 4)


def test_schedules_start_with_the_adversarial_phase():
    """By default (optim.lr_schedule_start: adversarial) neither schedule moves during G-only
    pretraining: G and D both enter the adversarial phase at their initial learning rates
    (WCDGAN: 2e-4 / 1e-4), and both count adversarial steps only."""
    torch.manual_seed(0)
    eng = GANEngine(tiny_cfg("optim.lr_step=1", "optim.lr_gamma=0.5", "train.pretrain_steps=3"))
    lr_g, lr_d = eng.cfg.optim.lr_g, eng.cfg.optim.lr_d
    assert eng.cfg.optim.lr_schedule_start == "adversarial"
    for i in range(3):
        assert eng.pretraining
        logs = eng.train_step(batch(i))
        assert logs["pretraining"] == 1.0 and logs["lr_g"] == lr_g
    assert not eng.pretraining
    assert eng.sched_d.last_epoch == 0 and eng.sched_g.last_epoch == 0
    assert (eng.opt_g.param_groups[0]["lr"], eng.opt_d.param_groups[0]["lr"]) == (lr_g, lr_d)
    eng.train_step(batch(3))  # the first adversarial step: both schedules step once
    assert eng.sched_d.last_epoch == 1 and eng.sched_g.last_epoch == 1
    assert eng.opt_d.param_groups[0]["lr"] == pytest.approx(lr_d * 0.5)
    assert eng.opt_g.param_groups[0]["lr"] == pytest.approx(lr_g * 0.5)


def test_schedule_start_pretraining_counts_g_pretraining_steps():
    """optim.lr_schedule_start: pretraining (the engine's earlier behaviour): G's schedule
    counts every step from step 0; D's still counts adversarial steps only."""
    torch.manual_seed(0)
    eng = GANEngine(tiny_cfg("optim.lr_step=1", "optim.lr_gamma=0.5", "train.pretrain_steps=3",
                             "optim.lr_schedule_start=pretraining"))
    lr_g, lr_d = eng.cfg.optim.lr_g, eng.cfg.optim.lr_d
    for i in range(3):
        eng.train_step(batch(i))
    assert eng.sched_d.last_epoch == 0 and eng.opt_d.param_groups[0]["lr"] == lr_d
    assert eng.sched_g.last_epoch == 3
    assert eng.opt_g.param_groups[0]["lr"] == pytest.approx(lr_g * 0.5 ** 3)
    eng.train_step(batch(3))
    assert eng.sched_d.last_epoch == 1 and eng.sched_g.last_epoch == 4
    assert eng.opt_g.param_groups[0]["lr"] == pytest.approx(lr_g * 0.5 ** 4)
    with pytest.raises(Exception, match="lr_schedule_start"):
        tiny_cfg("optim.lr_schedule_start=never")


def test_cosine_spans_the_steps_each_schedule_counts():
    """optim.lr_schedule: cosine: D's cosine spans the adversarial phase; G's too by default
    (from lr_g at the first adversarial step), or the whole run when it counts pretraining."""
    for start, g_span in (("adversarial", 7), ("pretraining", 10)):
        eng = GANEngine(tiny_cfg("optim.lr_schedule=cosine", "train.steps=10", "train.pretrain_steps=3",
                                 f"optim.lr_schedule_start={start}"))
        assert (eng.sched_g.T_max, eng.sched_d.T_max) == (g_span, 7)
    one = GANEngine(tiny_cfg("optim.lr_schedule=cosine", "train.steps=4", "train.pretrain_steps=3"))
    assert (one.sched_g.T_max, one.sched_d.T_max) == (1, 1)  # a one-step adversarial phase


def test_g_step_leaves_discriminator_frozen_and_without_grads():
    eng = GANEngine(tiny_cfg("train.pretrain_steps=0"))
    eng.train_step(batch())
    d = eng.discriminator
    assert all(not p.requires_grad for p in d.parameters())  # frozen outside the D step
    # A G step through the frozen D reaches G only: no gradient lands on D.
    for p in d.parameters():
        p.grad = None
    b = batch(1)
    out = eng.family.generator_forward(eng.G, b)
    loss, logs = eng.family.generator_loss(d, out, b)
    loss.backward()
    assert "g_adversarial" in logs
    assert all(p.grad is None for p in d.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in eng.generator.parameters())


def test_bf16_autocast_step_runs_on_cpu():
    eng = GANEngine(tiny_cfg("train.amp=bf16", "train.pretrain_steps=0", "optim.grad_clip=1.0"))
    logs = eng.train_step(batch())
    assert torch.isfinite(torch.tensor(logs["g_total"])) and torch.isfinite(torch.tensor(logs["d_total"]))


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg()
    a = GANEngine(cfg)
    for i in range(2):
        a.train_step(batch(i))
    save_checkpoint(tmp_path / "ck", a, {"family": cfg.family, "step": a.step, "config": to_dict(cfg)})
    rng_at_save = torch.get_rng_state()
    torch.manual_seed(123)  # a different RNG state: the checkpoint must restore it
    b = GANEngine(cfg)
    load_checkpoint(tmp_path / "ck", b)
    assert torch.equal(torch.get_rng_state(), rng_at_save)  # the RNG state came back
    assert b.step == 2 and b.pretrain_steps == a.pretrain_steps
    la, lb = a.train_step(batch(5)), b.train_step(batch(5))
    assert la == pytest.approx(lb, rel=1e-6, abs=1e-7)
    for p, q in zip(a.generator.parameters(), b.generator.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_state_refuses_pickled_objects(tmp_path):
    cfg = tiny_cfg()
    a = GANEngine(cfg)
    save_checkpoint(tmp_path / "ck", a, {"family": cfg.family, "step": 0, "config": to_dict(cfg)})
    torch.save({"step": 0, "evil": _Evil()}, tmp_path / "ck" / "training_state.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint(tmp_path / "ck", GANEngine(cfg))


def test_validate_reports_model_and_degraded_input():
    eng = GANEngine(tiny_cfg())
    val = eng.validate([batch(7, n=1, size=24), batch(8, n=1, size=24)], grid_images=2)
    m = val["metrics"]
    assert val["count"] == 2 and len(val["grid"]) == 2
    for k in ("psnr", "ssim", "psnr_y", "ssim_y", "input_psnr", "input_ssim", "input_psnr_y"):
        assert k in m
    # the degraded input's PSNR, by hand: 8-bit quantized, data range 255, mean over the 2 images
    want = []
    for b in (batch(7, n=1, size=24), batch(8, n=1, size=24)):
        q = [np.round(b[k].double().numpy() * 255) for k in ("input", "target")]
        want.append(10 * np.log10(255.0 ** 2 / np.mean((q[0] - q[1]) ** 2)))
    assert m["input_psnr"] == pytest.approx(np.mean(want), rel=1e-9)


def test_initialize_from_checkpoint_and_registered_model(tmp_path, monkeypatch):
    """A run can start from another run's checkpoint or from a registered MLflow model."""
    from raygan.platform.tracking import log_generator_model, start_run
    from raygan.platform.trainer import initialize_from

    cfg = tiny_cfg(f"workdir={tmp_path}")
    src = GANEngine(cfg)
    for i in range(2):
        src.train_step(batch(i))
    ck = save_checkpoint(tmp_path / "ck", src, {"family": cfg.family, "step": 2, "config": to_dict(cfg)})

    fresh = GANEngine(cfg)
    initialize_from(fresh, str(ck), cfg)
    assert fresh.step == 0  # weights only: a new run
    for p, q in zip(src.generator.parameters(), fresh.generator.parameters()):
        assert torch.equal(p, q)

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.mlflow.tracking_uri = uri
    run_id = start_run(cfg, "src-run", False, {})
    info = log_generator_model(uri, run_id, str(ck), "raygan-test-init")
    from_registry = GANEngine(cfg)
    initialize_from(from_registry, f"models:/raygan-test-init/{info['registered_version']}", cfg)
    # The registered model carries the EMA generator (what validation scores and ships).
    for p, q in zip(src.ema.model.parameters(), from_registry.generator.parameters()):
        assert torch.equal(p, q)


def test_run_loop_converts_epochs_with_the_epoch_unit(image_folder, tmp_path):
    """run_loop (no Ray): train.epochs, train.pretrain_epochs and optim.lr_step_epochs become
    iterations counted in patches from the manifest's image sizes."""
    import math

    from raygan.datasets.shards import write_shards
    from raygan.platform.trainer import run_loop

    torch.set_num_threads(1)
    m = write_shards([image_folder], str(tmp_path / "s"), val_fraction=0.3, parallel="none", progress=False)
    n = m["splits"]["train"]["count"]
    assert m["splits"]["train"]["image_sizes"] == [[72, 64, n]]
    # 64x72 images, 32 px patches at stride 32: 2 x 2 = 4 patches each; batch 2 -> 2n its/epoch
    cfg = tiny_cfg("train.pretrain_steps=null", "train.pretrain_epochs=0.25", "train.epochs=0.5",
                   "optim.lr_step_epochs=0.125", "optim.lr_gamma=0.5", "train.epoch_unit=patches",
                   "train.epoch_patch=32", "train.epoch_stride=32", "train.ema_decay=0",
                   f"data.train={tmp_path / 's'}", f"workdir={tmp_path / 'w'}", "data.loader_workers=0",
                   "data.shuffle_buffer=2", "train.log_every=1", "train.val_every=1000",
                   "data.val_crop=16", "data.val_max_images=1", "train.device=cpu")
    assert cfg.train.steps == 200000  # wcdgan.yaml's, unused: train.epochs wins

    class Log:
        rows = []

        def metrics(self, values, step):
            if "train_g_total" in values:
                self.rows.append((step, values))

        def image(self, *a, **k):
            pass

    log = Log()
    last = run_loop(cfg, logger=log)
    assert last["step"] == n == len(log.rows)                      # 0.5 epoch of 2n iterations
    pre = [step for step, v in log.rows if v["train_pretraining"] == 1.0]
    assert pre == list(range(1, math.ceil(n / 2) + 1))             # 0.25 epoch, generator only
    lrs = [v["train_lr_g"] for _, v in log.rows]
    # G's lr is constant through pretraining, then halves every 0.125 epoch (ceil(n / 4)
    # iterations) of the adversarial phase: its schedule counts adversarial steps only
    k, m = math.ceil(n / 2), math.ceil(n / 4)
    assert k + m <= n and lrs[:k] == [pytest.approx(2e-4)] * k
    assert lrs[k + m - 2] == pytest.approx(2e-4) and lrs[k + m - 1] == pytest.approx(1e-4)


def test_cosine_schedule_spans_g_over_the_run_and_d_over_its_adversarial_phase():
    """optim.lr_schedule=cosine with lr_schedule_start=pretraining (the demo's): G's lr follows
    lr/2 * (1 + cos(pi t / steps)) from step 0;
    D's starts when the adversarial phase does and spans only that phase."""
    import math

    eng = GANEngine(tiny_cfg("optim.lr_schedule=cosine", "optim.lr_schedule_start=pretraining",
                             "train.steps=6", "train.pretrain_steps=2", "optim.lr_g=1e-3", "optim.lr_d=2e-3"))
    assert eng.sched_d.T_max == 4
    g_lrs, d_lrs = [], []
    for i in range(6):
        eng.train_step(batch(i))
        g_lrs.append(eng.opt_g.param_groups[0]["lr"])
        d_lrs.append(eng.opt_d.param_groups[0]["lr"])
    assert g_lrs == pytest.approx([1e-3 / 2 * (1 + math.cos(math.pi * t / 6)) for t in range(1, 7)], abs=1e-12)
    # two pretraining steps leave D's lr alone; then four steps down to 0
    assert d_lrs == pytest.approx([2e-3, 2e-3] + [2e-3 / 2 * (1 + math.cos(math.pi * t / 4)) for t in range(1, 5)],
                                  abs=1e-12)
    assert g_lrs[-1] == pytest.approx(0, abs=1e-12) and d_lrs[-1] == pytest.approx(0, abs=1e-12)


def test_step_schedule_is_still_the_default():
    eng = GANEngine(tiny_cfg())
    assert eng.cfg.optim.lr_schedule == "step"
    assert isinstance(eng.sched_g, torch.optim.lr_scheduler.StepLR)
    with pytest.raises(Exception, match="optim.lr_schedule"):
        tiny_cfg("optim.lr_schedule=linear")
