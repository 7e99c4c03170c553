"""DAGAN: deep attentive GAN for photo-realistic image de-quantization (bit-depth recovery).

Zhang, Hu, Lu, "Deep Attentive Generative Adversarial Network for Photo-Realistic Image
De-Quantization", arXiv:2004.03150, 2020. Task ``bitdepth``: 8-bit targets, inputs quantized
to k bits (the paper: k = 4 and 6) and re-expanded to 8 bits (ZP / MIG / BR).

Generator (``features`` = C = 64)::

    F_up  = upscale(I)                       3 conv blocks, channels in -> C/4 -> C/2 -> C
    F_b   = DRA_M(...DRA_1(F_up))            M = ``modules`` (4) DenseResAtt modules in series
    F     = F_b + F_up                       long skip around the whole chain
    R     = recon(downscale(F))              4 conv blocks C -> C -> C/2 -> C/4 -> C/4, then
                                             conv, sub-pixel conv (x2), 2x2 max pooling
    out   = I + R                            long skip from the input image

DenseResAtt module (input X, G = ``groups`` = 4 ResAtt groups)::

    I_1 = X,   I_2 = H_1,   I_i = conv1x1([H_1, ..., H_{i-1}])  (i >= 3; iC -> C channels)
    H_i = delta_i(phi_i(I_i) + I_i)          phi: residual branch conv3x3-ReLU-conv3x3,
                                             delta: self-attention block
    Y   = conv1x1([H_1, ..., H_G]) + X       local fusion + long skip around the module

Self-attention (SAGAN / non-local): 1x1 convs to C/8 for query and key and a 1x1 value conv
(C -> C); attention = softmax over positions of q.k (unscaled, as in SAGAN); y = sigma*o + x
with the learned scalar sigma initialised to 0. It runs through
``F.scaled_dot_product_attention`` so that flash / memory-efficient kernels avoid
materialising the N x N attention matrix (N = H*W: 4096 on a 64x64 patch); on the CPU, q and
k are zero-padded to the value's width so that SDPA's flash kernel applies (same dot
products; without it the math fallback holds the N x N matrix: a 256 px tile needs 17 GB).

Choices the paper leaves open, and what this file does:

* **"Upscale" / "downscale" modules** are read as raising / lowering the *channel* width (the
  spatial size is untouched until the reconstruction): upscale in -> C/4 -> C/2 -> C,
  downscale C -> C -> C/2 -> C/4 -> C/4 (3x3 convs, ReLU after each, widths floored at 4).
* **Reconstruction**: conv3x3 (C/4 -> C/4) + ReLU, sub-pixel conv (conv3x3 to 4*out channels,
  PixelShuffle(2): 2H x 2W), MaxPool2d(2) back to H x W. No activation at the end.
* **identity_init** (off in the paper config, on in the CPU preset): the sub-pixel conv
  starts at zero, so the untrained G returns its expanded input exactly (with
  ``data.expand: mig`` that is the MIG baseline) and training starts from there.
* **Long skips** (our reading of the figure): one around each DenseResAtt module, one from
  the upscale output to the end of the DenseResAtt chain, and one from the input image to the
  output (the network predicts the residual of the expanded k-bit input).
* **Dense connectivity**: the brief's I_i = [H_1..H_{i-1}] (the module input X reaches the
  groups through H_1 and the module skip); the concatenation is brought back to C channels
  with a 1x1 conv (none needed for i = 2, whose input is H_1 alone); the module output
  fuses all G group outputs with a 1x1 conv (RDN-style local feature fusion).
* **No batch norm in G** (EDSR/ESRGAN practice for restoration); ReLU activations.
* **Output range**: in training mode G returns ``I + R`` unclamped (so the content loss keeps
  its gradients everywhere); in eval mode it clamps to [0, 1].
* Any H x W works (odd sizes too): all convs are stride 1, "same" padding, and the x2
  sub-pixel conv is undone exactly by the 2x2 max pooling.

Discriminator (VGG-like, SRGAN's layout, width doubling 64 -> 512)::

    conv3x3(in, 64) LReLU, conv3x3 s2 (64) BN LReLU,
    [conv3x3 (w) BN LReLU, conv3x3 s2 (w) BN LReLU] for w = 128, 256, 512
    self-attention after the 128 and 256 stages (SAGAN places it on mid-level maps)
    AdaptiveAvgPool2d(patch/16) -> flatten -> dense 1024 -> LReLU(0.2) -> dense 1 (raw logit)

The adaptive pool is the identity at the training patch (64 -> 4x4), so the head is SRGAN's
dense layer on flattened features, yet D still accepts other sizes.

Loss: G = beta*MSE + (1-beta)*MSE(VGG19 relu5_4 features) + 1e-2*adversarial, beta = 0.5:
``loss.pixel`` is the paper's beta (the MSE's weight), ``loss.perceptual`` its 1 - beta (the
VGG term's), ``loss.adversarial`` the 1e-2. A config of an older raygan (``loss.content``
mse | vgg | both with ``loss.beta``) is translated on load: mse -> pixel 1, perceptual 0;
vgg -> 0, 1; both -> beta, 1 - beta.
The paper writes the log loss (Eq. 16-17) but trains with the hinge version: ``gan_kind``
"hinge" (default) or "vanilla" (BCE on logits, non-saturating for G). Generator-only
pretraining (if configured) uses the same content term.

Schedule (``dagan.yaml``). The paper: 80 epochs on DIV2K's 800 training images with 64x64
patches, about 2 hours per epoch on a Titan X, lr 1e-4 divided by 10 every 10 epochs. An
epoch counts 64x64 patches (``train.epoch_unit: patches``; stride 64, non-overlapping, is our
reading, the paper gives none), from the manifest's image sizes at run start: ~520,800
patches, 32,550 iterations per epoch at batch 16 on one worker, ~2.6 M iterations in all and
a decay every ~325,500. The 2-hour check is in ``dagan.yaml``: one crop per image per epoch
(50 iterations) could not take 2 hours. No generator-only phase (G and D train jointly from
the first step).

Evaluation (``eval_tile``): the paper scores whole images; self-attention over a whole photo
costs time and memory in (H*W)^2, so ``jobs/evaluate.py`` restores 64x64 tiles overlapping by
16 px (our choice: the paper's training patch, so attention spans what it spanned in training)
and blends them (``raygan.platform.core.tiling``); the table header says so. Measured on the
CPU preset's generator, one thread: 0.29 s per 64 px tile, 1.35 s per 96 px tile; whole Set5
+ Set14 (4.4 Mpx) in 64 px tiles takes minutes, in 256 px tiles over an hour.

Ablations: ``model.self_attention: false`` (DAGAN*, no attention in G or D),
``model.discriminator: false`` or ``loss.adversarial: 0`` (DA-net: no D at all),
the content term MSE only (``loss.perceptual: 0``), VGG only (``loss.pixel: 0``) or both,
``model.modules`` (number of DenseResAtt modules).

Parameter counts (RGB, defaults C = 64, 4 modules x 4 groups; see tests/test_dagan.py):
generator 1,503,116 (1,419,900 without self-attention: 16 attention blocks of 5,201 each);
discriminator at a 64x64 patch 13,182,627 (13,079,745 without attention; 8,389,632 of it is
the SRGAN dense layer 8192 -> 1024). The paper gives no count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from raygan.models.base import GANFamily, register_family
from raygan.models.blocks import VGGStyleDiscriminator, srgan_stages, zero_init_
from raygan.platform.core.errors import ConfigError

#: an older raygan's loss.content modes -> (loss.pixel, loss.perceptual), beta = loss.beta
CONTENT_KINDS = {"mse": lambda beta: (1.0, 0.0), "vgg": lambda beta: (0.0, 1.0),
                 "both": lambda beta: (beta, 1.0 - beta)}
DAGAN_GAN_KINDS = ("hinge", "vanilla")


@dataclass
class ModelConfig:
    features: int = 64            # C: channels inside the DenseResAtt modules
    modules: int = 4              # DenseResAtt modules in series (paper: 4)
    groups: int = 4               # ResAtt groups per module (paper: 4)
    self_attention: bool = True   # false: DAGAN* (no self-attention in G nor D)
    attention_reduction: int = 8  # query/key width C/8
    discriminator: bool = True    # false: DA-net (no discriminator)
    d_features: int = 64          # width of the first D layer (doubles to 8x)
    d_pool: int = 0               # pooled map size before the dense head (0: data.patch // 16)
    d_fc: int = 1024              # SRGAN dense layer width
    d_slope: float = 0.2          # LeakyReLU slope in D
    identity_init: bool = False   # zero the last G conv: the untrained G returns its input

    def validate(self) -> None:
        for name in ("features", "groups", "attention_reduction", "d_features", "d_fc"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name}: must be > 0, got {getattr(self, name)}")
        if self.modules < 0:
            raise ConfigError(f"model.modules: must be >= 0, got {self.modules}")
        if self.d_pool < 0:
            raise ConfigError(f"model.d_pool: must be >= 0 (0: patch // 16), got {self.d_pool}")


@dataclass
class LossConfig:
    pixel: float = 0.5            # beta: weight of the pixel MSE
    perceptual: float = 0.5       # 1 - beta: weight of the VGG19 relu5_4 feature MSE
    adversarial: float = 1e-2     # weight of the adversarial term (0: DA-net, no D)
    gan_kind: str = "hinge"       # hinge (used by the paper) | vanilla (its Eq. 16-17)
    vgg_layer: int = 35           # torchvision VGG19 features index: relu5_4 (SRGAN "VGG54")

    def validate(self) -> None:
        if self.gan_kind not in DAGAN_GAN_KINDS:
            raise ConfigError(f"loss.gan_kind: {self.gan_kind!r} is not one of "
                             f"{', '.join(DAGAN_GAN_KINDS)}")
        for name in ("pixel", "perceptual", "adversarial"):
            if getattr(self, name) < 0:
                raise ConfigError(f"loss.{name}: weight must be >= 0, got {getattr(self, name)}")
        if self.pixel == 0 and self.perceptual == 0:
            raise ConfigError("loss.pixel and loss.perceptual are both 0: the generator has no content loss")


# ------------------------------------------------------------------------- building blocks


class SelfAttention(nn.Module):
    """SAGAN self-attention: y = sigma * softmax(q k^T) v + x, sigma learned, starts at 0."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.sigma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C/8)
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, N, C)
        if x.device.type == "cpu":
            # The CPU flash kernel wants one width for q, k and v (else SDPA falls back to the
            # math path, which holds the N x N matrix); zero columns leave q.k unchanged.
            # Measured: 2.3x faster forward+backward at N = 1024, 4.4x forward at N = 9216.
            # (the kernel also wants the last dimension contiguous)
            q, k = F.pad(q, (0, c - q.shape[-1])), F.pad(k, (0, c - k.shape[-1]))
            v = v.contiguous()
        # scale=1: SAGAN's unscaled dot products; the flash kernels never build the N x N matrix
        o = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        o = o.squeeze(1).transpose(1, 2).reshape(b, c, h, w)
        return x + self.sigma.to(o.dtype) * o


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResAttGroup(nn.Module):
    """H = delta(phi(I) + I): a residual block followed by a self-attention block."""

    def __init__(self, channels: int, attention: bool, reduction: int):
        super().__init__()
        self.phi = nn.Sequential(_conv(channels, channels), nn.ReLU(inplace=True),
                                 _conv(channels, channels))
        self.delta = SelfAttention(channels, reduction) if attention else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.delta(self.phi(x) + x)


