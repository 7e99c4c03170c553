"""facesr (Liu 2023, prior-guided face SR x8): shapes, counts, losses, GAN wiring, configs."""
from pathlib import Path

import numpy as np
import pytest
import torch

from raygan.datasets.degradations import get_task
from raygan.models.facesr import (FaceSRFamily, FaceSRLossConfig, FaceSRModelConfig, FaceSRNet,
                                  SqueezeExcite, SRGANDiscriminator)
from raygan.platform.core.config import ConfigError, DataConfig, load_config
from raygan.platform.engine import GANEngine

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
TINY = dict(nf=8, n_blocks=2, prior_nf=8, prior_depth=2, d_nf=8)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def tiny_family(variant="cnn", **loss):
    data = DataConfig(task="face_sr", scale=8, patch=32)
    fam = FaceSRFamily(FaceSRModelConfig(variant=variant, **TINY), FaceSRLossConfig(**loss), data)
    fam.perceptual_weights = "random"
    return fam


def face_batch(n=2, size=32, scale=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, 3, size, size, generator=g)
    parsing = (torch.rand(n, 11, size, size, generator=g) > 0.7).float()
    inp = torch.nn.functional.avg_pool2d(target, scale)
    return {"input": inp, "target": target, "parsing": parsing}


def test_paper_size_shapes_and_parameter_counts():
    torch.manual_seed(0)
    g = FaceSRNet(FaceSRModelConfig())
    # no published count: these pin our reading of the thesis (see models/facesr.py)
    assert (n_params(g.sr), n_params(g.prior), n_params(g.fusion)) == (2265411, 4727691, 83715)
    assert n_params(g) == 7076817
    d = SRGANDiscriminator(3, 64, 128)
    assert n_params(d) == 38245569
    print(f"facesr G {n_params(g):,} D {n_params(d):,}")
    logits = []
    hook = g.prior.out.register_forward_hook(lambda mod, inp, out: logits.append(out))
    with torch.no_grad():
        out = g(torch.rand(1, 3, 16, 16))
        hook.remove()
        assert out["coarse"].shape == out["fine"].shape == (1, 3, 128, 128)
        assert out["parsing"].shape == (1, 11, 128, 128)
        # the parsing maps are the sigmoid of the prior branch's 1x1 output conv
        torch.testing.assert_close(out["parsing"], torch.sigmoid(logits[0]), rtol=0, atol=0)
        assert d(out["fine"]).shape == (1, 1)
    with pytest.raises(ValueError, match="data.patch"):
        d(torch.rand(1, 3, 64, 64))


def test_squeeze_excite_softmax_sums_to_one_and_sigmoid_switch():
    x = torch.randn(2, 16, 5, 5)
    torch.manual_seed(0)
    se = SqueezeExcite(16, 4, "softmax")
    w = se(x)
    assert torch.allclose(w.sum(1), torch.ones(2, 1, 1), atol=1e-6)
    torch.manual_seed(0)
    s = SqueezeExcite(16, 4, "sigmoid")(x)
    assert not torch.allclose(s.sum(1), torch.ones(2, 1, 1), atol=1e-2)
    # both from the same weights: z = W2 relu(W1 gap(x) + b1) + b2 (global *average* pool),
    # then softmax over the channels or an elementwise sigmoid
    F = torch.nn.functional
    gap = x.mean(dim=(2, 3))
    z = F.linear(F.relu(F.linear(gap, se.fc1.weight, se.fc1.bias)), se.fc2.weight, se.fc2.bias)
    assert w.shape == s.shape == (2, 16, 1, 1)
    torch.testing.assert_close(w[:, :, 0, 0], torch.softmax(z, dim=1))
    torch.testing.assert_close(s[:, :, 0, 0], torch.sigmoid(z))


