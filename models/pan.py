"""Perceptual adversarial network with a feature pyramid (Li, Wu, Zheng, Yu).

Family ``pan``. Base: pix2pix (Isola et al. 2017) with Laplacian and Gaussian image pyramids of
``levels`` (3) levels each, multi-scale discriminators and a discriminator-feature perceptual
loss (as in Wang et al.'s PAN). Tasks: ``sr`` (x4), ``inpaint``, ``paired`` (pix2pix
``A|B`` pairs, see ``raygan.datasets.paired``), ``edges`` (edges -> photo).

Generator
---------
pix2pix ``unet_256``: a U-Net of ``num_downs`` (8) 4x4 stride-2 convolutions (widths ngf,
2ngf, 4ngf, 8ngf, 8ngf, ...; LReLU 0.2 down, ReLU up, skip concatenations), **instance
normalisation** (no affine, no running stats, as pix2pix's ``--norm instance``; conv biases
on because of it) and **dropout 0.5** in the three decoder blocks below the bottleneck as
the only noise source (no z). Dropout is active in training and off in ``eval()`` (the
engine validates in eval mode; pix2pix's "test in train mode" is not reproduced). Images
are [0, 1]: G maps its input to [-1, 1] and its tanh output back to [0, 1]. Spatial sizes
must be multiples of ``2**num_downs`` (256 for the default). Weights of every conv are
drawn from N(0, 0.02^2), biases 0 (pix2pix ``init_type normal``).

**Super-resolution**: for the ``sr`` task the input is smaller than the target, so G
first bicubic-upsamples it by ``data.scale`` (clamped to [0, 1]) -- the U-Net then works
at the target size, and the same upsampled image is the condition that D sees. Doing the
upsampling inside G keeps ``G(input)`` a complete model for deployment. For
**inpainting** G sees the holed image only (holes filled with mid-grey by the ``inpaint``
task; the task's ``mask`` is not fed, as in pix2pix-style inpainting); for ``edges`` the
RGB edge map; for ``paired`` the stored input image. ``model.in_channels`` overrides the
input width (0 = ``data.channels``).

**Input skip** (``model.input_skip``, off in the paper configs, on in the CPU SR preset):
the outermost transposed conv loses its tanh and starts at zero, and G returns the
condition (the bicubic-upsampled input for SR) plus half its output (the U-Net works in
[-1, 1] units), so the untrained G is bicubic exactly (``raygan.models.blocks``).

Pyramid
-------
``p_0 = y``, ``p_{k+1} = d(p_k)`` with ``d`` = 5x5 binomial blur ([1,4,6,4,1]/16 outer
product, reflect padding) then **nearest** x1/2 downsampling (keep every second pixel);
``u`` = **bicubic** upsampling to the finer level's size. High-frequency residuals
``h_k = p_k - u(p_{k+1})`` for k = 0 .. levels-2; the top level keeps the low-pass
``p_{levels-1}``. Reconstruction ``p_k = h_k + u(p_{k+1})`` holds by construction
(:func:`reconstruct`); it is exact up to float rounding. The discriminators read three
levels of *each* pyramid (the paper): residuals ``h_0, h_1, h_2`` (so the Gaussian pyramid
is built one level deeper, ``p_3``, which no discriminator sees on its own) and low-pass
images ``p_0, p_1, p_2``.

Discriminators (:class:`PANDiscriminator`, one module holding them all)
----------------------------------------------------------------------
Every scale discriminator is pix2pix's 70x70 PatchGAN (``d_layers`` = 3: conv4x4 s2 ndf,
LReLU; [conv4x4 s2, IN, LReLU] x2; conv4x4 s1 8ndf, IN, LReLU; conv4x4 s1 -> 1 logit map),
identical architecture per scale, separate weights:

* ``high[k]``, k = 0 .. high_levels-1 (3 discriminators): conditional, input
  ``concat(P_k(c), h_k(y))`` where ``c`` is the (upsampled) input image; L_cGAN^high.
  With ``model.conditional: false`` the condition is dropped and they see ``h_k(y)`` only.
* ``low[k]``, k = 0 .. low_levels-1 (3 discriminators): unconditional, input ``P_k(y)``
  (the Gaussian pyramid, i.e. the image's low-frequency content at every scale); L_GAN^low.

``model.high_levels`` / ``model.low_levels`` (null: ``model.levels`` = 3) set the counts;
``high_levels: 2`` is this project's earlier reading (a 3-level Laplacian pyramid whose top
level keeps only the low-pass). The coarsest residual ``h_2`` of a 256 patch is 64x64 (a
70x70 PatchGAN gives a 6x6 logit map on it); the paper does not say how the residuals are
scaled or whether a discriminator also sees ``p_3``, so they are used raw and ``p_3`` is not.

A group is only built (and trained) when the generator loss uses it: ``high`` if
``loss.adversarial > 0`` or the perceptual term reads it, ``low`` likewise; with neither,
``build_discriminator`` returns None and G trains on L1 alone. The forward returns
``{"high": [(logits, [activations])...], "low": [...]}``; the activations are the outputs
of the 4 LeakyReLUs (the "ReLU activations" of the paper).

Losses
------
``G = alpha1 * L_cGAN^high + alpha2 * L_GAN^low + alpha3 * L_perc + alpha4 * L1`` with the
paper's (1, 5, 1, 100): the keys ``loss.adversarial`` (alpha1: the conditional high-frequency
GANs, pix2pix's adversarial term), ``loss.adversarial_low`` (alpha2), ``loss.perceptual``
(alpha3) and ``loss.pixel`` (alpha4). A config of an older raygan (``high``, ``low``, ``l1``)
is translated on load. Adversarial terms use ``loss.gan_kind`` (``vanilla`` = pix2pix's BCE with
logits, non-saturating for G), averaged over the scales of a group. D minimises
``0.5 * (real + fake)`` per group (pix2pix halves D's loss), groups summed.

``L_perc`` (our precise choice, configurable): the discriminators of ``loss.perceptual_d``
(``high`` by default: the conditional high-frequency discriminators, whose features see
detail, the part L1 blurs; ``low`` or ``both`` are alternatives) compare real and fake:
``sum_j layer_weights[j] * mean((f_j(real) - f_j(fake))^2)`` over the 4 LReLU activations
j, averaged over the scales; ``layer_weights`` default (5, 1.5, 1.5, 1.5) after PAN (Wang et
al. 2018), which weighs the first discriminator layer most. Real features are constants
for G. ``loss.perceptual_margin`` m > 0 adds PAN's ``max(0, m - L_perc)`` to D's loss
(D then also pushes real and fake features apart); 0 (default) = off.

Content loss (generator-only pretraining): L1.

Parameter counts (defaults: ngf = ndf = 64, num_downs 8, d_layers 3, RGB): G 54,409,603
(pix2pix's unet_256 with batch norm: 54.414 M; instance norm has no affine parameters but
the convolutions get biases); each conditional PatchGAN 2,767,809 (6 input channels; pix2pix
with BN: 2.769 M), each unconditional one 2,764,737; the whole D (3 high + 3 low)
16,597,638. ``tests/test_pan.py`` pins these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from raygan.models.base import GANFamily, LossAndLogs, register_family
from raygan.models.blocks import zero_init_
from raygan.platform.core.errors import ConfigError
from raygan.platform.core.losses import gan_loss

# --------------------------------------------------------------------------- config


@dataclass
class PANModelConfig:
    ngf: int = 64                 # generator base width (pix2pix U-Net)
    ndf: int = 64                 # discriminator base width (PatchGAN)
    num_downs: int = 8            # U-Net downsamplings (8 = pix2pix unet_256)
    dropout: float = 0.5          # decoder dropout, the noise source
    d_layers: int = 3             # PatchGAN stride-2 layers (3 = 70x70 receptive field)
    levels: int = 3               # levels of each pyramid: that many high and low Ds
    #: high-frequency (conditional, Laplacian) discriminators (None: levels); 2 = this
    #: project's earlier reading, where the top level kept only the low-pass
    high_levels: Optional[int] = None
    low_levels: Optional[int] = None  # low-frequency (Gaussian) discriminators (None: levels)
    conditional: bool = True      # high-frequency D sees the input (False: ablation)
    in_channels: int = 0          # G input channels (0: the task's, see PANFamily)
    #: CPU presets: G = condition + (zero-initialised, tanh-free) U-Net output
    input_skip: bool = False

    def validate(self) -> None:
        if self.num_downs < 5:
            raise ConfigError(f"model.num_downs: the pix2pix U-Net needs >= 5, got {self.num_downs}")
        if self.levels < 2:
            raise ConfigError(f"model.levels: a pyramid needs >= 2 levels, got {self.levels}")
        for key in ("high_levels", "low_levels"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be >= 1 (or null: model.levels), "
                                  f"got {getattr(self, key)}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.dropout}")
        for key in ("ngf", "ndf", "d_layers"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be >= 1, got {getattr(self, key)}")
        if self.in_channels < 0:
            raise ConfigError(f"model.in_channels: must be >= 0, got {self.in_channels}")

    @property
    def n_high(self) -> int:
        return self.levels if self.high_levels is None else self.high_levels

    @property
    def n_low(self) -> int:
        return self.levels if self.low_levels is None else self.low_levels


@dataclass
class PANLossConfig:
    adversarial: float = 1.0      # alpha1: conditional high-frequency GAN loss (0: ablation)
    adversarial_low: float = 5.0  # alpha2: low-frequency GAN loss (0: ablation)
    perceptual: float = 1.0       # alpha3: discriminator-feature perceptual loss
    pixel: float = 100.0          # alpha4: L1
    gan_kind: str = "vanilla"     # vanilla (pix2pix BCE) | lsgan | hinge
    perceptual_d: str = "high"    # which discriminators' features: high | low | both
    #: weight of each discriminator activation in the perceptual loss (d_layers + 1 values)
    layer_weights: List[float] = field(default_factory=lambda: [5.0, 1.5, 1.5, 1.5])
    perceptual_margin: float = 0.0  # PAN's D-side margin m (0: off)

    def validate(self) -> None:
        if self.gan_kind not in ("vanilla", "bce", "lsgan", "hinge"):
            raise ConfigError(f"loss.gan_kind: {self.gan_kind!r} is not one of "
                              "vanilla, bce, lsgan, hinge")
        if self.perceptual_d not in ("high", "low", "both"):
            raise ConfigError(f"loss.perceptual_d: {self.perceptual_d!r} is not one of "
                              "high, low, both")
        for key in ("adversarial", "adversarial_low", "perceptual", "pixel", "perceptual_margin"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key}: must be >= 0, got {getattr(self, key)}")


# --------------------------------------------------------------------------- pyramid

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def blur(x: torch.Tensor) -> torch.Tensor:
    """Depthwise 5x5 binomial (Gaussian-like) blur with reflect padding."""
    k = torch.outer(_BINOMIAL, _BINOMIAL).to(device=x.device, dtype=x.dtype)
    c = x.shape[1]
    pad = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode=pad), k.expand(c, 1, 5, 5), groups=c)


def down(x: torch.Tensor) -> torch.Tensor:
    """d(.): blur, then nearest x1/2 downsampling (every second pixel)."""
    return blur(x)[..., ::2, ::2]


def up(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """u(.): bicubic upsampling to ``size`` (the finer level's size)."""
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> List[torch.Tensor]:
    """[p_0 = x, p_1 = d(p_0), ..., p_{levels-1}]."""
    pyr = [x]
    for _ in range(levels - 1):
        pyr.append(down(pyr[-1]))
    return pyr


def laplacian_pyramid(x: torch.Tensor, levels: int) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """(gaussian pyramid, [h_0 .. h_{levels-2}]) with h_k = p_k - u(p_{k+1})."""
    pyr = gaussian_pyramid(x, levels)
    highs = [pyr[k] - up(pyr[k + 1], pyr[k].shape[-2:]) for k in range(levels - 1)]
    return pyr, highs


def reconstruct(highs: Sequence[torch.Tensor], top: torch.Tensor) -> List[torch.Tensor]:
    """Rebuild [p_0 .. p_{L-1}] from the residuals and the top level: p_k = h_k + u(p_{k+1})."""
    pyr = [top]
    for h in reversed(list(highs)):
        pyr.insert(0, h + up(pyr[0], h.shape[-2:]))
    return pyr


# --------------------------------------------------------------------------- networks


def _instance_norm(c: int) -> nn.Module:
    return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)


