"""BT.601 studio-range YCbCr, the one colour conversion of raygan (MATLAB ``rgb2ycbcr``,
BasicSR ``to_y_channel``): the metrics' Y channel, the Y-channel tasks' luma and the serving
path's luma/chroma split all use these coefficients.

    Y  = 16  + ( 65.481 R + 128.553 G +  24.966 B)
    Cb = 128 + (-37.797 R -  74.203 G + 112.0   B)
    Cr = 128 + (112.0   R -  93.786 G -  18.214 B)      (R, G, B in [0, 1]; Y, Cb, Cr in [0, 255])
"""
from __future__ import annotations

import numpy as np
import torch

#: rows Y, Cb, Cr; columns R, G, B in [0, 1]; results on the [0, 255] scale before the offsets
BT601 = ((65.481, 128.553, 24.966), (-37.797, -74.203, 112.0), (112.0, -93.786, -18.214))
BT601_OFFSET = (16.0, 128.0, 128.0)


def _matrix(x: torch.Tensor) -> torch.Tensor:
    return x.new_tensor(BT601)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> YCbCr in [0, 1] (each channel's [0, 255] value / 255)."""
    off = x.new_tensor(BT601_OFFSET).view(1, 3, 1, 1)
    return (torch.einsum("ij,bjhw->bihw", _matrix(x), x) + off) / 255.0


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`rgb_to_ycbcr` (not clamped)."""
    off = x.new_tensor(BT601_OFFSET).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_matrix(x)), x * 255.0 - off)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Y on the [0, 255] scale from (B, C, H, W) images in [0, 1], float64, not rounded. One
    channel is already Y, so ``x * 255``."""
    x = x.to(torch.float64)
    if x.shape[1] == 1:
        return x * 255.0
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects 1 or 3 channels, got {x.shape[1]}")
    kr, kg, kb = BT601[0]
    return BT601_OFFSET[0] + kr * x[:, 0:1] + kg * x[:, 1:2] + kb * x[:, 2:3]


def rgb_to_y_uint8(img: np.ndarray) -> np.ndarray:
    """Y of a uint8 HxWx3 RGB image as uint8 HxW: ``round(16 + (65.481 R + ...) / 255)``.
    MATLAB rounds halves away from zero, hence ``floor(y + 0.5)`` (Y is always positive)."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_y_uint8: expected uint8 HxWx3 RGB, got {img.dtype} {img.shape}")
    f = img.astype(np.float64)
    kr, kg, kb = BT601[0]
    y = BT601_OFFSET[0] + (kr * f[..., 0] + kg * f[..., 1] + kb * f[..., 2]) / 255.0
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)