def test_cnn_generator_drives_its_loss_down():
    torch.manual_seed(0)
    fam = tiny_family("cnn")
    g = fam.build_generator()
    assert fam.build_discriminator() is None
    batch = face_batch()
    opt = torch.optim.Adam(g.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss, logs = fam.generator_loss(None, fam.generator_forward(g, batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(logs) >= {"g_coarse", "g_prior", "g_fine"}
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_gan_variant_losses_and_gradients():
    torch.manual_seed(0)
    fam = tiny_family("gan")
    fam.setup(torch.device("cpu"))
    assert fam.perceptual is not None and fam.perceptual.init == "random"
    g, d = fam.build_generator(), fam.build_discriminator()
    batch = face_batch()
    out = fam.generator_forward(g, batch)
    ld, dlogs = fam.discriminator_loss(d, fam.restored(out).detach(), batch)
    ld.backward()
    assert all(p.grad is None for p in g.parameters())
    assert d.features[0].weight.grad is not None and {"d_real", "d_fake"} <= set(dlogs)
    d.requires_grad_(False)
    lg, logs = fam.generator_loss(d, out, batch)
    assert {"g_perceptual", "g_adversarial", "g_coarse", "g_prior", "g_fine"} <= set(logs)
    c = fam.loss_cfg
    content = c.coarse * logs["g_coarse"] + c.prior * logs["g_prior"] + c.fine * logs["g_fine"]
    assert lg.item() == pytest.approx(content + c.perceptual * logs["g_perceptual"]
                                      + c.adversarial * logs["g_adversarial"], rel=1e-5)
    lg.backward()
    assert g.sr.head.weight.grad is not None
    # without D (switched off) the adversarial term disappears
    _, logs2 = fam.generator_loss(None, fam.generator_forward(g, batch), batch)
    assert "g_adversarial" not in logs2


def test_face_sr_task_builds_the_16px_input_and_parsing_maps():
    from raygan.datasets.faces import FLIP_PERM, pack_maps

    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    maps = (rng.random((128, 128, 11)) > 0.5).astype(np.uint8)
    rec = {"key": "k", "target": face, "parsing": pack_maps(maps)}
    cfg = DataConfig(task="face_sr", scale=8, patch=128, augment=False)
    s = get_task("face_sr")(rec, cfg, rng, True)
    assert s["input"].shape == (3, 16, 16) and s["target"].shape == (3, 128, 128)
    assert s["parsing"].shape == (11, 128, 128)
    assert torch.equal(s["parsing"], torch.from_numpy(maps).permute(2, 0, 1).float())
    assert FLIP_PERM == (0, 1, 3, 2, 5, 4, 7, 6, 8, 9, 10)


def test_configs_load_and_engine_runs_both_variants():
    for name in ("facesr_cnn.yaml", "facesr_gan.yaml", "facesr_cnn_cpu.yaml", "facesr_gan_cpu.yaml"):
        cfg = load_config(CONFIGS / name, ["train.perceptual_weights=random"])
        assert cfg.family == "facesr" and cfg.data.task == "face_sr" and cfg.data.scale == 8
        assert cfg.preset == "paper" or cfg.preset.startswith("cpu-")
    gan = load_config(CONFIGS / "facesr_gan.yaml")
    assert gan.model.variant == "gan" and gan.optim.optimizer == "rmsprop"
    assert gan.model.se_activation == "softmax" and gan.data.patch == 128
    with pytest.raises(ConfigError, match="model.se_activation"):
        load_config(CONFIGS / "facesr_cnn.yaml", ["model.se_activation=relu"])
    with pytest.raises(ConfigError, match="model.variant"):
        load_config(CONFIGS / "facesr_cnn.yaml", ["model.variant=big"])
    tiny = [f"model.{k}={v}" for k, v in TINY.items()] + [
        "data.patch=32", "train.perceptual_weights=random", "train.lpips_weights=off",
        "train.pretrain_steps=1", "train.ema_decay=0", "train.device=cpu"]
    torch.manual_seed(0)
    for name in ("facesr_cnn.yaml", "facesr_gan.yaml"):
        eng = GANEngine(load_config(CONFIGS / name, tiny))
        for _ in range(2):
            logs = eng.train_step(face_batch())
        assert np.isfinite(logs["g_total"])
        assert ("d_total" in logs) == name.startswith("facesr_gan")
        assert isinstance(eng.opt_g, torch.optim.RMSprop)


def test_both_branches_read_the_lr_input_by_default():
    """The thesis' "two independent branches": SR and prior branch both get the LR face;
    prior_input=coarse_sr keeps the former FSRNet-style series wiring."""
    torch.manual_seed(0)
    assert FaceSRModelConfig().prior_input == "lr"
    for name in ("facesr_cnn.yaml", "facesr_gan.yaml"):
        assert load_config(CONFIGS / name, ["train.perceptual_weights=random"]).model.prior_input == "lr"
    x = torch.rand(1, 3, 4, 4)
    for wiring in ("lr", "coarse_sr"):
        g = FaceSRNet(FaceSRModelConfig(prior_input=wiring, **TINY), 3, 8)
        seen = {}
        hooks = [getattr(g, part).register_forward_hook(
                     lambda mod, inp, out, part=part: seen.__setitem__(part, (inp, out)))
                 for part in ("sr", "prior", "fusion")]
        with torch.no_grad():
            out = g(x)
        for h in hooks:
            h.remove()
        assert seen["sr"][0][0] is x
        assert seen["fusion"][0][0] is out["coarse"] and seen["fusion"][0][1] is out["parsing"]
        if wiring == "lr":
            assert seen["prior"][0][0] is x  # the LR input itself, not the SR branch's output
        else:
            assert seen["prior"][0][0] is out["coarse"]
        assert out["parsing"].shape == (1, 11, 32, 32)
    # independence: with the LR wiring the parsing maps do not depend on the SR branch
    g = FaceSRNet(FaceSRModelConfig(**TINY), 3, 8)
    with torch.no_grad():
        p0 = g(x)["parsing"]
        for p in g.sr.parameters():
            p.add_(0.5)
        torch.testing.assert_close(g(x)["parsing"], p0)
    with pytest.raises(ConfigError, match="model.prior_input"):
        load_config(CONFIGS / "facesr_cnn.yaml", ["model.prior_input=hr"])


def test_no_generator_pretraining_unless_configured():
    from raygan.platform.core.config import TrainConfig

    assert TrainConfig().pretrain_epochs == 0 and TrainConfig().pretrain_steps is None
    for name in ("facesr_cnn.yaml", "facesr_gan.yaml"):
        cfg = load_config(CONFIGS / name, ["train.perceptual_weights=random"])
        assert cfg.train.pretrain_epochs == 0 and cfg.train.pretrain_steps is None
    cfg = load_config(CONFIGS / "facesr_gan.yaml", ["train.pretrain_epochs=5"])
    assert cfg.train.pretrain_epochs == 5  # configurable