class UnetBlock(nn.Module):
    """pix2pix's UnetSkipConnectionBlock with instance norm (x -> [x, block(x)])."""

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: Optional[int] = None,
                 submodule: Optional[nn.Module] = None, outermost: bool = False,
                 innermost: bool = False, dropout: float = 0.0, tanh: bool = True):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, 2, 1, bias=True)
        downrelu, uprelu = nn.LeakyReLU(0.2, True), nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1)
            layers = [downconv, submodule, uprelu, upconv] + ([nn.Tanh()] if tanh else [])
        elif innermost:
            # no norm on the 1x1 bottleneck (instance norm needs > 1 pixel)
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, 2, 1, bias=True)
            layers = [downrelu, downconv, uprelu, upconv, _instance_norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, 2, 1, bias=True)
            layers = [downrelu, downconv, _instance_norm(inner_nc), submodule, uprelu, upconv,
                      _instance_norm(outer_nc)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net; [0, 1] in and out; upsamples the input by ``scale`` first (SR)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64,
                 num_downs: int = 8, dropout: float = 0.5, scale: int = 1,
                 input_skip: bool = False):
        super().__init__()
        self.scale = scale
        self.input_skip = input_skip
        self.num_downs = num_downs
        block = UnetBlock(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, submodule=block, dropout=dropout)
        block = UnetBlock(ngf * 4, ngf * 8, submodule=block)
        block = UnetBlock(ngf * 2, ngf * 4, submodule=block)
        block = UnetBlock(ngf, ngf * 2, submodule=block)
        self.model = UnetBlock(out_channels, ngf, input_nc=in_channels, submodule=block,
                               outermost=True, tanh=not input_skip)

    def zero_output_(self) -> None:
        """Zero the outermost transposed conv: with ``input_skip`` G starts as its condition."""
        zero_init_(self.model.model[3])

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The input at the output size: bicubic x``scale`` upsampling for SR, else itself."""
        if self.scale == 1:
            return x
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic",
                             align_corners=False).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.condition(x)
        unit = 2 ** self.num_downs
        if x.shape[-2] % unit or x.shape[-1] % unit:
            raise ValueError(f"pan generator: image size {tuple(x.shape[-2:])} must be a "
                             f"multiple of {unit} (2 ** model.num_downs); adjust data.patch / "
                             f"data.val_crop or model.num_downs")
        if self.input_skip:  # a correction in [-1, 1] units over the condition
            return x + self.model(x * 2 - 1) / 2
        return (self.model(x * 2 - 1) + 1) / 2


class PatchGAN(nn.Module):
    """pix2pix's NLayerDiscriminator (instance norm); returns (logits, LReLU activations)."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True))]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            blocks.append(nn.Sequential(nn.Conv2d(ndf * prev, ndf * mult, 4, 2, 1),
                                        _instance_norm(ndf * mult), nn.LeakyReLU(0.2, True)))
        prev, mult = mult, min(2 ** n_layers, 8)
        blocks.append(nn.Sequential(nn.Conv2d(ndf * prev, ndf * mult, 4, 1, 1),
                                    _instance_norm(ndf * mult), nn.LeakyReLU(0.2, True)))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(ndf * mult, 1, 4, 1, 1)
        # smallest input giving a >= 1x1 logit map (instance norm also needs > 1 pixel)
        self.min_size = 2 ** n_layers * 3

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"pan PatchGAN with model.d_layers={len(self.blocks) - 1} needs "
                             f"inputs of at least {self.min_size} px, got {tuple(x.shape[-2:])} "
                             f"(a coarse pyramid level): lower model.d_layers or model.levels, "
                             f"or raise data.patch")
        feats = []
        for b in self.blocks:
            x = b(x)
            feats.append(x)
        return self.head(x), feats


