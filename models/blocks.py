"""Building blocks shared by the families: the input skip and the SRGAN-style discriminator.

Input skip with an identity-initialised output (``input_skip`` in a family's model config):
the generator predicts a correction that is added to a *base* image built from its input
(the input itself, or its bicubic upsampling for super-resolution), and the layer that
produces the correction starts at zero. The untrained generator is then exactly the
degraded input (or bicubic), and training can only move away from it where the loss says
so. This is what makes short CPU runs restore instead of first relearning the identity;
it is a documented deviation in the CPU presets of families whose papers draw no such
skip, and off in the paper configs.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def zero_init_(layer: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias (in place): its output starts at 0."""
    with torch.no_grad():
        for name in ("weight", "bias"):
            p = getattr(layer, name, None)
            if p is not None:
                p.zero_()
    return layer


def skip_base(x: torch.Tensor, size=None) -> torch.Tensor:
    """The base image of an input skip: ``x``, or ``x`` bicubic-resized to ``size`` (clamped)."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False).clamp(0, 1)


def srgan_stages(base: int = 64) -> Tuple[Tuple[int, int], ...]:
    """SRGAN's discriminator convolutions as (width, stride): 8 layers, 64 -> 512, stride 2
    every other layer (16x smaller maps)."""
    return tuple((base * m, s) for m, s in ((1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2),
                                            (8, 1), (8, 2)))


class VGGStyleDiscriminator(nn.Module):
    """The SRGAN-style discriminator every family but PAN uses, configured per paper.

    ``stages``: (width, stride) of each 3x3 convolution; the first has no BatchNorm
    (SRGAN). Each later one is conv -> BN -> activation, or conv -> activation -> BN with
    ``norm_after_act`` (WCDGAN's text). ``after``: {conv index: factory(width)} modules
    inserted after that layer (DAGAN's self-attention). Head: ``AdaptiveAvgPool2d(pool)``
    -> flatten -> dense ``fc`` -> activation -> dense 1, a raw score (no sigmoid: the GAN
    loss applies what it needs). The pool makes the head independent of the patch size and
    is the identity when the features already are ``pool`` x ``pool`` (SRGAN's flattened
    head); ``image_size`` instead insists on one input size.
    """

    def __init__(self, channels: int, stages: Sequence[Tuple[int, int]], *, slope: float = 0.2,
                 norm_after_act: bool = False, pool: int = 1, fc: int = 1024,
                 after: Optional[Dict[int, Callable[[int], nn.Module]]] = None,
                 image_size: Optional[int] = None):
        super().__init__()
        act = (lambda: nn.LeakyReLU(slope, inplace=True)) if slope > 0 else (lambda: nn.ReLU(inplace=True))
        layers, in_ch = [], channels
        for i, (width, stride) in enumerate(stages):
            layers.append(nn.Conv2d(in_ch, width, 3, stride=stride, padding=1))
            if i == 0:
                layers.append(act())
            elif norm_after_act:
                layers += [act(), nn.BatchNorm2d(width)]
            else:
                layers += [nn.BatchNorm2d(width), act()]
            if after and i in after:
                layers.append(after[i](width))
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.image_size = image_size
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_ch * pool * pool, fc), act(),
                                  nn.Linear(fc, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_size is not None and tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(f"discriminator built for {self.image_size}x{self.image_size} "
                             f"images (data.patch), got {tuple(x.shape[-2:])}")
        return self.head(self.pool(self.features(x)))  # (B, 1)


__all__ = ["VGGStyleDiscriminator", "skip_base", "srgan_stages", "zero_init_"]
