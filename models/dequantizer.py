"""DequantizerNet: GAN-based JPEG quality restoration (SRGAN-style generator at 1x).

Geleta, Martin Redondo, "DequantizerNet" (JPEG quality restoration; public reference code
github.com/margaritageleta/dequantizerNet). Task ``jpeg`` at quality 1 and 50 (any q) on
96x96 images.

Generator (``features`` = 64)::

    h   = PReLU(conv9x9(I))                                  first conv, its own PReLU
    y   = RB_R(...RB_1(h)),  RB(x) = x + BN(conv3x3(PReLU_b(BN(conv3x3(x)))))
    y   = BN(conv3x3(y)) + h                                 joined with the first conv
    y   = UP_U(...UP_1(y)),  UP(x) = PReLU_u(PixelShuffle2(conv3x3(x, 4C)))
    out = (tanh(conv9x9(y)) + 1) / 2                         in [0, 1]

R = ``res_blocks`` (5 or 10 in the paper's runs), U = ``upsample_blocks`` (0 for the JPEG task;
U > 0 multiplies the output size by 2**U and works for any input size, so nothing needs
padding to a multiple of 2**U).

Discriminator (SRGAN's, with a global average pool)::

    conv3x3(in, 64) LReLU(0.2)
    [conv3x3 (stride 2 on every second layer) BN LReLU(0.2)] x 7, widths 64,128,128,256,256,512,512
    AdaptiveAvgPool2d(1) -> conv1x1 1024 -> LReLU(0.2) -> conv1x1 1 -> (B, 1) raw logit

Loss: alpha * BCE-with-logits adversarial (non-saturating G) + beta * MSE between VGG19
``features`` index 35 (relu5_4) maps of output and target (ImageNet-normalised inputs), plus
an optional pixel MSE (not in the paper). Keys: ``loss.adversarial`` is the paper's alpha
(1e-3), ``loss.perceptual`` its beta (1; an older raygan's ``loss.content``, translated on
load), ``loss.pixel`` the pixel MSE (default 0 = the paper); the reference ``params.yaml``.
Generator-only pretraining (if configured) uses the perceptual and pixel terms.

Defects of the public reference code that this file does NOT reproduce (tests guard the
model-level ones, see tests/test_dequantizer.py):

* one ``nn.PReLU`` instance shared by every block (a module-level dict of activations):
  here each residual / upsampling block and the first conv own a separate PReLU;
* the upsampling block calls a non-existent ``self.prelu`` (crashes for U > 0): fixed;
* a sigmoid applied to D's output before ``BCEWithLogitsLoss`` (double sigmoid): D here
  returns raw logits and the loss is ``gan_kind: vanilla`` (BCE on logits);
* G's optimizer built over the wrong parameters / saved as D's, overlapping train/test
  splits, and a validation PSNR averaged over the wrong count: engine / data concerns,
  handled there (separate optimizers and checkpoints per network, disjoint shard splits,
  per-image PSNR averaged over images).

``input_skip`` (off in the paper configs, on in the CPU preset): the output is the input
(bicubic-upsampled when U > 0) plus the tail conv's output, without the tanh, and the tail
starts at zero, so the untrained generator is the identity (``raygan.models.blocks``).

Training data (``dequantizer.yaml``): each image is cropped to a square and resized to
96x96 (``data.crop: center_square_resize``), no augmentation, 50 epochs of the paper's 8,000
images at batch 16 (25,000 iterations; ``train.epochs: 50``, resolved from the data).

Evaluation: the paper crops its test images to squares and resizes them to 96x96, as in
training, and reports PSNR on RGB: Alef 14.985, Gimel 16.005, Beta 25.578, Phi 27.651 dB.
The family's default protocol ``rgb-sq96`` does the same (``raygan.platform.evaluation``;
``jobs/evaluate.py`` prints these numbers beside a matching row, ``raygan.models.papers``);
scored at full size, the numbers are not comparable with the paper's.

Left open by the paper, and ours: which square (the centred, largest one), the resampling
filter (bicubic, antialiased when shrinking, PIL). For reference, the public code's
``src/loader.py`` crops the square from ``n/64`` to ``63n/64`` of the top-left ``n x n``
(``n`` the short side) and resizes with PIL's ``ANTIALIAS`` (Lanczos) filter; its test split
is 20 % of its images after an unseeded shuffle, so the paper's exact test images cannot be
recreated.

Choices left open: PReLU has one learned slope per layer (``num_parameters=1``, PyTorch's
default, as in SRGAN); BN everywhere SRGAN has it; PyTorch default initialisation.

Parameter counts (RGB, C = 64, U = 0): generator R = 5: 438,793; R = 10: 809,358
(each residual block 74,113; each upsampling block 147,713). Discriminator: 5,215,425.
The paper gives no counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from raygan.models.base import GANFamily, register_family
from raygan.models.blocks import VGGStyleDiscriminator, skip_base, srgan_stages, zero_init_
from raygan.platform.core.errors import ConfigError

DEQUANTIZER_GAN_KINDS = ("vanilla", "bce", "lsgan", "hinge")


@dataclass
class ModelConfig:
    features: int = 64          # channels of the generator's feature maps
    res_blocks: int = 10        # R (the paper's runs: 5 or 10)
    upsample_blocks: int = 0    # U: x2 sub-pixel blocks (0 for JPEG restoration)
    first_kernel: int = 9       # kernel of the first and last convs (SRGAN: 9)
    d_features: int = 64        # width of the first discriminator layer (doubles to 8x)
    d_fc: int = 1024            # width of the 1x1 "dense" layer of D
    d_slope: float = 0.2        # LeakyReLU slope in D
    #: CPU presets: out = input (bicubic-upsampled when U > 0) + tail(y), no tanh, tail zeroed
    input_skip: bool = False

    def validate(self) -> None:
        for name in ("features", "first_kernel", "d_features", "d_fc"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}: must be > 0, got {getattr(self, name)}")
        for name in ("res_blocks", "upsample_blocks"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name}: must be >= 0, got {getattr(self, name)}")
        if self.first_kernel % 2 == 0:
            raise ConfigError(f"model.first_kernel: must be odd, got {self.first_kernel}")


@dataclass
class LossConfig:
    adversarial: float = 1e-3   # alpha
    perceptual: float = 1.0     # beta: VGG feature MSE
    pixel: float = 0.0          # optional pixel MSE (not in the paper)
    gan_kind: str = "vanilla"   # BCE on logits, as the paper
    vgg_layer: int = 35         # torchvision VGG19 features index (relu5_4)

    def validate(self) -> None:
        if self.gan_kind not in DEQUANTIZER_GAN_KINDS:
            raise ConfigError(f"loss.gan_kind: {self.gan_kind!r} is not one of "
                             f"{', '.join(DEQUANTIZER_GAN_KINDS)}")
        for name in ("adversarial", "perceptual", "pixel"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name}: weight must be >= 0, got {getattr(self, name)}")
        if self.perceptual == 0 and self.pixel == 0:
            raise ConfigError("loss.perceptual and loss.pixel are both 0: the generator has no "
                             "content loss")


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN + x, with its own PReLU (not shared across blocks)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act = nn.PReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    """x2 sub-pixel upsampling: conv to 4C, PixelShuffle(2), its own PReLU."""

    def __init__(self, channels: int, scale: int = 2):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * scale ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shuffle(self.conv(x)))


class DequantizerGenerator(nn.Module):
    def __init__(self, channels: int = 3, cfg: Optional[ModelConfig] = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        c, k = cfg.features, cfg.first_kernel
        self.head = nn.Sequential(nn.Conv2d(channels, c, k, padding=k // 2), nn.PReLU())
        self.res_blocks = nn.Sequential(*[ResidualBlock(c) for _ in range(cfg.res_blocks)])
        self.join = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.upsample = nn.Sequential(*[UpsampleBlock(c) for _ in range(cfg.upsample_blocks)])
        self.tail = nn.Conv2d(c, channels, k, padding=k // 2)
        self.input_skip = cfg.input_skip
        if self.input_skip:
            zero_init_(self.tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        y = self.join(self.res_blocks(h)) + h
        out = self.tail(self.upsample(y))
        if self.input_skip:
            return skip_base(x, out.shape[-2:]) + out
        return (torch.tanh(out) + 1) / 2


def DequantizerDiscriminator(channels: int = 3, cfg: Optional[ModelConfig] = None) -> VGGStyleDiscriminator:
    """SRGAN's D (LeakyReLU ``d_slope``), globally pooled -> ``d_fc`` -> 1 raw logit (the
    paper's dense layers, applied to the pooled features so any crop size works)."""
    cfg = cfg or ModelConfig()
    return VGGStyleDiscriminator(channels, srgan_stages(cfg.d_features), slope=cfg.d_slope,
                                 pool=1, fc=cfg.d_fc)


