"""DequantizerNet (JPEG quality restoration): model, losses, reference-code defects, configs, API."""

from pathlib import Path

import numpy as np
import pytest
from conftest import ConstD, any_size, fit_content, tiny_family
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from raygan.models.dequantizer import (
    DequantizerDiscriminator, DequantizerFamily, DequantizerGenerator, LossConfig, ModelConfig,
    ResidualBlock, UpsampleBlock,
)
from raygan.platform.core.config import load_config
from raygan.platform.core.registry import FAMILIES

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
TINY = dict(features=8, res_blocks=2, d_features=8, d_fc=16)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())




def family(model=None, loss=None, channels=3):
    return tiny_family(DequantizerFamily, "jpeg", TINY, model, loss, channels)


@any_size
def test_generator_shapes_and_range(channels, size):
    torch.manual_seed(0)
    g = DequantizerGenerator(channels, ModelConfig(**TINY))
    x = torch.rand(2, channels, *size)
    y = g(x)
    assert y.shape == x.shape
    # the documented graph, from the parts: h = head(x); (tanh(tail(join(RBs(h)) + h)) + 1) / 2
    h = g.head(x)
    ref = (torch.tanh(g.tail(g.upsample(g.join(g.res_blocks(h)) + h))) + 1) / 2
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("u", [1, 2])
def test_upsampling_blocks_work(u):
    # reference defect: its upsampling block called a non-existent self.prelu and crashed
    g = DequantizerGenerator(3, ModelConfig(**{**TINY, "upsample_blocks": u}))
    y = g(torch.rand(1, 3, 7, 9))
    assert y.shape == (1, 3, 7 * 2 ** u, 9 * 2 ** u)
    y.mean().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_each_block_has_its_own_prelu():
    # reference defect: one nn.PReLU instance shared by every block
    g = DequantizerGenerator(3, ModelConfig(**{**TINY, "res_blocks": 3, "upsample_blocks": 1}))
    prelus = [m for m in g.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 1 + 3 + 1  # first conv, every residual block, every upsampling block
    assert len({id(m) for m in prelus}) == len(prelus)
    assert len({m.weight.data_ptr() for m in prelus}) == len(prelus)
    with torch.no_grad():
        g.res_blocks[0].act.weight.fill_(0.9)
    assert g.res_blocks[1].act.weight.item() == pytest.approx(0.25)
    assert g.head[1].weight.item() == pytest.approx(0.25)


def test_discriminator_outputs_raw_logits():
    # reference defect: a sigmoid before BCE-with-logits
    d = DequantizerDiscriminator(3, ModelConfig(**TINY))
    assert not any(isinstance(m, nn.Sigmoid) for m in d.modules())
    with torch.no_grad():
        d.head[-1].bias.fill_(5.0)
        d.head[-1].weight.zero_()
    out = d(torch.rand(2, 3, 24, 24))
    assert out.shape == (2, 1)
    torch.testing.assert_close(out, torch.full((2, 1), 5.0))  # not squashed into (0, 1)
    assert DequantizerDiscriminator(1, ModelConfig(**TINY))(torch.rand(3, 1, 13, 17)).shape == (3, 1)


def test_parameter_counts():
    # the paper gives no count; documented values of this implementation (RGB, C = 64, U = 0)
    assert n_params(DequantizerGenerator(3, ModelConfig(res_blocks=5))) == 438_793
    assert n_params(DequantizerGenerator(3, ModelConfig(res_blocks=10))) == 809_358
    assert n_params(ResidualBlock(64)) == 74_113 and n_params(UpsampleBlock(64)) == 147_713
    assert n_params(DequantizerDiscriminator(3)) == 5_215_425


def test_generator_drives_mse_down():
    torch.manual_seed(0)
    fam = family(loss={"perceptual": 0.0, "pixel": 1.0})
    g = fam.build_generator()
    target = torch.rand(4, 3, 16, 16) * 0.8 + 0.1
    batch = {"input": (target + 0.1 * torch.randn_like(target)).clamp(0, 1), "target": target}
    first, last, logs = fit_content(fam, g, batch, lr=2e-3)
    assert "g_perceptual" not in logs and fam.perceptual is None
    assert last < 0.5 * first


def test_losses_exact_bce_on_logits():
    fam = family(loss={"vgg_layer": 3})
    out, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    batch = {"input": out, "target": target}
    c = 0.3
    d_loss, _ = fam.discriminator_loss(ConstD(c), out, batch)
    assert d_loss.item() == pytest.approx(F.softplus(torch.tensor(-c)).item()
                                          + F.softplus(torch.tensor(c)).item(), rel=1e-6)
    g_loss, logs = fam.generator_loss(ConstD(c), out, batch)
    vgg = fam.perceptual(out, target).item()
    assert fam.perceptual.layer == 3 and logs["g_perceptual"] == pytest.approx(vgg)
    assert g_loss.item() == pytest.approx(vgg + 1e-3 * F.softplus(torch.tensor(-c)).item(), rel=1e-5)
    # no D (e.g. generator-only): no adversarial term
    assert "g_adversarial" not in fam.generator_loss(None, out, batch)[1]


def test_losses_backprop_with_real_discriminator():
    torch.manual_seed(0)
    fam = family(loss={"vgg_layer": 3})
    g, d = fam.build_generator(), fam.build_discriminator()
    batch = {"input": torch.rand(2, 3, 16, 16), "target": torch.rand(2, 3, 16, 16)}
    out = fam.generator_forward(g, batch)
    d_loss, _ = fam.discriminator_loss(d, out.detach(), batch)
    d_loss.backward()
    g_loss, _ = fam.generator_loss(d, out, batch)
    g_loss.backward()
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert all(p.grad is not None for p in g.parameters())


def test_config_validation():
    with pytest.raises(ValueError, match="loss.gan_kind"):
        LossConfig(gan_kind="wgan").validate()
    with pytest.raises(ValueError, match="model.res_blocks"):
        ModelConfig(res_blocks=-1).validate()


RUNS = {"alef": (1, 5), "beta": (50, 5), "gimel": (1, 10), "phi": (50, 10)}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_named_run_configs(run):
    assert FAMILIES.get("dequantizer") is DequantizerFamily
    cfg = load_config(CONFIGS / f"dequantizer_{run}.yaml", ["train.perceptual_weights=random"])
    q, r = RUNS[run]
    assert cfg.family == "dequantizer" and cfg.data.task == "jpeg"
    assert (cfg.data.quality, cfg.model.res_blocks) == (q, r)
    assert cfg.data.patch == 96 and cfg.data.batch == 16 and cfg.model.upsample_blocks == 0
    assert cfg.optim.optimizer == "adam" and cfg.optim.lr_g == 1e-4 and cfg.optim.betas == (0.9, 0.999)
    assert cfg.loss.gan_kind == "vanilla" and cfg.loss.vgg_layer == 35
    assert cfg.preset == f"paper-{run}" and cfg.mlflow.registered_model == f"raygan-dequantizer-{run}"
    # the paper: squares resized to 96x96, no augmentation, 50 epochs (25k its for 8,000 images)
    assert (cfg.data.crop, cfg.data.augment) == ("center_square_resize", False)
    assert (cfg.train.epochs, cfg.train.epoch_unit) == (50, "images")
    if run == "phi":
        assert cfg.train.init_from == "models:/raygan-dequantizer-gimel/latest"
    else:
        assert cfg.train.init_from is None


def test_default_and_cpu_configs():
    base = load_config(None, ["train.perceptual_weights=random"], family="dequantizer")
    assert base.family == "dequantizer" and base.preset == "paper"
    cpu = load_config(CONFIGS / "dequantizer_cpu.yaml", ["train.perceptual_weights=random"])
    # the documented preset: random 32 px crops (not the paper's 96), R = 5, pixel MSE only
    assert (cpu.preset, cpu.data.patch, cpu.model.res_blocks) == ("cpu-small", 32, 5)
    assert (cpu.loss.perceptual, cpu.loss.pixel) == (0.0, 1.0)
    assert (cpu.data.crop, cpu.data.augment, cpu.train.epochs) == ("random", True, None)


def test_training_images_are_square_cropped_and_resized_to_96():
    from raygan.datasets.degradations import get_task

    cfg = load_config(CONFIGS / "dequantizer.yaml", ["train.perceptual_weights=random"])
    # a 150x300 photo: the centred 150x150 square resized to 96x96; left/right quarters black
    img = np.zeros((150, 300, 3), np.uint8)
    img[:, 75:225] = 200
    for seed in range(3):
        s = get_task("jpeg")({"key": "k", "target": img}, cfg.data, np.random.default_rng(seed), True)
        assert s["target"].shape == (3, 96, 96)
        assert torch.allclose(s["target"], torch.full_like(s["target"], 200 / 255))


# ------------------------------------------------------------------------ deploy API


def _image(h=24, w=20, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, h * w * 3).reshape(h, w, 3)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


class Passthrough(nn.Module):
    def __init__(self, channels=3):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        nn.init.dirac_(self.conv.weight)

    def forward(self, x):
        return self.conv(x)


def test_quantize_matches_training_degradation():
    from raygan.datasets.degradations import jpeg
    from raygan.deploy.dequantize import quantize

    arr = _image()
    out = quantize(arr, 10)
    assert out.dtype == np.uint8 and out.shape == arr.shape
    np.testing.assert_array_equal(out, jpeg(arr, 10))
    assert np.abs(quantize(arr, 1).astype(int) - arr).mean() > np.abs(out.astype(int) - arr).mean()
    pil = quantize(Image.fromarray(arr), 10)
    assert isinstance(pil, Image.Image) and pil.mode == "RGB" and pil.size == (20, 24)
    gray = quantize(Image.fromarray(arr[..., 0]), 50)
    assert gray.mode == "L"
    with pytest.raises(ValueError, match="quality"):
        quantize(arr, 0)


def test_dequantize_with_module():
    from raygan.deploy.dequantize import dequantize, quantize

    low = quantize(_image(13, 17), 5)
    out = dequantize(low, Passthrough())
    np.testing.assert_array_equal(out, low)  # identity model: exactly the input back
    pil = dequantize(Image.fromarray(low), Passthrough())
    assert isinstance(pil, Image.Image) and pil.size == (17, 13)
    g = DequantizerGenerator(3, ModelConfig(**TINY))
    g.train()
    y = dequantize(low, g)
    assert y.shape == low.shape and y.dtype == np.uint8 and g.training  # mode restored
    up = dequantize(low, DequantizerGenerator(3, ModelConfig(**{**TINY, "upsample_blocks": 1})))
    assert up.shape == (26, 34, 3)
    with pytest.raises(ValueError, match="channel"):
        dequantize(low[..., 0], g)


def test_engine_step_checkpoint_and_dequantize_by_uri(tmp_path):
    from raygan.deploy.dequantize import dequantize, quantize
    from raygan.platform.checkpoint import save_checkpoint
    from raygan.platform.core.config import to_dict
    from raygan.platform.engine import GANEngine

    cfg = load_config(CONFIGS / "dequantizer_cpu.yaml", [
        "train.perceptual_weights=random", "train.device=cpu", "model.features=8",
        "model.res_blocks=1", "model.d_features=8", "model.d_fc=16", "data.patch=16",
        "loss.vgg_layer=3", "loss.perceptual=1.0", "train.pretrain_steps=0",
    ])
    engine = GANEngine(cfg)
    target = torch.rand(2, 3, 16, 16)
    batch = {"input": target, "target": target}
    logs = engine.train_step(batch)
    assert {"g_perceptual", "g_adversarial", "d_real", "d_fake"} <= set(logs)
    ckpt = save_checkpoint(tmp_path / "checkpoint_000001", engine, {"config": to_dict(cfg)})
    low = quantize(_image(), 10)
    by_uri = dequantize(low, str(ckpt))
    engine.generator.eval()
    direct = dequantize(low, engine.generator)
    assert by_uri.shape == low.shape
    np.testing.assert_allclose(by_uri.astype(int), direct.astype(int), atol=1)
