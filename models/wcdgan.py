"""WCDGAN: weakly connected dense GAN for artifact removal of highly compressed JPEGs.

Xie, Zhang, Jung, "WCDGAN: Weakly Connected Dense Generative Adversarial Network for
Artifact Removal of Highly Compressed Images", IEEE Access, 2021.

Generator (``features`` = 64 channels throughout)::

    F0  = LReLU(conv5x5(conv5x5(I)))              shallow features (activation after the 2nd only)
    F1  = WCDB_8(...WCDB_1(F0)) + F0             deep features, residual around all blocks
    out = conv3x3(LReLU(conv3x3(F1)))            reconstruction (activation after the 1st only)
    out = out + I                                only if ``global_residual`` (default: off)

WCDB (weakly connected dense block), input X'::

    X'_k = MC_k(X'_{k-1}), k = 1..4, dilations 1, 2, 4, 8   (a chain, not all-to-all: "weakly")
    Y    = MA(conv1x1([X', X'_1, X'_2, X'_3, X'_4]) + X')

Mixed convolution MC(x) = conv1x1([LReLU(conv3x3(x)), LReLU(conv3x3_dilated(x))]), slope 0.02.
Mixed attention MA = channel attention (GAP -> 1x1 C/r -> LReLU -> 1x1 C/r -> LReLU -> 1x1 C
-> sigmoid, r = 4) followed by spatial attention (1x1 -> 5x5 -> sigmoid), each a
multiplicative gate.

Choices the paper leaves open, and what this file does:

* **Branch width inside a mixed convolution** (``mixed_width``, default 32 = C/2). With each
  branch as wide as the block (64 + 64 concatenated, then a 1x1 "compression" to 64), one
  mixed convolution has 2*(64*64*9+64) + (128*64+64) = 82,112 parameters, a WCDB 352,833 and
  the RGB generator 2,968,651 (+75 %), far from the 1.7 M the paper reports. With 32-channel branches
  (32 + 32 concatenated, 1x1 to 64) a mixed convolution has 2*(64*32*9+32) + (64*64+64) =
  41,088 parameters; a WCDB is 4*41,088 (chain) + 20,544 (1x1 fusion of 5*64 channels)
  + 2,400 (channel attention) + 1,441 (spatial attention) = 188,737; eight WCDBs give
  1,509,896; with shallow features (4,864 + 102,464) and reconstruction (36,928 + 1,731)
  the RGB generator has **1,655,883** parameters, 2.6 % below 1.7 M. We take 32.
* **Spatial attention widths**: the 1x1 conv reduces C -> C/r (16) and the 5x5 conv maps
  C/r -> 1 channel; the single-channel sigmoid map gates all channels (CBAM-like). No
  activation between the two convolutions (none is described).
* **No activation after the 1x1 convolutions** of the mixed convolution and the WCDB fusion
  (the description puts LReLU only after the 3x3 branches), and none at the generator
  output (no tanh/sigmoid/clamp: the target range [0, 1] is learned; metrics clamp).
* **The first mixed convolution** has dilation 1, so its two branches are both plain 3x3
  convolutions (separately parameterised), exactly as the dilation list 1, 2, 4, 8 implies.
* **Global residual**: the paper describes the output as the reconstruction of F1 (the only
  long skip is F1 = f_DF(F0) + F0, in feature space); no skip from the input image to the
  output is described, so ``global_residual`` defaults to False. (The figure itself could
  not be consulted when this file was written: check it and flip the default if it draws
  an input-to-output addition.) On, the output is reconstruction + input.
  ``identity_init`` (with ``global_residual``) zeroes the last reconstruction conv so the
  untrained generator returns its input exactly (see ``raygan.models.blocks``); the CPU
  presets use both, the paper config neither.
* **Padding**: every convolution is stride 1 with "same" zero padding (dilated ones pad by
  their dilation), so any input size works, including odd ones like 37x41.
* **Initialisation**: PyTorch defaults.

Discriminator: 9 convolutions (3x3, each Conv -> ReLU -> BN, except the first which has no
BN, as in SRGAN) and 2 FC layers. Stride/width schedule (stride 2 doubles the width,
SRGAN-like from 64, capped at 512, SRGAN's widest)::

    layer   1    2    3    4    5    6    7    8    9
    stride  1    2    1    2    1    2    1    2    1
    width   64   128  128  256  256  512  512  512  512

Four stride-2 layers reduce an 80x80 paper patch to 5x5. ``AdaptiveAvgPool2d(d_pool=5)``
then makes the FC input size (512*5*5 -> ``d_fc`` = 1024 -> ReLU -> 1) independent of the
patch size: for 80x80 patches it is the identity (the plain flattened SRGAN head); other
sizes (e.g. 32x32 -> 2x2) are resampled to 5x5, unless ``d_pool`` is set to their map size
(patch / 16): the demo presets (32 px patches) set 2, SRGAN's
flattened head, not an FC 6.25x larger over a resampled map. The output is a raw score (no
sigmoid): the least-squares GAN loss acts on it directly.

Schedule (``wcdgan.yaml``): G alone is pretrained for 4 epochs over 80x80 patches cut at
stride 75 from DIV2K's 800 images (``train.epoch_unit: patches``, counted from the
manifest's image sizes: ~390k patches, ~97k iterations at batch 16). The adversarial phase
starts at the paper's learning rates, 2e-4 (G) and 1e-4 (D): the schedules start with it
(``optim.lr_schedule_start: adversarial``, the engine's default), so G's rate stays at 2e-4
through pretraining and both count adversarial iterations only. Ours: the pretraining rate
(2e-4), the decay (x0.5 every 20,000 adversarial iterations) and the adversarial phase's
length (~100k iterations, ``train.steps`` = 200,000 in all). (Before, G's schedule counted
pretraining steps and the adversarial phase started at 2e-4 x 0.5^4 = 1.25e-5.)

Tables (``models/configs``): Table 1 is trained and tested on Y (``wcdgan_y_q5``, ``_q10``,
``_q20``: ``data.channels: 1``, evaluated with protocol ``y``), Table 2 on RGB
(``wcdgan_rgb_q5``, ``_q10``, protocol ``rgb``); ``eval_protocol_by_channels`` makes each
table's protocol the default. The paper reports +1.79 dB PSNR on Y (LIVE1, q10) over the
JPEG input and gives no iteration count.

Losses (``LossConfig``): pretraining uses L1 only; adversarial training uses
``l1 * L1 + perceptual * VGG19(conv5_4, before ReLU, torchvision index 34) + adversarial *
LSGAN + tv * TV``. The perceptual distance criterion (L1 by default) is not pinned down by
the text and is a config switch (``perceptual_criterion``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from raygan.models.base import GANFamily, register_family
from raygan.models.blocks import VGGStyleDiscriminator, zero_init_
from raygan.platform.core.errors import ConfigError
from raygan.platform.core.losses import GAN_KINDS, tv_loss


@dataclass
class ModelConfig:
    features: int = 64          # channels of the generator's feature maps
    blocks: int = 8             # number of WCDBs
    reduction: int = 4          # channel-attention reduction r
    slope: float = 0.02         # LeakyReLU negative slope
    mixed_width: int = 32       # output channels of each branch of a mixed convolution
    dilations: Tuple[int, int, int, int] = (1, 2, 4, 8)  # of the four chained mixed convolutions
    global_residual: bool = False    # add the input image to the output
    identity_init: bool = False      # with global_residual: zero the last conv (G starts as the identity)
    d_features: int = 64        # width of the first discriminator layer
    d_max_features: int = 512   # width cap of the discriminator
    d_pool: int = 5             # adaptive pooling size before the FC layers
    d_fc: int = 1024            # hidden FC width
    #: ablations of the paper (Sec. IV): false replaces each mixed convolution by a standard
    #: 3x3 convolution (features -> features, LReLU), keeping the chain and the dilations out
    mixed_conv: bool = True
    #: false drops the mixed attention (channel + spatial gates) from every WCDB
    mixed_attention: bool = True

    def validate(self) -> None:
        for name in ("features", "blocks", "reduction", "mixed_width", "d_features",
                     "d_max_features", "d_pool", "d_fc"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}: must be > 0, got {getattr(self, name)}")
        if any(d <= 0 for d in self.dilations):
            raise ConfigError(f"model.dilations: must be > 0, got {list(self.dilations)}")
        if self.features % self.reduction:
            raise ConfigError(f"model.reduction: {self.reduction} must divide model.features "
                             f"({self.features})")


@dataclass
class LossConfig:
    pixel: float = 1.0                  # weight of the pixel L1 term (the paper's L1 loss)
    perceptual: float = 1.0             # weight of the VGG19 feature term (needs VGG19 weights)
    adversarial: float = 1.0            # weight of the adversarial term (LSGAN)
    tv: float = 1.0                     # weight of the total-variation term (TV loss)
    gan_kind: str = "lsgan"             # lsgan | vanilla | bce | hinge
    perceptual_layer: int = 34          # torchvision VGG19 features index: conv5_4 (pre-ReLU)
    perceptual_criterion: str = "l1"    # l1 | mse

    def validate(self) -> None:
        if self.gan_kind not in GAN_KINDS:
            raise ConfigError(f"loss.gan_kind: {self.gan_kind!r} is not one of {', '.join(GAN_KINDS)}")
        if self.perceptual_criterion not in ("l1", "mse"):
            raise ConfigError(f"loss.perceptual_criterion: {self.perceptual_criterion!r} is not l1 or mse")
        for name in ("pixel", "perceptual", "adversarial", "tv"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name}: weight must be >= 0, got {getattr(self, name)}")


# ------------------------------------------------------------------------------ generator


class MixedConv(nn.Module):
    """Standard 3x3 and dilated 3x3 convolutions side by side, LReLU each, fused by 1x1."""

    def __init__(self, features: int, width: int, dilation: int, slope: float):
        super().__init__()
        self.conv = nn.Conv2d(features, width, 3, padding=1)
        self.dilated = nn.Conv2d(features, width, 3, padding=dilation, dilation=dilation)
        self.act = nn.LeakyReLU(slope, inplace=True)
        self.fuse = nn.Conv2d(2 * width, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.act(self.conv(x)), self.act(self.dilated(x))], 1))


class MixedAttention(nn.Module):
    """Channel attention, then spatial attention; both multiplicative sigmoid gates."""

    def __init__(self, features: int, reduction: int, slope: float):
        super().__init__()
        hidden = features // reduction
        self.channel = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(features, hidden, 1), nn.LeakyReLU(slope, inplace=True),
            nn.Conv2d(hidden, hidden, 1), nn.LeakyReLU(slope, inplace=True),
            nn.Conv2d(hidden, features, 1), nn.Sigmoid(),
        )
        self.spatial = nn.Sequential(
            nn.Conv2d(features, hidden, 1), nn.Conv2d(hidden, 1, 5, padding=2), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel(x)
        return x * self.spatial(x)


def standard_conv(features: int, slope: float) -> nn.Module:
    """The "without mixed convolution" ablation's unit: one 3x3 convolution and LReLU."""
    return nn.Sequential(nn.Conv2d(features, features, 3, padding=1), nn.LeakyReLU(slope, inplace=True))