@register_family
class DequantizerFamily(GANFamily):
    name = "dequantizer"
    task = "jpeg"
    #: evaluation protocol of the paper: its test images are cropped to squares and resized to
    #: 96x96, as in training, then JPEG-compressed in RGB and scored with PSNR on RGB
    #: (Alef 14.985, Gimel 16.005, Beta 25.578, Phi 27.651 dB); see
    #: raygan.platform.evaluation.PROTOCOLS ("rgb-sq96") and raygan.models.papers
    eval_protocol = "rgb-sq96"
    ModelConfig = ModelConfig
    LossConfig = LossConfig
    default_config = "dequantizer.yaml"
    loss_terms = ("perceptual", "pixel", "adversarial")
    content_terms = ("perceptual", "pixel")
    renamed_loss_keys = {"content": "perceptual"}
    search_spaces = {"losses": {
        "loss.adversarial": {"loguniform": [1e-5, 1e-1]},   # alpha, paper 1e-3
        "loss.perceptual": {"loguniform": [0.1, 10.0]},     # beta, paper 1
    }}
    # The paper's runs by name; Phi (q = 50, R = 10) starts from Gimel's weights, which a
    # grid of independent trials cannot do, so its cell trains from scratch.
    ablations = {
        "Alef (R=5, q=1)": {"model.res_blocks": 5, "data.quality": 1},
        "Gimel (R=10, q=1)": {"model.res_blocks": 10, "data.quality": 1},
        "Beta (R=5, q=50)": {"model.res_blocks": 5, "data.quality": 50},
        "R=10, q=50 (Phi from scratch)": {"model.res_blocks": 10, "data.quality": 50},
    }

    def build_generator(self) -> nn.Module:
        return DequantizerGenerator(self.channels, self.model_cfg)

    def build_discriminator(self) -> nn.Module:
        return DequantizerDiscriminator(self.channels, self.model_cfg)

    def perceptual_spec(self):
        return (self.loss_cfg.vgg_layer, "mse") if self.loss_cfg.perceptual > 0 else None

    def compute_terms(self, D: Optional[nn.Module], out: torch.Tensor, batch, terms) -> Dict[str, torch.Tensor]:
        """perceptual: MSE of VGG19 relu5_4 features; pixel: MSE; adversarial: BCE on logits."""
        target, values = batch["target"], {}
        if "perceptual" in terms:
            values["perceptual"] = self.perceptual_distance(out, target)
        if "pixel" in terms:
            values["pixel"] = F.mse_loss(out.float(), target.float())
        if "adversarial" in terms and D is not None:
            values["adversarial"] = self.adversarial_term(D, out)
        return values


__all__ = ["DequantizerDiscriminator", "DequantizerFamily", "DequantizerGenerator", "LossConfig",
           "ModelConfig", "ResidualBlock", "UpsampleBlock"]
