"""The family registry: a GAN family declares itself once and the engine builds it by name.

A family is a subclass of :class:`GANFamily` decorated with :func:`register_family`. It
names its typed ``model`` and ``loss`` config sections (dataclasses), its default data
task and its default YAML, builds its generator and discriminator, and computes its
losses. The engine (``raygan.platform.engine``) owns everything else: devices, DDP
wrapping, optimizers, schedulers, AMP, EMA, clipping, checkpoints, validation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Dict, Optional, Tuple, Type

import torch
from torch import nn

LossAndLogs = Tuple[torch.Tensor, Dict[str, float]]

_FAMILIES: Dict[str, Type["GANFamily"]] = {}

CONFIG_DIR = Path(__file__).resolve().parent.parent / "jobs" / "configs"


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
    #: dataclass types of the ``model:`` and ``loss:`` config sections
    ModelConfig: ClassVar[type] = type("EmptyModelConfig", (), {})
    LossConfig: ClassVar[type] = type("EmptyLossConfig", (), {})
    #: YAML file in jobs/configs holding the paper's defaults
    default_config: ClassVar[str] = ""

    #: VGG19 weights spec ("auto" | path | "random"); the engine sets it from
    #: train.perceptual_weights before ``setup``
    perceptual_weights: str = "auto"

    def __init__(self, model_cfg: Any, loss_cfg: Any, data_cfg: Any = None):
        self.model_cfg = model_cfg
        self.loss_cfg = loss_cfg
        self.data_cfg = data_cfg
        self.channels = getattr(data_cfg, "channels", 3) if data_cfg is not None else 3

    # -- builders ---------------------------------------------------------------------
    def build_generator(self) -> nn.Module:
        raise NotImplementedError

    def build_discriminator(self) -> Optional[nn.Module]:
        return None

    def setup(self, device: torch.device) -> None:
        """Build loss networks (e.g. VGG features) on ``device``; called once per worker."""

    # -- forward and losses -----------------------------------------------------------
    def generator_forward(self, G: nn.Module, batch: Dict[str, torch.Tensor]) -> Any:
        return G(batch["input"])

    def restored(self, out: Any) -> torch.Tensor:
        """The restored image in [0, 1] from the generator output (for D, metrics, grids)."""
        return out

    def content_loss(self, out: Any, batch: Dict[str, torch.Tensor]) -> LossAndLogs:
        raise NotImplementedError

    def generator_loss(self, D: Optional[nn.Module], out: Any, batch) -> LossAndLogs:
        """Default: ``content_loss`` + ``loss.adversarial`` x the adversarial term."""
        total, logs = self.content_loss(out, batch)
        weight = float(getattr(self.loss_cfg, "adversarial", 0.0))
        adv = self.adversarial_term(D, self.restored(out), weight)
        if adv is not None:
            total = total + weight * adv
            logs["g_adv"] = float(adv.detach())
        logs["g_total"] = float(total.detach())
        return total, logs

    def discriminator_loss(self, D: nn.Module, fake: torch.Tensor, batch) -> LossAndLogs:
        """Unconditional D on the target (real) and the restored image (fake), with
        ``loss.gan_kind``; families with conditional or multi-scale D override this."""
        from raygan.platform.losses import gan_loss

        kind = self.loss_cfg.gan_kind
        d_real = gan_loss(kind, D(batch["target"]), real=True)
        d_fake = gan_loss(kind, D(fake.detach()), real=False)
        total = d_real + d_fake
        return total, {"d_real": float(d_real.detach()), "d_fake": float(d_fake.detach()),
                       "d_total": float(total.detach())}

    def adversarial_term(self, D: Optional[nn.Module], fake: torch.Tensor,
                         weight: float) -> Optional[torch.Tensor]:
        """The generator's adversarial loss on ``fake`` (None without D or with weight 0)."""
        if D is None or weight <= 0:
            return None
        from raygan.platform.losses import gan_loss

        return gan_loss(self.loss_cfg.gan_kind, D(fake), real=True, for_discriminator=False)

    # -- description --------------------------------------------------------------------
    def task_tag(self) -> str:
        """Short task name used in registered model names, e.g. ``jpeg-q10-rgb``."""
        if self.data_cfg is None:
            return self.task
        from raygan.datasets.degradations import task_tag

        return task_tag(self.data_cfg)


def register_family(cls: Type[GANFamily]) -> Type[GANFamily]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a family name")
    for section in ("ModelConfig", "LossConfig"):
        if not dataclasses.is_dataclass(getattr(cls, section)):
            raise TypeError(f"{cls.__name__}.{section} must be a dataclass")
    if cls.name in _FAMILIES and _FAMILIES[cls.name] is not cls:
        raise ValueError(f"family {cls.name!r} is registered twice")
    _FAMILIES[cls.name] = cls
    return cls


def get_family(name: str) -> Type[GANFamily]:
    import raygan.models  # noqa: F401  (importing the package registers every family)

    try:
        return _FAMILIES[name]
    except KeyError:
        known = ", ".join(sorted(_FAMILIES)) or "none"
        raise KeyError(f"unknown family {name!r}; registered families: {known}") from None


def families() -> Dict[str, Type[GANFamily]]:
    import raygan.models  # noqa: F401

    return dict(_FAMILIES)