class WCDB(nn.Module):
    """Weakly connected dense block: a chain of mixed convolutions, all outputs fused."""

    def __init__(self, features: int, width: int, dilations, reduction: int, slope: float,
                 mixed_conv: bool = True, mixed_attention: bool = True):
        super().__init__()
        self.chain = nn.ModuleList(MixedConv(features, width, d, slope) if mixed_conv
                                   else standard_conv(features, slope) for d in dilations)
        self.fuse = nn.Conv2d(features * (len(dilations) + 1), features, 1)
        self.attention = MixedAttention(features, reduction, slope) if mixed_attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [x]
        for mc in self.chain:
            outs.append(mc(outs[-1]))
        return self.attention(self.fuse(torch.cat(outs, 1)) + x)


class WCDGANGenerator(nn.Module):
    def __init__(self, channels: int = 3, cfg: Optional[ModelConfig] = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        f = cfg.features
        self.global_residual = cfg.global_residual
        self.shallow = nn.Sequential(
            nn.Conv2d(channels, f, 5, padding=2),
            nn.Conv2d(f, f, 5, padding=2), nn.LeakyReLU(cfg.slope, inplace=True),
        )
        self.deep = nn.Sequential(*[
            WCDB(f, cfg.mixed_width, tuple(cfg.dilations), cfg.reduction, cfg.slope,
                 cfg.mixed_conv, cfg.mixed_attention)
            for _ in range(cfg.blocks)
        ])
        self.reconstruct = nn.Sequential(
            nn.Conv2d(f, f, 3, padding=1), nn.LeakyReLU(cfg.slope, inplace=True),
            nn.Conv2d(f, channels, 3, padding=1),
        )

        if cfg.global_residual and cfg.identity_init:
            zero_init_(self.reconstruct[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.shallow(x)
        out = self.reconstruct(self.deep(f0) + f0)
        return out + x if self.global_residual else out


# -------------------------------------------------------------------------- discriminator


def WCDGANDiscriminator(channels: int = 3, cfg: Optional[ModelConfig] = None) -> VGGStyleDiscriminator:
    """9 convolutions, conv -> ReLU -> BN (the first without BN), width doubling at each
    stride-2 layer up to ``d_max_features``; pooled to ``d_pool`` -> ``d_fc`` -> 1."""
    cfg = cfg or ModelConfig()
    stages, width = [], cfg.d_features
    for stride in (1, 2, 1, 2, 1, 2, 1, 2, 1):
        if stride == 2:
            width = min(2 * width, cfg.d_max_features)
        stages.append((width, stride))
    return VGGStyleDiscriminator(channels, stages, slope=0.0, norm_after_act=True,
                                 pool=cfg.d_pool, fc=cfg.d_fc)


# ------------------------------------------------------------------------------- family


@register_family
class WCDGANFamily(GANFamily):
    name = "wcdgan"
    task = "jpeg"
    #: evaluation protocols of the paper's tables (raygan.platform.evaluation.PROTOCOLS):
    #: Table 1, a model trained on Y (data.channels 1: wcdgan_y_q*.yaml): the BT.601 Y image
    #: JPEG-compressed, restored and scored on Y; Table 2, an RGB model (wcdgan_rgb_q*.yaml):
    #: RGB JPEG, PSNR/SSIM on RGB
    eval_protocol = "y"
    eval_protocol_by_channels = {1: "y", 3: "rgb"}
    ModelConfig = ModelConfig
    LossConfig = LossConfig
    default_config = "wcdgan.yaml"
    loss_terms = ("pixel", "perceptual", "adversarial", "tv")
    content_terms = ("pixel",)
    renamed_loss_keys = {"l1": "pixel"}
    search_spaces = {"losses": {  # the paper weighs all four terms 1
        "loss.pixel": {"loguniform": [0.1, 10.0]},
        "loss.perceptual": {"loguniform": [0.1, 10.0]},
        "loss.adversarial": {"loguniform": [0.01, 10.0]},
        "loss.tv": {"loguniform": [0.01, 10.0]},
    }}
    ablations = {
        "WCDGAN (full)": {},
        "w/o mixed convolution (standard conv)": {"model.mixed_conv": False},
        "w/o mixed attention": {"model.mixed_attention": False},
        "w/o perceptual loss and GAN": {"loss.perceptual": 0.0, "loss.adversarial": 0.0},
    }

    def build_generator(self) -> nn.Module:
        return WCDGANGenerator(self.channels, self.model_cfg)

    def build_discriminator(self) -> nn.Module:
        return WCDGANDiscriminator(self.channels, self.model_cfg)

    def perceptual_spec(self):
        lc = self.loss_cfg
        return (lc.perceptual_layer, lc.perceptual_criterion) if lc.perceptual > 0 else None

    def compute_terms(self, D: Optional[nn.Module], out: torch.Tensor, batch, terms) -> Dict[str, torch.Tensor]:
        """L = pixel x L1 + perceptual x VGG19 + adversarial x LSGAN + tv x TV (the paper: all 1);
        pretraining uses the pixel term alone."""
        target, values = batch["target"], {}
        if "pixel" in terms:
            values["pixel"] = F.l1_loss(out.float(), target.float())
        if "perceptual" in terms:
            values["perceptual"] = self.perceptual_distance(out, target)
        if "adversarial" in terms and D is not None:
            values["adversarial"] = self.adversarial_term(D, out)
        if "tv" in terms:
            values["tv"] = tv_loss(out.float())
        return values


__all__ = ["LossConfig", "ModelConfig", "WCDB", "WCDGANDiscriminator", "WCDGANFamily",
           "WCDGANGenerator", "MixedAttention", "MixedConv"]
