"""Building blocks shared by the families.

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


__all__ = ["skip_base", "zero_init_"]