class PANDiscriminator(nn.Module):
    """All scale discriminators in one module: ``high`` (conditional, on h_k) and ``low``."""

    def __init__(self, channels: int, cond_channels: int, ndf: int, n_layers: int,
                 high_levels: int, low_levels: int, use_high: bool, use_low: bool,
                 conditional: bool):
        super().__init__()
        self.conditional = conditional
        c_high = channels + (cond_channels if conditional else 0)
        self.high = nn.ModuleList([PatchGAN(c_high, ndf, n_layers)
                                   for _ in range(high_levels)] if use_high else [])
        self.low = nn.ModuleList([PatchGAN(channels, ndf, n_layers)
                                  for _ in range(low_levels)] if use_low else [])
        # h_k needs p_{k+1}: a Gaussian pyramid one level deeper than the high Ds it feeds
        self.levels = max(len(self.high) + 1, len(self.low), 2)

    def forward(self, y: torch.Tensor, cond: Optional[torch.Tensor] = None,
                parts: Sequence[str] = ("high", "low")) -> Dict[str, List[Tuple[torch.Tensor, List[torch.Tensor]]]]:
        out: Dict[str, List[Tuple[torch.Tensor, List[torch.Tensor]]]] = {"high": [], "low": []}
        pyr, highs = laplacian_pyramid(y, self.levels)
        if "high" in parts and len(self.high):
            cpyr = None
            if self.conditional:
                if cond is None:
                    raise ValueError("pan: conditional discriminator called without a condition")
                if cond.shape[0] != y.shape[0]:  # real and fake stacked in one batch
                    cond = cond.repeat(y.shape[0] // cond.shape[0], 1, 1, 1)
                cpyr = gaussian_pyramid(cond, self.levels)
            for k, d in enumerate(self.high):
                inp = highs[k] if cpyr is None else torch.cat([cpyr[k], highs[k]], 1)
                out["high"].append(d(inp))
        if "low" in parts and len(self.low):
            for k, d in enumerate(self.low):
                out["low"].append(d(pyr[k]))
        return out


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """pix2pix ``init_type normal``: conv / linear weights ~ N(0, std^2), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- family


def feature_distance(real: List[Tuple[torch.Tensor, List[torch.Tensor]]],
                     fake: List[Tuple[torch.Tensor, List[torch.Tensor]]],
                     weights: Sequence[float]) -> torch.Tensor:
    """Weighted per-layer mean squared distance of D activations, averaged over scales."""
    per_scale = []
    for (_, fr), (_, ff) in zip(real, fake):
        per_scale.append(sum(w * F.mse_loss(b.float(), a.detach().float())
                             for w, a, b in zip(weights, fr, ff)))
    return torch.stack(per_scale).mean()


@register_family
class PANFamily(GANFamily):
    """pix2pix + feature pyramid + multi-scale D + D-feature perceptual loss."""

    name = "pan"
    task = "sr"
    #: evaluation protocol: RGB, PSNR/SSIM on RGB (raygan.platform.evaluation.PROTOCOLS)
    eval_protocol = "rgb"
    ModelConfig = PANModelConfig
    LossConfig = PANLossConfig
    default_config = "pan_sr.yaml"
    loss_terms = ("pixel", "adversarial", "adversarial_low", "perceptual")
    content_terms = ("pixel",)
    renamed_loss_keys = {"high": "adversarial", "low": "adversarial_low", "l1": "pixel"}
    search_spaces = {"losses": {  # alpha1..alpha4, paper (1, 5, 1, 100)
        "loss.adversarial": {"loguniform": [0.1, 10.0]},
        "loss.adversarial_low": {"loguniform": [0.5, 50.0]},
        "loss.perceptual": {"loguniform": [0.1, 10.0]},
        "loss.pixel": {"loguniform": [10.0, 1000.0]},
    }}
    ablations = {
        "PAN (full)": {},
        "w/o conditioning": {"model.conditional": False},
        "w/o high-frequency loss": {"loss.adversarial": 0.0},
        "w/o low-frequency loss": {"loss.adversarial_low": 0.0},
    }

    def __init__(self, model_cfg: Any, loss_cfg: Any, data_cfg: Any = None):
        super().__init__(model_cfg, loss_cfg, data_cfg)
        if len(loss_cfg.layer_weights) != model_cfg.d_layers + 1:
            raise ConfigError(f"loss.layer_weights: one weight per PatchGAN activation "
                              f"(model.d_layers + 1 = {model_cfg.d_layers + 1}), got "
                              f"{len(loss_cfg.layer_weights)}")
        task = getattr(data_cfg, "task", None) if data_cfg is not None else None
        self.task_name = task or self.task
        self.scale = data_cfg.scale if (data_cfg is not None and self.task_name == "sr") else 1
        self.in_channels = model_cfg.in_channels or self.channels
        if model_cfg.input_skip and self.in_channels != self.channels:
            raise ConfigError(f"model.input_skip: the input ({self.in_channels} channels) "
                              f"cannot be added to the output ({self.channels} channels)")
        c = loss_cfg
        perc = c.perceptual > 0
        self.use_high = c.adversarial > 0 or (perc and c.perceptual_d in ("high", "both"))
        self.use_low = c.adversarial_low > 0 or (perc and c.perceptual_d in ("low", "both"))

    # -- builders ----------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Generator inputs (at target resolution) must be multiples of this: 2**num_downs."""
        return 2 ** self.model_cfg.num_downs

    def build_generator(self) -> nn.Module:
        m = self.model_cfg
        g = UnetGenerator(self.in_channels, self.channels, m.ngf, m.num_downs, m.dropout,
                          self.scale, m.input_skip)
        init_weights(g)
        if g.input_skip:
            g.zero_output_()  # after init_weights, which would redraw it
        return g

    def build_discriminator(self) -> Optional[nn.Module]:
        if not (self.use_high or self.use_low):
            return None
        m = self.model_cfg
        d = PANDiscriminator(self.channels, self.in_channels, m.ndf, m.d_layers, m.n_high,
                             m.n_low, self.use_high, self.use_low, m.conditional)
        init_weights(d)
        return d

    # -- helpers -----------------------------------------------------------------------
    def condition(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The input at the target size (bicubic-upsampled for SR), as G and D see it."""
        x, y = batch["input"], batch["target"]
        if x.shape[-2:] != y.shape[-2:]:
            x = F.interpolate(x, size=y.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
        return x

    def _perceptual_parts(self) -> Tuple[str, ...]:
        return {"high": ("high",), "low": ("low",), "both": ("high", "low")}[self.loss_cfg.perceptual_d]

    def _perceptual(self, d_real, d_fake) -> torch.Tensor:
        w = self.loss_cfg.layer_weights
        real = [f for p in self._perceptual_parts() for f in d_real[p]]
        fake = [f for p in self._perceptual_parts() for f in d_fake[p]]
        return feature_distance(real, fake, w)

    # -- losses ------------------------------------------------------------------------
    def restored(self, out: Any) -> torch.Tensor:
        return out

    def compute_terms(self, D: Optional[nn.Module], out: Any, batch, terms) -> Dict[str, torch.Tensor]:
        """pixel: L1; adversarial / adversarial_low: ``gan_kind`` over the high / low group's
        scales; perceptual: the D-feature distance. One D forward of ``out`` serves all three."""
        values = {}
        if "pixel" in terms:
            values["pixel"] = F.l1_loss(out.float(), batch["target"].float())
        if D is None:
            return values
        cond = self.condition(batch)
        d_fake = D(out, cond)
        for term, part in (("adversarial", "high"), ("adversarial_low", "low")):
            if term in terms and d_fake[part]:
                values[term] = gan_loss(self.loss_cfg.gan_kind, [o[0] for o in d_fake[part]], True,
                                        for_discriminator=False)
        if "perceptual" in terms:
            with torch.no_grad():
                d_real = D(batch["target"], cond, parts=self._perceptual_parts())
            values["perceptual"] = self._perceptual(d_real, d_fake)
        return values

    def discriminator_loss(self, D: nn.Module, fake: torch.Tensor, batch) -> LossAndLogs:
        c = self.loss_cfg
        real = batch["target"]
        n = real.shape[0]
        # one forward over [real; fake]: instance norm is per sample, so this equals two calls
        both = D(torch.cat([real, fake.to(real.dtype)], 0), self.condition(batch))
        loss = real.new_zeros(())
        logs: Dict[str, float] = {}
        split = {}
        for part in ("high", "low"):
            outs = both[part]
            if not outs:
                continue
            r = [(lg[:n], [f[:n] for f in fs]) for lg, fs in outs]
            f = [(lg[n:], [x[n:] for x in fs]) for lg, fs in outs]
            split[part] = (r, f)
            l_real = gan_loss(c.gan_kind, [o[0] for o in r], True)
            l_fake = gan_loss(c.gan_kind, [o[0] for o in f], False)
            loss = loss + 0.5 * (l_real + l_fake)
            logs[f"d_{part}_real"] = float(l_real.detach())
            logs[f"d_{part}_fake"] = float(l_fake.detach())
        if c.perceptual_margin > 0 and c.perceptual > 0:
            parts = self._perceptual_parts()
            real_f = [x for p in parts for x in split[p][0]]
            fake_f = [x for p in parts for x in split[p][1]]
            # PAN: D keeps real and fake features at least m apart; both sides carry gradient
            w = c.layer_weights
            dist = torch.stack([sum(wj * F.mse_loss(a.float(), b.float())
                                    for wj, a, b in zip(w, fr, ff))
                                for (_, fr), (_, ff) in zip(real_f, fake_f)]).mean()
            l_margin = F.relu(c.perceptual_margin - dist)
            loss = loss + l_margin
            logs["d_margin"] = float(l_margin.detach())
        return loss, logs


__all__ = ["PANDiscriminator", "PANFamily", "PANLossConfig", "PANModelConfig", "PatchGAN",
           "UnetGenerator", "blur", "down", "gaussian_pyramid", "init_weights",
           "laplacian_pyramid", "reconstruct", "up"]
