"""WCDGAN: architecture (shapes, parameter count), losses, config, and a tiny fit."""

from pathlib import Path

import pytest
import torch

from raygan.platform.core.config import ConfigError, load_config
from raygan.platform.core.registry import FAMILIES
from raygan.models.wcdgan import (
    LossConfig, MixedAttention, MixedConv, ModelConfig, WCDB, WCDGANDiscriminator, WCDGANFamily, WCDGANGenerator,
)

ROOT = Path(__file__).resolve().parent.parent


def _count(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_count_matches_paper():
    n = _count(WCDGANGenerator(3))
    assert abs(n - 1.7e6) <= 0.1 * 1.7e6, n
    assert n == 1_655_883  # the arithmetic documented in the module docstring
    assert _count(MixedConv(64, 32, 2, 0.02)) == 41_088
    assert _count(WCDB(64, 32, (1, 2, 4, 8), 4, 0.02)) == 188_737
    # full-width branches would land far outside the paper's figure (+75 %, docstring arithmetic)
    assert _count(WCDGANGenerator(3, ModelConfig(mixed_width=64))) == 2_968_651


def test_ablation_switches_change_the_blocks():
    # without mixed convolution: 4 standard 3x3 convs (64*64*9+64) replace the mixed ones
    assert _count(WCDB(64, 32, (1, 2, 4, 8), 4, 0.02, mixed_conv=False)) == 4 * 36_928 + 20_544 + 2_400 + 1_441
    # without mixed attention: the channel (2,400) and spatial (1,441) gates are gone
    assert _count(WCDB(64, 32, (1, 2, 4, 8), 4, 0.02, mixed_attention=False)) == 188_737 - 2_400 - 1_441
    g = WCDGANGenerator(3, ModelConfig(features=16, blocks=1, mixed_conv=False, mixed_attention=False))
    assert not any(isinstance(m, (MixedConv, MixedAttention)) for m in g.modules())
    assert all(m.dilation == (1, 1) for m in g.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("channels,h,w", [(3, 32, 32), (1, 32, 32), (3, 37, 41), (1, 37, 41)])
def test_generator_shapes(channels, h, w):
    torch.manual_seed(0)
    g = WCDGANGenerator(channels, ModelConfig(features=16, blocks=2)).eval()
    x = torch.rand(2, channels, h, w)
    with torch.no_grad():
        y = g(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_global_residual_switch():
    torch.manual_seed(0)
    cfg = ModelConfig(features=8, blocks=1, global_residual=True)
    g = WCDGANGenerator(3, cfg).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.nn.init.zeros_(g.reconstruct[-1].weight)
        torch.nn.init.zeros_(g.reconstruct[-1].bias)
        assert torch.allclose(g(x), x)  # residual on: a zero reconstruction returns the input
        g.global_residual = False
        assert torch.count_nonzero(g(x)) == 0


@pytest.mark.parametrize("patch", [80, 32])
def test_discriminator_patch_sizes(patch):
    torch.manual_seed(0)
    d = WCDGANDiscriminator(3)
    convs = [m for m in d.features if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in d.head if isinstance(m, torch.nn.Linear)]
    assert len(convs) == 9 and len(fcs) == 2
    assert [c.stride[0] for c in convs] == [1, 2, 1, 2, 1, 2, 1, 2, 1]
    assert [c.out_channels for c in convs] == [64, 128, 128, 256, 256, 512, 512, 512, 512]
    out = d(torch.rand(2, 3, patch, patch))
    assert out.shape == (2, 1)
    out.sum().backward()
    assert d.head[1].weight.grad is not None


def test_discriminator_gray():
    d = WCDGANDiscriminator(1, ModelConfig(d_features=8, d_max_features=32, d_fc=16))
    assert d(torch.rand(2, 1, 32, 32)).shape == (2, 1)


def test_family_registered_and_config_loads():
    assert FAMILIES.get("wcdgan") is WCDGANFamily
    cfg = load_config(ROOT / "models" / "configs" / "wcdgan.yaml", ["train.perceptual_weights=random"])
    assert cfg.family == "wcdgan" and cfg.data.task == "jpeg" and cfg.data.quality == 10
    assert cfg.data.patch == 80 and cfg.data.batch == 16 and cfg.data.channels == 3
    assert cfg.optim.betas == (0.5, 0.999) and cfg.optim.lr_g == 2e-4 and cfg.optim.lr_d == 1e-4
    assert cfg.train.pretrain_epochs == 4 and cfg.train.perceptual_weights == "random"
    assert cfg.model == ModelConfig() and cfg.loss == LossConfig()
    with pytest.raises(ConfigError, match="loss.gan_kind"):
        load_config(ROOT / "models" / "configs" / "wcdgan.yaml", ["loss.gan_kind=wgan"])
    with pytest.raises(ConfigError, match="model.reduction"):
        load_config(ROOT / "models" / "configs" / "wcdgan.yaml", ["model.reduction=5"])


def _family(channels=3, **loss):
    data = type("Data", (), {"channels": channels})()
    fam = WCDGANFamily(ModelConfig(features=16, blocks=2, d_features=8, d_max_features=32, d_fc=16),
                       LossConfig(perceptual_layer=8, **loss), data)
    fam.perceptual_weights = "random"
    fam.setup(torch.device("cpu"))
    return fam


def test_losses_and_logs():
    torch.manual_seed(0)
    fam = _family()
    assert fam.perceptual is not None and fam.perceptual_init == fam.perceptual.init == "random"
    G, D = fam.build_generator(), fam.build_discriminator()
    batch = {"input": torch.rand(2, 3, 32, 32), "target": torch.rand(2, 3, 32, 32)}
    out = fam.generator_forward(G, batch)

    target = batch["target"]
    l1 = (out - target).abs().mean().item()
    loss, logs = fam.content_loss(out, batch)
    assert set(logs) == {"g_pixel"}
    assert logs["g_pixel"] == pytest.approx(l1, rel=1e-6)
    assert loss.item() == pytest.approx(l1, rel=1e-6)

    loss, logs = fam.generator_loss(D, out, batch)
    assert {"g_pixel", "g_perceptual", "g_adversarial", "g_tv"} <= set(logs)
    # every logged term computed independently: L1; VGG19 features[:9] L1 (a fresh network of
    # the same fixed-seed random weights); LSGAN generator mean((D(G) - 1)^2); anisotropic TV
    from raygan.platform.core.losses import PerceptualLoss

    with torch.no_grad():
        vgg = PerceptualLoss(layer=8, weights="random", criterion="l1")(out, target).item()
        adv = ((D(out) - 1) ** 2).mean().item()
    tv = ((out[:, :, 1:] - out[:, :, :-1]).abs().mean() + (out[..., 1:] - out[..., :-1]).abs().mean()).item()
    assert (logs["g_pixel"], logs["g_perceptual"], logs["g_adversarial"], logs["g_tv"]) == pytest.approx((l1, vgg, adv, tv), rel=1e-5)
    assert loss.item() == pytest.approx(l1 + vgg + adv + tv, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in G.parameters())

    _, logs = fam.generator_loss(None, out.detach(), batch)  # D switched off: no adversarial term
    assert "g_adversarial" not in logs

    d_loss, d_logs = fam.discriminator_loss(D, fam.restored(out).detach(), batch)
    assert {"d_real", "d_fake"} <= set(d_logs)
    with torch.no_grad():  # LSGAN: real logits towards 1, fake ones towards 0
        d_real, d_fake = ((D(target) - 1) ** 2).mean().item(), (D(out) ** 2).mean().item()
    assert (d_logs["d_real"], d_logs["d_fake"]) == pytest.approx((d_real, d_fake), rel=1e-5)
    assert d_loss.item() == pytest.approx(d_real + d_fake, rel=1e-5)
    d_loss.backward()
    assert D.head[-1].weight.grad is not None


def test_perceptual_off_and_missing_weights(tmp_path, monkeypatch):
    fam = _family(perceptual=0.0)
    assert fam.perceptual is None and fam.perceptual_init == "unused"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fam = WCDGANFamily(ModelConfig(), LossConfig(), None)
    assert fam.perceptual_weights == "auto" and fam.channels == 3
    with pytest.raises(FileNotFoundError, match="vgg19-dcbbe1a2.pth"):
        fam.setup(torch.device("cpu"))


def test_generator_fits_tiny_batch():
    """The WCDGAN generator drives its content loss down on a tiny fixed batch."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    fam = WCDGANFamily(ModelConfig(features=16, blocks=2), LossConfig(perceptual=0.0), None)
    G = fam.build_generator()
    target = torch.rand(2, 3, 24, 24)
    batch = {"input": (target + 0.1 * torch.randn_like(target)).clamp(0, 1), "target": target}
    opt = torch.optim.Adam(G.parameters(), lr=5e-3)
    with torch.no_grad():
        before = fam.content_loss(fam.generator_forward(G, batch), batch)[0].item()
    for _ in range(60):
        loss, _ = fam.content_loss(fam.generator_forward(G, batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = fam.content_loss(fam.generator_forward(G, batch), batch)[0].item()
    assert after < 0.5 * before, (before, after)
