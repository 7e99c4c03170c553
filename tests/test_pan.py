"""pan (PAN with a feature pyramid): pix2pix parts, pyramid identity, losses, ablations."""
from pathlib import Path

import numpy as np
import pytest
import torch

from raygan.models.pan import (PANFamily, PANLossConfig, PANModelConfig, PatchGAN, UnetGenerator,
                               down, gaussian_pyramid, laplacian_pyramid, reconstruct, up)
from raygan.platform.core.config import ConfigError, DataConfig, load_config
from raygan.platform.engine import GANEngine

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
TINY = dict(ngf=4, ndf=4, num_downs=5, d_layers=1)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def family(task="sr", model=None, **loss):
    loss.setdefault("layer_weights", [5.0, 1.5])
    data = DataConfig(task=task, scale=4, patch=32)
    return PANFamily(PANModelConfig(**{**TINY, **(model or {})}), PANLossConfig(**loss), data)


def sr_batch(n=2, size=32, seed=0):
    """Smooth targets (upsampled 8x8 noise) so that the 4x smaller input determines them."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 4, size // 4, generator=g)
    target = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear",
                                             align_corners=False)
    return {"input": torch.nn.functional.avg_pool2d(target, 4), "target": target}


def test_paper_size_parameter_counts():
    torch.manual_seed(0)
    g = UnetGenerator(3, 3, 64, 8, 0.5)
    # pix2pix unet_256 is 54.414 M with batch norm; instance norm (no affine) gives:
    assert n_params(g) == 54409603
    assert n_params(PatchGAN(6, 64, 3)) == 2767809   # conditional (pix2pix: 2.769 M with BN)
    assert n_params(PatchGAN(3, 64, 3)) == 2764737
    d = PANFamily(PANModelConfig(), PANLossConfig(), DataConfig(task="sr", scale=4)).build_discriminator()
    assert (len(d.high), len(d.low)) == (3, 3) and n_params(d) == 16597638
    print(f"pan G {n_params(g):,} D {n_params(d):,}")
    # N(0, 0.02^2) initialisation
    fam = PANFamily(PANModelConfig(**TINY), PANLossConfig(layer_weights=[1.0, 1.0]), None)
    w = torch.cat([m.weight.flatten() for m in fam.build_generator().modules()
                   if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002


def test_pyramid_reconstructs_exactly_and_uses_nearest_down():
    x = torch.rand(2, 3, 40, 36, dtype=torch.float64)
    pyr, highs = laplacian_pyramid(x, 3)
    assert [p.shape[-2:] for p in pyr] == [(40, 36), (20, 18), (10, 9)]
    assert len(highs) == 2
    rebuilt = reconstruct(highs, pyr[-1])
    for a, b in zip(rebuilt, pyr):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    for k in range(2):  # p_k = h_k + u(p_{k+1}) level by level
        torch.testing.assert_close(highs[k] + up(pyr[k + 1], pyr[k].shape[-2:]), pyr[k],
                                   rtol=0, atol=1e-12)
    # d = blur then keep every second pixel; a constant image is a fixed point
    c = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    torch.testing.assert_close(down(c), torch.full((1, 3, 8, 8), 0.3, dtype=torch.float64))
    assert torch.allclose(gaussian_pyramid(c, 3)[2], torch.full((1, 3, 4, 4), 0.3, dtype=torch.float64))


def test_generator_shapes_sr_upsamples_inside():
    fam = family("sr")
    g = fam.build_generator()
    x = torch.rand(2, 3, 8, 8)
    seen = []
    hook = g.model.register_forward_hook(lambda mod, inp, o: seen.append((inp[0], o)))
    out = g(x)
    hook.remove()
    assert out.shape == (2, 3, 32, 32)
    # the U-Net sees the bicubic x4 upsampled input (clamped) in [-1, 1]; its tanh output
    # is mapped back to [0, 1]
    cond = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    unet_in, unet_out = seen[0]
    torch.testing.assert_close(unet_in, cond * 2 - 1, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, (unet_out + 1) / 2, rtol=0, atol=0)
    assert family("inpaint").build_generator()(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="num_downs"):
        family("inpaint").build_generator()(torch.rand(1, 3, 24, 24))


def test_generator_drives_its_loss_down_against_the_discriminators():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    fam = family("sr")
    g, d = fam.build_generator(), fam.build_discriminator()
    batch = sr_batch()
    og = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    l1s = []
    for _ in range(60):
        out = fam.generator_forward(g, batch)
        d.requires_grad_(True)
        ld, _ = fam.discriminator_loss(d, fam.restored(out).detach(), batch)
        od.zero_grad()
        ld.backward()
        od.step()
        d.requires_grad_(False)
        lg, logs = fam.generator_loss(d, out, batch)
        og.zero_grad()
        lg.backward()
        og.step()
        l1s.append(logs["g_pixel"])
    assert {"g_adversarial", "g_adversarial_low", "g_perceptual", "g_pixel"} <= set(logs)
    assert np.mean(l1s[-5:]) < 0.5 * np.mean(l1s[:3]), l1s[::5]


def test_conditional_switch():
    torch.manual_seed(0)
    y, c1, c2 = torch.rand(3, 1, 3, 32, 32)
    d = family("inpaint").build_discriminator()
    assert d.high[0].blocks[0][0].in_channels == 6
    assert not torch.allclose(d(y, c1)["high"][0][0], d(y, c2)["high"][0][0])
    du = family("inpaint", model={"conditional": False}).build_discriminator()
    assert du.high[0].blocks[0][0].in_channels == 3
    torch.testing.assert_close(du(y, c1)["high"][0][0], du(y, c2)["high"][0][0])


def test_high_and_low_ablations_remove_their_terms():
    torch.manual_seed(0)
    batch = sr_batch()
    full = family("sr")
    g = full.build_generator()
    out = full.generator_forward(g, batch)

    no_high = family("sr", adversarial=0.0)
    d = no_high.build_discriminator()
    assert len(d.high) == 3 and len(d.low) == 3   # high Ds still feed the perceptual term
    loss, logs = no_high.generator_loss(d, out, batch)
    assert "g_adversarial" not in logs and "g_adversarial_low" in logs
    assert loss.item() == pytest.approx(5 * logs["g_adversarial_low"] + logs["g_perceptual"] + 100 * logs["g_pixel"], rel=1e-5)

    no_low = family("sr", adversarial_low=0.0)
    d = no_low.build_discriminator()
    assert len(d.low) == 0 and len(d.high) == 3
    loss, logs = no_low.generator_loss(d, out, batch)
    assert "g_adversarial_low" not in logs and "g_adversarial" in logs
    ld, dlogs = no_low.discriminator_loss(d, out.detach(), batch)
    assert not any(k.startswith("d_low") for k in dlogs)

    neither = family("sr", adversarial=0.0, adversarial_low=0.0, perceptual=0.0)
    assert neither.build_discriminator() is None
    loss, logs = neither.generator_loss(None, out, batch)
    assert set(logs) == {"g_pixel"} and loss.item() == pytest.approx(100 * logs["g_pixel"])

    # perceptual on the low discriminators only, and PAN's D-side margin
    fam = family("sr", adversarial=0.0, perceptual_d="low", perceptual_margin=10.0)
    d = fam.build_discriminator()
    assert len(d.high) == 0 and len(d.low) == 3
    _, dlogs = fam.discriminator_loss(d, out.detach(), batch)
    # max(0, m - sum_j w_j mse(f_j(real), f_j(fake))), averaged over the low scales
    with torch.no_grad():
        real_f = d(batch["target"], None, parts=("low",))["low"]
        fake_f = d(out.detach(), None, parts=("low",))["low"]
    dist = np.mean([sum(w * torch.nn.functional.mse_loss(a, b).item() for w, a, b in zip((5.0, 1.5), r[1], f[1]))
                    for r, f in zip(real_f, fake_f)])
    assert 0 < dist < 10  # the margin is active here
    assert dlogs["d_margin"] == pytest.approx(10.0 - dist, rel=1e-6)


@pytest.mark.parametrize("gan_kind", ["vanilla", "lsgan"])
def test_discriminator_loss_is_half_real_plus_fake_per_pyramid(gan_kind):
    """D's loss is sum over the high and low pyramids of 0.5 * (loss on real + loss on fake),
    against a hand computation from D's outputs on each alone; the fake term carries
    gradient to the fake image, and another fake changes the loss."""
    torch.manual_seed(0)
    fam = family("sr", gan_kind=gan_kind)
    d = fam.build_discriminator()
    batch = sr_batch()
    fake = torch.rand_like(batch["target"], requires_grad=True)
    loss, logs = fam.discriminator_loss(d, fake, batch)
    cond = fam.condition(batch)
    with torch.no_grad():
        real_out, fake_out = d(batch["target"], cond), d(fake, cond)

    def per_d(outs, label):  # one PatchGAN per pyramid level: mean over them
        if gan_kind == "vanilla":  # BCE with logits: softplus(-x) for real, softplus(x) for fake
            return np.mean([torch.nn.functional.softplus(-x if label else x).mean().item() for x, _ in outs])
        return np.mean([((x - label) ** 2).mean().item() for x, _ in outs])

    want = 0.0
    for part in ("high", "low"):
        real_l, fake_l = per_d(real_out[part], 1.0), per_d(fake_out[part], 0.0)
        assert logs[f"d_{part}_real"] == pytest.approx(real_l, rel=1e-5)
        assert logs[f"d_{part}_fake"] == pytest.approx(fake_l, rel=1e-5)
        want += 0.5 * (real_l + fake_l)
    assert loss.item() == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0  # D learns from the fake
    other, _ = fam.discriminator_loss(d, torch.zeros_like(fake), batch)
    assert other.item() != pytest.approx(loss.item(), rel=1e-4)


def test_layer_weights_must_match_d_layers():
    with pytest.raises(ConfigError, match="loss.layer_weights"):
        PANFamily(PANModelConfig(d_layers=3), PANLossConfig(layer_weights=[1.0]), None)


def test_tasks_feed_the_generator():
    from raygan.datasets.degradations import get_task

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for task in ("inpaint", "edges", "paired"):
        fam = family(task)
        g = fam.build_generator()
        rec = {"key": "k", "target": img, "input": 255 - img}
        s = get_task(task)(rec, fam.data_cfg, rng, True)
        batch = {k: v.unsqueeze(0) for k, v in s.items()}
        out = fam.generator_forward(g, batch)
        assert out.shape == batch["target"].shape == (1, 3, 32, 32)


def test_configs_load_and_engine_step():
    for t in ("sr", "inpaint", "edges", "paired"):
        for suffix in ("", "_cpu"):
            cfg = load_config(CONFIGS / f"pan_{t}{suffix}.yaml", ["train.perceptual_weights=random"])
            assert cfg.family == "pan" and cfg.data.task == t
            assert cfg.preset == ("paper" if not suffix else f"cpu-pan-{t}")
            assert (cfg.optim.lr_g, cfg.optim.betas) == (2e-4, (0.5, 0.999))
            assert (cfg.loss.adversarial, cfg.loss.adversarial_low, cfg.loss.perceptual, cfg.loss.pixel) == (1, 5, 1, 100)
            assert len(cfg.loss.layer_weights) == cfg.model.d_layers + 1
    assert load_config(CONFIGS / "pan_sr.yaml").data.scale == 4
    cfg = load_config(CONFIGS / "pan_sr_cpu.yaml", [
        "model.ngf=4", "model.ndf=4", "model.num_downs=5", "data.patch=32", "model.d_layers=1",
        "loss.layer_weights=[5.0,1.5]",
        "train.lpips_weights=off", "train.pretrain_steps=0", "train.device=cpu"])
    torch.manual_seed(0)
    eng = GANEngine(cfg)
    for _ in range(2):
        logs = eng.train_step(sr_batch())
    assert {"d_total", "g_adversarial", "g_adversarial_low", "g_perceptual"} <= set(logs)
    assert np.isfinite(logs["g_total"])
    # validation images of any size (a 136 x 151 Set14 photo is not a multiple of 2**5):
    # padded to what the U-Net needs, scored at their own size
    torch.manual_seed(1)
    target = torch.rand(1, 3, 136, 152)  # x4 SR: the input is 34 x 38
    batch = {"input": torch.nn.functional.interpolate(target, scale_factor=0.25, mode="area"), "target": target}
    val = eng.validate([batch])
    assert val["count"] == 1 and np.isfinite(val["metrics"]["psnr"])
    G = eng.eval_generator()
    G.eval()
    with torch.no_grad():
        out = eng.family.restore_any_size(G, batch["input"], 4)
        padded = eng.family.restore_any_size(G, torch.nn.functional.pad(batch["input"], (0, 2, 0, 6), mode="reflect"), 4)
    assert out.shape == target.shape and torch.equal(out, padded[..., :136, :152])


def test_three_levels_of_each_pyramid_by_default_and_the_knob():
    """The paper: three levels for each pyramid, 3 high-frequency and 3 low-frequency Ds."""
    assert PANModelConfig().levels == 3
    cfg = load_config(CONFIGS / "pan_sr.yaml", ["train.perceptual_weights=random"])
    d = PANFamily(cfg.model, cfg.loss, cfg.data).build_discriminator()
    assert (len(d.high), len(d.low)) == (3, 3)
    # the high Ds see h_0, h_1, h_2 (256, 128, 64 px), the low ones p_0, p_1, p_2
    torch.manual_seed(0)
    fam = family("sr")
    d = fam.build_discriminator()
    assert (len(d.high), len(d.low)) == (3, 3)
    sizes = {"high": [], "low": []}
    hooks = [m.register_forward_hook(lambda mod, inp, out, part=part: sizes[part].append(inp[0].shape[-1]))
             for part in ("high", "low") for m in getattr(d, part)]
    y, c = torch.rand(2, 1, 3, 32, 32)
    out = d(y, c)
    for h in hooks:
        h.remove()
    assert sizes == {"high": [32, 16, 8], "low": [32, 16, 8]}
    assert len(out["high"]) == 3 and len(out["low"]) == 3
    # knobs: the former 2 high + 3 low, or any count per pyramid
    d = family("sr", model={"high_levels": 2}).build_discriminator()
    assert (len(d.high), len(d.low)) == (2, 3)
    d = family("sr", model={"levels": 2, "low_levels": 1}).build_discriminator()
    assert (len(d.high), len(d.low)) == (2, 1)
    with pytest.raises(ConfigError, match="model.high_levels"):
        load_config(CONFIGS / "pan_sr.yaml", ["model.high_levels=0"])


@pytest.mark.parametrize("override,key", [("model.dropout=1.5", "model.dropout"), ("model.ngf=0", "model.ngf"),
                                          ("model.d_layers=0", "model.d_layers"),
                                          ("model.in_channels=-1", "model.in_channels")])
def test_bad_model_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(CONFIGS / "pan_sr.yaml", ["train.perceptual_weights=random", override])


def test_pan_recipe_has_no_learning_rate_decay_and_resizes_small_images():
    for t in ("sr", "inpaint", "edges", "paired"):
        cfg = load_config(CONFIGS / f"pan_{t}.yaml", ["train.perceptual_weights=random"])
        assert cfg.optim.lr_gamma == 1.0   # constant learning rate
        assert (cfg.data.small_images, cfg.data.max_skip_fraction) == ("resize", 0.05)
    from raygan.datasets.degradations import get_task

    cfg = load_config(CONFIGS / "pan_inpaint.yaml", ["train.perceptual_weights=random"])
    face = np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8)  # aligned CelebA
    s = get_task("inpaint")({"key": "k", "target": face}, cfg.data, np.random.default_rng(0), True)
    assert s["target"].shape == s["input"].shape == (3, 256, 256) and s["mask"].shape == (1, 256, 256)
