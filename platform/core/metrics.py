"""Image quality metrics: PSNR, SSIM (Wang et al.) and LPIPS, with explicit conventions.

Inputs are torch tensors (B, C, H, W) in [0, 1]. Outputs are judged as 8-bit images, as
BasicSR and the MATLAB evaluation scripts do: they are first quantized
(``round(clamp(x, 0, 1) * 255)``); PSNR and SSIM then use a data range of 255 and float64
arithmetic. ``y=True`` evaluates the BT.601 luma computed MATLAB-style (``rgb2ycbcr``:
``16 + 65.481 R + 128.553 G + 24.966 B`` on [0, 1] RGB, not rounded) — 1-channel inputs are
already Y. ``border`` pixels are cropped on each side first. Every function returns one
value per image, shape (B,).
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from raygan.platform.core.colour import rgb_to_y
from raygan.platform.core.perceptual import build_lpips

METRIC_CONVENTIONS = (
    "PSNR/SSIM on 8-bit quantized outputs (round(clamp(x,0,1)*255)), data range 255, "
    "Y = BT.601 MATLAB-compatible (16+65.481R+128.553G+24.966B), border crop N px per side, "
    "SSIM Wang et al. Gaussian 11x11 sigma 1.5 K1=0.01 K2=0.03 valid window, mean over channels"
)


def metric_conventions(border: int = 0, y: bool = False) -> str:
    """METRIC_CONVENTIONS for a concrete evaluation (channel and border filled in)."""
    space = "Y (BT.601 MATLAB-compatible)" if y else "all channels"
    return (f"PSNR/SSIM on {space}, 8-bit quantized outputs (round(clamp(x,0,1)*255)), "
            f"data range 255, border crop {border} px per side, SSIM Wang et al. Gaussian "
            f"11x11 sigma 1.5 K1=0.01 K2=0.03 valid window, mean over channels")


def _check(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.dim() != 4 or pred.shape != target.shape:
        raise ValueError(f"metrics expect two (B, C, H, W) tensors of the same shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[1] not in (1, 3):
        raise ValueError(f"metrics expect 1 (Y) or 3 (RGB) channels, got {pred.shape[1]}")


def quantize_uint8(x: torch.Tensor) -> torch.Tensor:
    """``round(clamp(x, 0, 1) * 255)`` as float64 (values 0..255)."""
    return torch.round(x.detach().to(torch.float64).clamp(0, 1) * 255.0)


def _prepare(x: torch.Tensor, border: int, y: bool) -> torch.Tensor:
    q = quantize_uint8(x)
    if y:
        q = rgb_to_y(q / 255.0)
    if border:
        if 2 * border >= min(q.shape[-2:]):
            raise ValueError(f"border {border} leaves nothing of a {tuple(q.shape[-2:])} image")
        q = q[..., border:-border, border:-border]
    return q


def psnr(pred: torch.Tensor, target: torch.Tensor, border: int = 0, y: bool = False) -> torch.Tensor:
    """Per-image PSNR in dB (data range 255); identical images give ``inf``."""
    _check(pred, target)
    a, b = _prepare(pred, border, y), _prepare(target, border, y)
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(255.0 ** 2 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' region only, per channel."""
    c = x.shape[1]
    kh = g.view(1, 1, -1, 1).expand(c, 1, -1, 1)
    kw = g.view(1, 1, 1, -1).expand(c, 1, 1, -1)
    return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)


def ssim(pred: torch.Tensor, target: torch.Tensor, border: int = 0, y: bool = False) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), Gaussian 11x11 sigma 1.5, valid window, range 255.

    Matches ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)`` and BasicSR's ``calculate_ssim``.
    """
    _check(pred, target)
    a, b = _prepare(pred, border, y), _prepare(target, border, y)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {tuple(a.shape[-2:])}")
    g = _gaussian_1d().to(a.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
    var_a = _filter_valid(a * a, g) - mu_a ** 2
    var_b = _filter_valid(b * b, g) - mu_b ** 2
    cov = _filter_valid(a * b, g) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2, 3))


@torch.no_grad()
def lpips_distance(model: torch.nn.Module, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS distance of [0, 1] images (``model`` from ``perceptual.build_lpips``).

    Images are scaled to [-1, 1]; 1-channel images are replicated to 3 channels.
    """
    _check(pred, target)
    param = next(model.parameters())
    x = pred.detach().to(param.device, param.dtype).clamp(0, 1) * 2 - 1
    t = target.detach().to(param.device, param.dtype).clamp(0, 1) * 2 - 1
    if x.shape[1] == 1:
        x, t = x.expand(-1, 3, -1, -1), t.expand(-1, 3, -1, -1)
    return model(x, t).reshape(x.shape[0]).to(torch.float64)


class LPIPSMetric:
    """LPIPS from a weights spec; ``available`` is False when the weights are absent."""

    def __init__(self, spec: str = "auto", device: Optional[torch.device] = None):
        self.model = build_lpips(spec)
        if self.model is not None and device is not None:
            self.model = self.model.to(device)

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            return torch.full((pred.shape[0],), math.nan, dtype=torch.float64)
        return lpips_distance(self.model, pred, target)


#: the scores of :func:`score`, in table order
SCORES = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips")


@torch.no_grad()
def score(pred: torch.Tensor, target: torch.Tensor, border: int = 0,
          lpips: Optional[LPIPSMetric] = None) -> Dict[str, torch.Tensor]:
    """The one scoring function of validation and evaluation: per-image (B,) PSNR and SSIM on
    the channels given and on Y, and LPIPS (NaN without weights or without ``lpips``)."""
    out = {"psnr": psnr(pred, target, border), "ssim": ssim(pred, target, border),
           "psnr_y": psnr(pred, target, border, y=True), "ssim_y": ssim(pred, target, border, y=True)}
    out["lpips"] = (lpips(pred, target) if lpips is not None
                    else torch.full((pred.shape[0],), math.nan, dtype=torch.float64))
    return out


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    """A (C, H, W) or (1, C, H, W) tensor in [0, 1] as an (H, W, 3) uint8 array (gray -> RGB)."""
    x = x[0] if x.dim() == 4 else x
    x = x.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x * 255).round().byte().permute(1, 2, 0).numpy()


def image_grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Rows of (H, W, 3) uint8 images side by side (e.g. degraded | restored | target),
    stacked with ``gap`` black pixels between rows, narrower rows padded on the right."""
    lines = [np.concatenate(list(r), axis=1) for r in rows]
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, gap if i < len(lines) - 1 else 0), (0, width - line.shape[1]), (0, 0)))
             for i, line in enumerate(lines)]
    return np.concatenate(lines, axis=0)


__all__ = [
    "LPIPSMetric", "METRIC_CONVENTIONS", "SCORES", "image_grid", "lpips_distance",
    "metric_conventions", "psnr", "quantize_uint8", "rgb_to_y", "score", "ssim", "to_uint8_image",
]