class DenseResAtt(nn.Module):
    """Dense residual self-attention module: densely connected ResAtt groups + long skip."""

    def __init__(self, channels: int, groups: int = 4, attention: bool = True, reduction: int = 8):
        super().__init__()
        self.groups = nn.ModuleList(ResAttGroup(channels, attention, reduction) for _ in range(groups))
        # group i (0-based) >= 2 sees [H_1..H_i] (i*C channels): 1x1 conv back to C
        self.reduce = nn.ModuleList(
            nn.Conv2d(i * channels, channels, 1) if i >= 2 else nn.Identity() for i in range(groups)
        )
        self.fuse = nn.Conv2d(groups * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i, (group, reduce) in enumerate(zip(self.groups, self.reduce)):
            inp = x if i == 0 else (outs[0] if i == 1 else reduce(torch.cat(outs, 1)))
            outs.append(group(inp))
        return self.fuse(torch.cat(outs, 1)) + x


def _width(c: int) -> int:
    return max(4, c)


class DAGANGenerator(nn.Module):
    def __init__(self, channels: int = 3, cfg: Optional[ModelConfig] = None):
        super().__init__()
        cfg = cfg or ModelConfig()
        c = cfg.features
        up = [channels, _width(c // 4), _width(c // 2), c]
        self.upscale = nn.Sequential(*[m for a, b in zip(up, up[1:])
                                       for m in (_conv(a, b), nn.ReLU(inplace=True))])
        self.body = nn.Sequential(*[
            DenseResAtt(c, cfg.groups, cfg.self_attention, cfg.attention_reduction)
            for _ in range(cfg.modules)
        ])
        down = [c, c, _width(c // 2), _width(c // 4), _width(c // 4)]
        self.downscale = nn.Sequential(*[m for a, b in zip(down, down[1:])
                                         for m in (_conv(a, b), nn.ReLU(inplace=True))])
        r = down[-1]
        self.reconstruct = nn.Sequential(
            _conv(r, r), nn.ReLU(inplace=True),
            _conv(r, channels * 4), nn.PixelShuffle(2),  # sub-pixel conv: 2H x 2W
            nn.MaxPool2d(2),                            # back to H x W
        )
        if cfg.identity_init:
            zero_init_(self.reconstruct[2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.upscale(x)
        if len(self.body):
            f = self.body(f) + f
        out = x + self.reconstruct(self.downscale(f))
        return out if self.training else out.clamp(0, 1)


def DAGANDiscriminator(channels: int = 3, cfg: Optional[ModelConfig] = None,
                       patch: int = 64) -> VGGStyleDiscriminator:
    """SRGAN's D (LeakyReLU ``d_slope``) with self-attention after the 128- and 256-wide
    stride-2 layers (unless DAGAN*); pooled to ``d_pool`` (0: patch // 16) -> ``d_fc`` -> 1."""
    cfg = cfg or ModelConfig()
    after = ({i: (lambda w: SelfAttention(w, cfg.attention_reduction)) for i in (3, 5)}
             if cfg.self_attention else None)
    return VGGStyleDiscriminator(channels, srgan_stages(cfg.d_features), slope=cfg.d_slope,
                                 pool=cfg.d_pool or max(1, patch // 16), fc=cfg.d_fc, after=after)


# --------------------------------------------------------------------------------- family


@register_family
class DAGANFamily(GANFamily):
    name = "dagan"
    task = "bitdepth"
    #: evaluation protocol of the paper: RGB quantized and restored, PSNR/SSIM on Y;
    #: see raygan.platform.evaluation.PROTOCOLS
    eval_protocol = "rgb-y"
    #: the paper scores whole images; self-attention over a whole 481x321 photo (154k
    #: positions) does not fit in memory, so evaluation restores 256x256 tiles overlapping by
    #: 32 px, blended (raygan.platform.core.tiling). Tile and overlap are our choice (the paper
    #: gives none); the table header records them. jobs/evaluate.py --tile/--overlap change them.
    eval_tile = (64, 16)
    ModelConfig = ModelConfig
    LossConfig = LossConfig
    default_config = "dagan.yaml"
    loss_terms = ("pixel", "perceptual", "adversarial")
    content_terms = ("pixel", "perceptual")
    search_spaces = {"losses": {
        "loss.pixel": {"uniform": [0.05, 1.0]},               # beta, paper 0.5 (> 0: a preset may have no VGG term)
        "loss.perceptual": {"uniform": [0.0, 1.0]},           # 1 - beta, paper 0.5
        "loss.adversarial": {"loguniform": [1e-4, 1e-1]},     # paper 1e-2
        "loss.gan_kind": {"choice": ["hinge", "vanilla"]},    # hinge vs log loss
    }}
    ablations = {
        "DAGAN (full)": {},
        "DAGAN* (no attention)": {"model.self_attention": False},
        "DA-net (no discriminator)": {"model.discriminator": False, "loss.adversarial": 0.0},
        "MSE only": {"loss.pixel": 1.0, "loss.perceptual": 0.0},
        "VGG only": {"loss.pixel": 0.0, "loss.perceptual": 1.0},
    }

    @classmethod
    def ablation_variants(cls, cfg):
        """The paper's variants plus 1..N-1 DenseResAtt modules (the full model has N)."""
        variants = dict(cls.ablations)
        for n in range(1, cfg.model.modules):
            variants[f"{n} DenseResAtt module{'s' if n > 1 else ''}"] = {"model.modules": n}
        return variants

    @property
    def adversarial_enabled(self) -> bool:
        return bool(self.model_cfg.discriminator) and self.loss_cfg.adversarial > 0

    def build_generator(self) -> nn.Module:
        return DAGANGenerator(self.channels, self.model_cfg)

    def build_discriminator(self) -> Optional[nn.Module]:
        if not self.adversarial_enabled:
            return None  # DA-net
        patch = getattr(self.data_cfg, "patch", 64) if self.data_cfg is not None else 64
        return DAGANDiscriminator(self.channels, self.model_cfg, patch)

    def perceptual_spec(self):
        return (self.loss_cfg.vgg_layer, "mse") if self.loss_cfg.perceptual > 0 else None

    def compute_terms(self, D: Optional[nn.Module], out: torch.Tensor, batch, terms) -> Dict[str, torch.Tensor]:
        """pixel: MSE; perceptual: MSE of VGG19 relu5_4 features; adversarial: ``gan_kind``."""
        target, values = batch["target"], {}
        if "pixel" in terms:
            values["pixel"] = F.mse_loss(out.float(), target.float())
        if "perceptual" in terms:
            values["perceptual"] = self.perceptual_distance(out, target)
        if "adversarial" in terms and D is not None:
            values["adversarial"] = self.adversarial_term(D, out)
        return values

    @classmethod
    def translate_loss_keys(cls, section: Any) -> Any:
        section = super().translate_loss_keys(section)
        if not isinstance(section, dict) or not {"content", "beta"} & set(section):
            return section
        mode, beta = section.pop("content", "both"), section.pop("beta", 0.5)
        if mode not in CONTENT_KINDS:
            raise ConfigError(f"loss.content: {mode!r} is not one of {', '.join(CONTENT_KINDS)} "
                              f"(an older raygan's key: today loss.pixel and loss.perceptual)")
        if not isinstance(beta, (int, float)) or not 0.0 <= beta <= 1.0:
            raise ConfigError(f"loss.beta: must be in [0, 1], got {beta!r} (an older raygan's key: "
                              f"today loss.pixel = beta and loss.perceptual = 1 - beta)")
        pixel, perceptual = CONTENT_KINDS[mode](float(beta))
        section.setdefault("pixel", pixel)
        section.setdefault("perceptual", perceptual)
        return section


__all__ = ["DAGANDiscriminator", "DAGANFamily", "DAGANGenerator", "DenseResAtt", "LossConfig",
           "ModelConfig", "ResAttGroup", "SelfAttention"]
