"""The family base class: what a GAN family declares, and what it inherits.

A family is a subclass of :class:`GANFamily` decorated with :func:`register_family`. It
names its typed ``model`` and ``loss`` config sections (dataclasses), its default data
task, its default YAML (in ``models/configs``) and its paper's evaluation protocol, builds
its generator and discriminator, and computes its losses. The engine
(``raygan.platform.engine``) owns everything else: devices, DDP wrapping, optimizers,
schedulers, AMP, EMA, clipping, checkpoints, validation.

Loss terms have one shape in every family. A family declares its generator's terms
(``loss_terms``, and the ``content_terms`` that generator-only pretraining uses) and computes
their unweighted values (``compute_terms``); each term's weight is the key of the same name
under ``loss.``, and that key means the same thing in every family (:data:`LOSS_VOCABULARY`:
``loss.adversarial`` is the adversarial weight everywhere, so a sweep names keys, not
family-specific spellings). This class forms the weighted sum.

Log keys, the same for every family (sweeps and dashboards compare them): each unweighted
generator term is logged as ``g_<term>``, each discriminator term as ``d_<term>``; the engine
adds the weighted totals it optimised, ``g_total`` and ``d_total``.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Tuple, Type

import torch
from torch import nn

from raygan.datasets.degradations import task_tag
from raygan.platform.core.errors import ConfigError
from raygan.platform.core.losses import PerceptualLoss, gan_loss
from raygan.platform.core.registry import FAMILIES

LossAndLogs = Tuple[torch.Tensor, Dict[str, float]]

#: every generator loss term, by its weight key under ``loss.`` (and log key ``g_<term>``):
#: what it is, the same in every family that has it; each family's docstring gives its paper's name
LOSS_VOCABULARY = {
    "pixel": "distance to the target in pixel space (L1 or MSE: the family's paper says which)",
    "perceptual": "distance in a feature space: VGG19 features; PAN: its discriminators' features",
    "adversarial": "the generator's adversarial loss (PAN: the conditional high-frequency GANs)",
    "adversarial_low": "PAN's second adversarial loss: the unconditional low-frequency GANs",
    "tv": "total variation of the restored image",
    "coarse": "face SR: MSE of the coarse SR network's output to the target",
    "prior": "face SR: MSE of the estimated parsing maps to the ground-truth maps",
    "fine": "face SR: MSE of the final output to the target",
}


class GANFamily:
    """Base class of a GAN family; subclasses override the builders and the losses.

    The engine calls, per iteration (after optional generator-only pretraining):

    1. ``out = family.generator_forward(G, batch)`` with the DDP-wrapped generator;
    2. ``family.discriminator_loss(D, family.restored(out).detach(), batch)`` with the
       DDP-wrapped discriminator (both real and fake forwards happen inside);
    3. ``family.generator_loss(D_frozen, out, batch)`` with the unwrapped, frozen
       discriminator (gradients flow to G only).

    During pretraining only ``family.content_loss(out, batch)`` is used. Families whose
    discriminator is switched off (``build_discriminator`` returns None) are trained with
    ``generator_loss(None, out, batch)`` which must then omit the adversarial term.
    """

    name: ClassVar[str] = ""
    #: data task used when the config does not name one (see raygan.datasets.degradations)
    task: ClassVar[str] = "jpeg"
    #: the paper's evaluation protocol (raygan.platform.evaluation.PROTOCOLS)
    eval_protocol: ClassVar[str] = "rgb"
    #: per model channel count, where the paper's tables differ (WCDGAN: Table 1 on Y,
    #: Table 2 on RGB); channel counts not listed use ``eval_protocol``
    eval_protocol_by_channels: ClassVar[Dict[int, str]] = {}
    #: ``(tile, overlap)``: evaluation restores whole images in tiles of this many input
    #: pixels (raygan.platform.core.tiling), for generators whose memory grows faster than the
    #: image (DAGAN's self-attention); None: whole images in one pass
    eval_tile: ClassVar[Optional[Tuple[int, int]]] = None
    #: dataclass types of the ``model:`` and ``loss:`` config sections
    ModelConfig: ClassVar[type] = type("EmptyModelConfig", (), {})
    LossConfig: ClassVar[type] = type("EmptyLossConfig", (), {})
    #: YAML file in models/configs holding the paper's defaults
    default_config: ClassVar[str] = ""

    #: weight searches, by name: ``{dotted config key: {distribution: [args]}}`` with
    #: distributions uniform [low, high], loguniform [low, high], choice [values...] and
    #: grid [values...] (the format of a user's space YAML; see raygan.platform.sweep)
    search_spaces: ClassVar[Dict[str, Dict[str, Dict[str, list]]]] = {}
    #: the paper's ablation, by the paper's variant names: ``{name: {dotted key: value}}``
    #: (overrides of the sweep's base config; ``{}`` is the full model)
    ablations: ClassVar[Dict[str, Dict[str, Any]]] = {}

    #: the generator's loss terms (keys of :data:`LOSS_VOCABULARY`): each is also its weight
    #: key under ``loss.`` and its log key ``g_<term>``
    loss_terms: ClassVar[Tuple[str, ...]] = ()
    #: the terms of generator-only pretraining (a subset of ``loss_terms``)
    content_terms: ClassVar[Tuple[str, ...]] = ()
    #: loss keys of configs written before the terms were named alike -> today's key;
    #: a stored run's config is translated when it is loaded (:meth:`translate_loss_keys`)
    renamed_loss_keys: ClassVar[Dict[str, str]] = {}

    #: VGG19 weights spec ("auto" | path | "random"); the engine sets it from
    #: train.perceptual_weights before ``setup``
    perceptual_weights: str = "auto"

    def __init__(self, model_cfg: Any = None, loss_cfg: Any = None, data_cfg: Any = None):
        self.model_cfg = model_cfg if model_cfg is not None else self.ModelConfig()
        self.loss_cfg = loss_cfg if loss_cfg is not None else self.LossConfig()
        self.data_cfg = data_cfg
        self.channels = getattr(data_cfg, "channels", 3) if data_cfg is not None else 3
        self.perceptual: Optional[PerceptualLoss] = None

    @classmethod
    def ablation_variants(cls, cfg: Any) -> Dict[str, Dict[str, Any]]:
        """The ablation's variants for base config ``cfg`` (default: :attr:`ablations`)."""
        return dict(cls.ablations)

    @classmethod
    def translate_loss_keys(cls, section: Any) -> Any:
        """A ``loss:`` mapping with :attr:`renamed_loss_keys` under today's names (a config
        stored by an older raygan, or a user's old YAML)."""
        if not isinstance(section, dict):
            return section
        out = dict(section)
        for old, new in cls.renamed_loss_keys.items():
            if old in out:
                if new in out:
                    raise ConfigError(f"loss.{old} and loss.{new} set one weight ({old} is its old "
                                      f"name): keep loss.{new}")
                out[new] = out.pop(old)
        return out

    @classmethod
    def paper_protocol(cls, channels: int) -> str:
        """The evaluation protocol of the paper's table for a model of ``channels`` channels."""
        return cls.eval_protocol_by_channels.get(int(channels), cls.eval_protocol)

    @classmethod
    def config_dir(cls) -> Path:
        """The folder of the family's YAML files (package data: ``<module dir>/configs``)."""
        return Path(inspect.getfile(cls)).resolve().parent / "configs"

    # -- builders ---------------------------------------------------------------------
    def build_generator(self) -> nn.Module:
        raise NotImplementedError

    def build_discriminator(self) -> Optional[nn.Module]:
        return None

    def perceptual_spec(self) -> Optional[Tuple[str, str]]:
        """``(VGG19 layer, criterion)`` of the family's perceptual term, None when off."""
        return None

    def setup(self, device: torch.device) -> None:
        """Build the loss networks (the VGG19 of the perceptual term) on ``device``; the
        engine calls it once per worker, and :meth:`perceptual_distance` on first use."""
        spec = self.perceptual_spec()
        if spec is not None:
            layer, criterion = spec
            self.perceptual = PerceptualLoss(layer, self.perceptual_weights, criterion).to(device)

    @property
    def perceptual_init(self) -> str:
        """What the perceptual network was initialised from, for run parameters."""
        return self.perceptual.init if self.perceptual is not None else "unused"

    def perceptual_distance(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.perceptual is None:
            self.setup(out.device)
        return self.perceptual(out, target)

    # -- forward and losses -----------------------------------------------------------
    def generator_forward(self, G: nn.Module, batch: Dict[str, torch.Tensor]) -> Any:
        return G(batch["input"])

    #: generator inputs, at target resolution, must be multiples of this (PAN's U-Net: 2**depth)
    size_multiple: int = 1

    def restore_any_size(self, G: nn.Module, x: torch.Tensor, upscale: int = 1) -> torch.Tensor:
        """The restored image of an input ``x`` of any size (validation, evaluation, serving):
        reflect-padded to what ``G`` needs (``size_multiple`` at target resolution), restored,
        cropped back to ``upscale`` x the input size."""
        multiple = max(1, -(-int(self.size_multiple) // upscale))
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.restored(self.generator_forward(G, {"input": x}))
        return out[..., :h * upscale, :w * upscale]

    def restored(self, out: Any) -> torch.Tensor:
        """The restored image in [0, 1] from the generator output (for D, metrics, grids)."""
        return out

    def term_weight(self, term: str) -> float:
        """The weight of ``term``: ``loss.<term>``."""
        return float(getattr(self.loss_cfg, term))

    def active_terms(self, terms: Tuple[str, ...]) -> Tuple[str, ...]:
        """Those of ``terms`` that count: weight > 0."""
        return tuple(t for t in terms if self.term_weight(t) > 0)

    def compute_terms(self, D: Optional[nn.Module], out: Any, batch: Dict[str, torch.Tensor],
                      terms: Tuple[str, ...]) -> Dict[str, torch.Tensor]:
        """The unweighted values of ``terms`` (scalars). Adversarial terms are left out when
        ``D`` is None (pretraining, or no discriminator)."""
        raise NotImplementedError

    def weighted_loss(self, values: Dict[str, torch.Tensor]) -> LossAndLogs:
        """``sum(loss.<term> x value)`` and the logs ``g_<term>`` (unweighted)."""
        if not values:
            raise ConfigError(f"{self.name}: every loss term in use has weight 0 "
                              f"(loss.{', loss.'.join(self.loss_terms)})")
        total = None
        for term, value in values.items():
            weighted = self.term_weight(term) * value
            total = weighted if total is None else total + weighted
        return total, {f"g_{t}": float(v.detach()) for t, v in values.items()}

    def content_loss(self, out: Any, batch: Dict[str, torch.Tensor]) -> LossAndLogs:
        """Generator-only pretraining: the weighted :attr:`content_terms`."""
        return self.weighted_loss(self.compute_terms(None, out, batch, self.active_terms(self.content_terms)))

    def generator_loss(self, D: Optional[nn.Module], out: Any, batch) -> LossAndLogs:
        """The weighted :attr:`loss_terms` (the adversarial ones only with a ``D``)."""
        return self.weighted_loss(self.compute_terms(D, out, batch, self.active_terms(self.loss_terms)))

    def discriminator_loss(self, D: nn.Module, fake: torch.Tensor, batch) -> LossAndLogs:
        """Unconditional D on the target (real) and the restored image (fake), with
        ``loss.gan_kind``; families with conditional or multi-scale D override this."""
        kind = self.loss_cfg.gan_kind
        d_real = gan_loss(kind, D(batch["target"]), real=True)
        d_fake = gan_loss(kind, D(fake.detach()), real=False)
        return d_real + d_fake, {"d_real": float(d_real.detach()), "d_fake": float(d_fake.detach())}

    def adversarial_term(self, D: Optional[nn.Module], fake: torch.Tensor) -> Optional[torch.Tensor]:
        """The generator's adversarial loss on ``fake`` with ``loss.gan_kind`` (None without D)."""
        if D is None:
            return None
        return gan_loss(self.loss_cfg.gan_kind, D(fake), real=True, for_discriminator=False)

    # -- description --------------------------------------------------------------------
    def task_tag(self) -> str:
        """Short task name used in registered model names, e.g. ``jpeg-q10-rgb``."""
        return self.task if self.data_cfg is None else task_tag(self.data_cfg)


def _check_family(cls: Type[GANFamily]) -> None:
    if not (isinstance(cls, type) and issubclass(cls, GANFamily)) or not cls.name:
        raise ValueError(f"{cls!r} must be a GANFamily subclass that sets a family name")
    for section in ("ModelConfig", "LossConfig"):
        if not dataclasses.is_dataclass(getattr(cls, section)):
            raise TypeError(f"{cls.__name__}.{section} must be a dataclass")
    # one shape for loss terms: named from the vocabulary, each weighted by loss.<term>
    fields = {f.name for f in dataclasses.fields(cls.LossConfig)}
    unknown = [t for t in cls.loss_terms if t not in LOSS_VOCABULARY]
    unweighted = [t for t in cls.loss_terms if t not in fields]
    if not cls.loss_terms or unknown or unweighted or not set(cls.content_terms) <= set(cls.loss_terms):
        raise TypeError(f"{cls.__name__}.loss_terms {cls.loss_terms!r}: each must be a term of "
                        f"LOSS_VOCABULARY (not {unknown}) with its weight loss.<term> in LossConfig "
                        f"(missing {unweighted}), and content_terms a subset of them")


#: class decorator: ``@register_family`` puts a family into raygan.platform.core.registry.FAMILIES
register_family = FAMILIES.decorator(_check_family)

__all__ = ["ConfigError", "GANFamily", "LOSS_VOCABULARY", "LossAndLogs", "register_family"]
