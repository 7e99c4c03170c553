"""Prior-guided face super-resolution x8 (Yun Liu, master's thesis, Waseda University, 2023).

Family ``facesr``, data task ``face_sr`` (``raygan.datasets.faces``): 128x128 faces, the
input bicubic-downscaled to 16x16, plus 11 face-parsing maps (batch key ``"parsing"``,
``B x 11 x 128 x 128`` in {0, 1}) as auxiliary targets.

Method 1 (``model.variant: cnn``) -- one generator, three outputs
-------------------------------------------------------------------
``G(x) -> {"coarse", "parsing", "fine"}``; :meth:`FaceSRFamily.restored` returns ``"fine"``.

* **SR branch** (coarse SR): conv3x3(3->nf) -> ``n_blocks`` (16) basic blocks ->
  conv3x3 -> (+ the head features: an SRResNet-style long skip, our choice, it only eases
  optimisation) -> ``log2(scale)`` (3) x [conv3x3(nf->4nf), PixelShuffle(2), ReLU] ->
  conv3x3(nf->3).
* **Basic block**: ``a = conv3x3(x) + conv3x3_dilation2(x)`` (the dilated conv sees a
  5x5 field), squeeze-and-excitation ``w = act(W2 relu(W1 gap(a)))`` with reduction
  ``se_reduction`` (16), ``a = relu(a * w)``, ``conv3x3(a)``, plus the identity skip
  (``block_residual``; the thesis draws the block inside a residual trunk).
  ``se_activation: softmax`` is what the thesis writes: a softmax over the channel axis,
  so the C weights are positive and **sum to 1** (each is ~1/C at initialisation, i.e. the
  block output is damped by ~C and channels *compete*); ``sigmoid`` is the usual SE gate
  (independent weights in (0, 1)) and is kept as a switch.
* **Prior branch** (FSRNet-style prior estimation): its input is the **LR input** by
  default (``model.prior_input: lr``): the thesis describes "two independent branches",
  both fed the LR face, so the SR branch and the prior branch run in parallel and meet only
  in the fusion. The thesis does not say at which resolution the prior branch works on its
  16x16 input; here it bicubic-upsamples it by ``data.scale`` (no parameters, so the
  branch sees nothing but the LR input) and runs the hourglass at the output size.
  ``prior_input: coarse_sr`` is the FSRNet wiring this project used before (the prior
  branch reads the coarse SR image, so the two are in series and the parsing loss also
  trains the SR branch). Then: conv3x3(3->pnf) -> residual block -> stride-2 conv (64x64, to keep the
  hourglass affordable) -> ``prior_stacks`` Newell hourglasses of depth ``prior_depth``
  (4: 64 -> 4 px at the bottom; max-pool down, nearest up, residual blocks everywhere) ->
  residual block -> x2 nearest upsampling + conv3x3 -> conv1x1(pnf->11) -> **sigmoid**
  (the maps are {0,1} targets of an MSE loss; the sigmoid keeps what the fusion sees in
  [0, 1]).
* **Fusion**: concat(coarse 3 + parsing 11 = 14 channels) -> conv3x3(14->nf) -> ReLU ->
  residual block (conv-ReLU-conv + skip) -> conv3x3(nf->3) = the final SR. No output
  activation anywhere (images in [0, 1]; ``restored`` clamps for D and metrics).

**Input skip** (``model.input_skip``, off in the paper configs, on in the CPU presets): the
SR branch adds its output to the bicubic-upsampled input and the fusion adds its output to
the coarse SR, both last convs starting at zero, so the untrained G is bicubic exactly
(``raygan.models.blocks``).

Loss (pretraining and the whole ``cnn`` variant): ``w_coarse*MSE(coarse, y) +
w_prior*MSE(parsing, maps) + w_fine*MSE(fine, y)`` (all weights 1). In ``cnn`` the
discriminator is None.

Method 2 (``model.variant: gan``)
---------------------------------
G is method 1's network; D is the SRGAN discriminator: conv3x3 64 (LReLU 0.2, no BN) ->
[conv3x3 stride 2, BN, LReLU] / [conv3x3 stride 1 doubling channels, BN, LReLU] pairs
down to ``patch/16`` (8x8x512 for 128x128) -> dense 1024 -> LReLU -> dense 1 (a logit).
It judges the **fine** output only (unconditional, as SRGAN). G loss =
``alpha * content + beta * VGG + gamma * adversarial`` with content the three-term MSE
above, VGG the MSE between VGG19 relu5_4 features (torchvision ``features[:36]``, SRGAN's
"VGG54") and the adversarial term ``loss.gan_kind`` (vanilla BCE, non-saturating, as
SRGAN). Keys: ``loss.coarse``, ``loss.prior``, ``loss.fine`` weigh the three content terms
(the thesis's alpha times each term's weight: alpha is 1 here, so scale all three for
another alpha), ``loss.perceptual`` is beta, ``loss.adversarial`` gamma. The thesis gives
no numbers; the defaults are ours: alpha=1, beta=0.006 (SRGAN's 1/12.75^2 feature
rescaling folded into the weight), gamma=1e-3 (SRGAN's). A config of an older raygan
(``w_coarse``, ``w_prior``, ``w_fine``, ``alpha``, ``beta``, ``gamma``) is translated on
load, alpha multiplied into the three content weights. Optimizer: RMSProp (``optim.optimizer:
rmsprop`` in facesr_gan.yaml).

Parameter counts (paper-size defaults: nf=64, prior_nf=128, 16 blocks, one hourglass of
depth 4, SE reduction 16, RGB 128x128; the thesis gives none, ``tests/test_facesr.py`` pins
these): G = 7,076,817 (SR branch 2,265,411; prior branch 4,727,691; fusion 83,715);
D = 38,245,569 (33.6 M of it the 32768 -> 1024 dense layer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from raygan.models.base import GANFamily, register_family
from raygan.models.blocks import VGGStyleDiscriminator, skip_base, srgan_stages, zero_init_
from raygan.platform.core.errors import ConfigError

N_PARSING = 11


# --------------------------------------------------------------------------- config


@dataclass
class FaceSRModelConfig:
    variant: str = "cnn"          # cnn (method 1) | gan (method 2)
    nf: int = 64                  # SR-branch / fusion width
    n_blocks: int = 16            # basic blocks in the SR branch
    se_activation: str = "softmax"  # softmax (thesis: weights sum to 1) | sigmoid (usual SE)
    se_reduction: int = 16        # squeeze-excitation reduction r
    block_residual: bool = True   # identity skip around each basic block
    prior_nf: int = 128           # hourglass width
    prior_depth: int = 4          # hourglass recursion depth (bottom = patch / 2 / 2**depth)
    prior_stacks: int = 1         # stacked hourglasses in the prior branch
    n_parsing: int = N_PARSING    # parsing maps the prior branch predicts (face shards carry 11)
    d_nf: int = 64                # SRGAN discriminator base width (64 -> 512)
    #: CPU presets: coarse = bicubic(x) + SR branch, fine = coarse + fusion, both tails zeroed
    input_skip: bool = False
    #: what the prior branch reads: lr (the LR input, bicubic-upsampled: the thesis' two
    #: independent branches) | coarse_sr (the SR branch's output, FSRNet-style, in series)
    prior_input: str = "lr"

    def validate(self) -> None:
        if self.variant not in ("cnn", "gan"):
            raise ConfigError(f"model.variant: {self.variant!r} is not one of cnn, gan")
        if self.prior_input not in ("lr", "coarse_sr"):
            raise ConfigError(f"model.prior_input: {self.prior_input!r} is not one of lr, coarse_sr")
        if self.se_activation not in ("softmax", "sigmoid"):
            raise ConfigError(f"model.se_activation: {self.se_activation!r} is not one of "
                              "softmax, sigmoid")
        for key in ("nf", "n_blocks", "se_reduction", "prior_nf", "prior_depth",
                    "prior_stacks", "n_parsing", "d_nf"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be >= 1, got {getattr(self, key)}")


@dataclass
class FaceSRLossConfig:
    coarse: float = 1.0           # MSE(coarse SR, HR)
    prior: float = 1.0            # MSE(parsing maps, ground-truth maps)
    fine: float = 1.0             # MSE(final SR, HR)
    # the GAN variant's weights; the thesis gives no numbers, these are ours (after SRGAN)
    perceptual: float = 0.006     # beta: VGG19 relu5_4 MSE
    adversarial: float = 1e-3     # gamma
    gan_kind: str = "vanilla"     # vanilla (BCE, SRGAN) | lsgan | hinge
    vgg_layer: int = 35           # torchvision VGG19 features index (35 = relu5_4)

    def validate(self) -> None:
        if self.gan_kind not in ("vanilla", "bce", "lsgan", "hinge"):
            raise ConfigError(f"loss.gan_kind: {self.gan_kind!r} is not one of "
                              "vanilla, bce, lsgan, hinge")
        for key in ("coarse", "prior", "fine", "perceptual", "adversarial"):
            if getattr(self, key) < 0:
                raise ConfigError(f"loss.{key}: must be >= 0, got {getattr(self, key)}")


# --------------------------------------------------------------------------- blocks


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, padding=dilation * (k // 2), dilation=dilation)


class SqueezeExcite(nn.Module):
    """Global average pool -> dense(C, C/r) -> ReLU -> dense(C/r, C) -> softmax | sigmoid."""

    def __init__(self, channels: int, reduction: int = 16, activation: str = "softmax"):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        # softmax over the channel axis: the C weights sum to 1 (the thesis' formulation)
        w = torch.softmax(w, dim=1) if self.activation == "softmax" else torch.sigmoid(w)
        return w[:, :, None, None]


class BasicBlock(nn.Module):
    """(conv3x3 + dilated conv3x3) -> SE reweighting -> ReLU -> conv3x3 (+ identity)."""

    def __init__(self, nf: int, se_reduction: int = 16, se_activation: str = "softmax",
                 residual: bool = True):
        super().__init__()
        self.conv = _conv(nf, nf)
        self.dconv = _conv(nf, nf, dilation=2)  # 3x3 taps spread over a 5x5 field
        self.se = SqueezeExcite(nf, se_reduction, se_activation)
        self.out = _conv(nf, nf)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x) + self.dconv(x)
        a = self.out(F.relu(a * self.se(a)))
        return x + a if self.residual else a


class ResBlock(nn.Module):
    """conv3x3 -> ReLU -> conv3x3 + identity."""

    def __init__(self, nf: int):
        super().__init__()
        self.c1 = _conv(nf, nf)
        self.c2 = _conv(nf, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c2(F.relu(self.c1(x)))


class SRBranch(nn.Module):
    """Input (16x16) -> coarse SR (16*scale) through basic blocks and PixelShuffle steps."""

    def __init__(self, channels: int, nf: int, n_blocks: int, scale: int, se_reduction: int,
                 se_activation: str, block_residual: bool, input_skip: bool = False):
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"data.scale: facesr upsamples by PixelShuffle(2) steps, so the "
                             f"scale must be a power of two >= 2, got {scale}")
        self.head = _conv(channels, nf)
        self.blocks = nn.Sequential(*[BasicBlock(nf, se_reduction, se_activation, block_residual)
                                      for _ in range(n_blocks)])
        self.body_out = _conv(nf, nf)
        ups = []
        for _ in range(int(math.log2(scale))):
            ups += [_conv(nf, 4 * nf), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*ups)
        self.tail = _conv(nf, channels)
        self.input_skip = input_skip
        if input_skip:
            zero_init_(self.tail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        h = h + self.body_out(self.blocks(h))
        out = self.tail(self.up(h))
        return skip_base(x, out.shape[-2:]) + out if self.input_skip else out


class Hourglass(nn.Module):
    """Newell et al.'s recursive hourglass: skip branch + (pool -> inner -> nearest up)."""

    def __init__(self, depth: int, nf: int):
        super().__init__()
        self.skip = ResBlock(nf)
        self.down = ResBlock(nf)
        self.inner = Hourglass(depth - 1, nf) if depth > 1 else ResBlock(nf)
        self.up = ResBlock(nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class PriorBranch(nn.Module):
    """Image -> ``n_parsing`` face-parsing maps in [0, 1] at the image size, or at
    ``in_scale`` times it (an LR input is first bicubic-upsampled by ``in_scale``)."""

    def __init__(self, channels: int, nf: int, depth: int, stacks: int, n_parsing: int,
                 in_scale: int = 1):
        super().__init__()
        self.depth = depth
        self.in_scale = in_scale
        self.head = nn.Sequential(_conv(channels, nf), nn.ReLU(inplace=True), ResBlock(nf),
                                  _conv(nf, nf, stride=2), nn.ReLU(inplace=True))
        self.hourglasses = nn.Sequential(*[Hourglass(depth, nf) for _ in range(stacks)])
        self.post = ResBlock(nf)
        self.up_conv = _conv(nf, nf)
        self.out = nn.Conv2d(nf, n_parsing, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_scale > 1:
            x = skip_base(x, (x.shape[-2] * self.in_scale, x.shape[-1] * self.in_scale))
        unit = 2 ** (self.depth + 1)
        if x.shape[-2] % unit or x.shape[-1] % unit:
            raise ValueError(f"facesr prior branch: the SR size {tuple(x.shape[-2:])} must be a "
                             f"multiple of {unit} (2 ** (model.prior_depth + 1))")
        h = self.post(self.hourglasses(self.head(x)))
        h = F.relu(self.up_conv(F.interpolate(h, scale_factor=2, mode="nearest")))
        return torch.sigmoid(self.out(h))


class Fusion(nn.Module):
    """concat(coarse, parsing) -> conv -> ReLU -> residual block -> conv -> final SR."""

    def __init__(self, channels: int, n_parsing: int, nf: int, input_skip: bool = False):
        super().__init__()
        self.head = _conv(channels + n_parsing, nf)
        self.res = ResBlock(nf)
        self.tail = _conv(nf, channels)
        self.input_skip = input_skip
        if input_skip:
            zero_init_(self.tail)

    def forward(self, coarse: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.head(torch.cat([coarse, parsing], dim=1)))
        out = self.tail(self.res(h))
        return coarse + out if self.input_skip else out


class FaceSRNet(nn.Module):
    """Method 1's network: SR branch and prior branch (both on the LR input, or the prior
    on the coarse SR with ``prior_input: coarse_sr``) -> fusion."""

    def __init__(self, cfg: FaceSRModelConfig, channels: int = 3, scale: int = 8):
        super().__init__()
        self.scale = scale
        self.sr = SRBranch(channels, cfg.nf, cfg.n_blocks, scale, cfg.se_reduction,
                           cfg.se_activation, cfg.block_residual, cfg.input_skip)
        self.prior_input = cfg.prior_input
        self.prior = PriorBranch(channels, cfg.prior_nf, cfg.prior_depth, cfg.prior_stacks,
                                 cfg.n_parsing, scale if cfg.prior_input == "lr" else 1)
        self.fusion = Fusion(channels, cfg.n_parsing, cfg.nf, cfg.input_skip)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        coarse = self.sr(x)
        parsing = self.prior(x if self.prior_input == "lr" else coarse)
        fine = self.fusion(coarse, parsing)
        return {"coarse": coarse, "parsing": parsing, "fine": fine}


def SRGANDiscriminator(channels: int = 3, nf: int = 64, image_size: int = 128) -> VGGStyleDiscriminator:
    """SRGAN's D: 8 conv layers (64..512, stride 2 every other) -> dense 1024 -> dense 1, on
    the flattened (image_size/16)^2 map, so it takes ``image_size`` x ``image_size`` only."""
    if image_size % 16:
        raise ConfigError(f"data.patch: the SRGAN discriminator halves the size 4 times, "
                          f"so the image size must be a multiple of 16, got {image_size}")
    return VGGStyleDiscriminator(channels, srgan_stages(nf), slope=0.2, pool=image_size // 16,
                                 fc=1024, image_size=image_size)


# --------------------------------------------------------------------------- family


@register_family
class FaceSRFamily(GANFamily):
    """Prior-guided face SR x8: ``cnn`` (MSE only, no D) or ``gan`` (+ VGG + SRGAN D)."""

    name = "facesr"
    task = "face_sr"
    #: evaluation protocol: RGB faces, PSNR/SSIM on RGB (raygan.platform.evaluation.PROTOCOLS)
    eval_protocol = "rgb"
    ModelConfig = FaceSRModelConfig
    LossConfig = FaceSRLossConfig
    default_config = "facesr_cnn.yaml"
    loss_terms = ("coarse", "prior", "fine", "perceptual", "adversarial")
    content_terms = ("coarse", "prior", "fine")
    renamed_loss_keys = {"w_coarse": "coarse", "w_prior": "prior", "w_fine": "fine",
                         "beta": "perceptual", "gamma": "adversarial"}
    # method 2 (model.variant: gan). The thesis gives no numeric weights: the centres are
    # our defaults (prior 1; perceptual 0.006 and adversarial 1e-3 after SRGAN)
    search_spaces = {"losses": {
        "loss.prior": {"loguniform": [0.1, 10.0]},          # the parsing prior, ours 1
        "loss.perceptual": {"loguniform": [6e-4, 6e-2]},    # beta, ours 0.006 (SRGAN's)
        "loss.adversarial": {"loguniform": [1e-4, 1e-2]},   # gamma, ours 1e-3 (SRGAN's)
    }}
    ablations = {
        "method 1 (CNN)": {"model.variant": "cnn"},
        "method 2 (GAN)": {"model.variant": "gan"},
    }

    def __init__(self, model_cfg: Any, loss_cfg: Any, data_cfg: Any = None):
        super().__init__(model_cfg, loss_cfg, data_cfg)
        self.scale = getattr(data_cfg, "scale", 8) if data_cfg is not None else 8
        self.image_size = getattr(data_cfg, "patch", 128) if data_cfg is not None else 128

    def build_generator(self) -> nn.Module:
        return FaceSRNet(self.model_cfg, self.channels, self.scale)

    def build_discriminator(self) -> Optional[nn.Module]:
        if self.model_cfg.variant != "gan":
            return None
        return SRGANDiscriminator(self.channels, self.model_cfg.d_nf, self.image_size)

    def perceptual_spec(self):
        on = self.model_cfg.variant == "gan" and self.loss_cfg.perceptual > 0
        return (self.loss_cfg.vgg_layer, "mse") if on else None

    def restored(self, out: Any) -> torch.Tensor:
        return out["fine"].clamp(0, 1)

    @classmethod
    def translate_loss_keys(cls, section: Any) -> Any:
        alpha = section.get("alpha") if isinstance(section, dict) else None
        section = super().translate_loss_keys(
            {k: v for k, v in section.items() if k != "alpha"} if alpha is not None else section)
        if alpha is not None:  # the old GAN variant's content scale: into the three weights
            if not isinstance(alpha, (int, float)) or alpha < 0:
                raise ConfigError(f"loss.alpha: must be >= 0, got {alpha!r} (an older raygan's key: "
                                  f"today it scales loss.coarse, loss.prior and loss.fine)")
            for key in cls.content_terms:
                section[key] = float(section.get(key, 1.0)) * float(alpha)
        return section

    def active_terms(self, terms):
        """Method 1 (the CNN) trains on the three content terms alone."""
        if self.model_cfg.variant == "cnn":
            terms = tuple(t for t in terms if t in self.content_terms)
        return super().active_terms(terms)

    def compute_terms(self, D: Optional[nn.Module], out: Any, batch, terms) -> Dict[str, torch.Tensor]:
        """coarse, prior, fine: the three MSE terms; perceptual: VGG19 relu5_4 MSE of the fine
        output; adversarial: ``gan_kind`` on the fine output."""
        target, values = batch["target"], {}
        if "parsing" not in batch:
            raise KeyError("facesr needs batch['parsing'] (the 11 face-parsing maps): "
                           "use data.task=face_sr with shards made by jobs/make_face_shards.py")
        if "coarse" in terms:
            values["coarse"] = F.mse_loss(out["coarse"].float(), target.float())
        if "prior" in terms:
            values["prior"] = F.mse_loss(out["parsing"].float(), batch["parsing"].float())
        if "fine" in terms:
            values["fine"] = F.mse_loss(out["fine"].float(), target.float())
        if "perceptual" in terms:
            values["perceptual"] = self.perceptual_distance(out["fine"], target)
        if "adversarial" in terms and D is not None:
            values["adversarial"] = self.adversarial_term(D, self.restored(out))
        return values


__all__ = ["BasicBlock", "FaceSRFamily", "FaceSRLossConfig", "FaceSRModelConfig", "FaceSRNet",
           "Hourglass", "PriorBranch", "SRGANDiscriminator", "SqueezeExcite"]
