"""Non-learned baselines, evaluable like any generator: (B, C, H, W) in [0, 1] -> restored.

* ``Identity`` ("input"): the degraded input as-is.
* ``ZeroPadding`` ("zp"), ``MIG`` ("mig"), ``BitReplication`` ("br"): re-expand a k-bit
  input. Whatever expansion produced the 8-bit input (ZP, MIG or BR), its top k bits are the
  k-bit code, so ``q = round(255 x) >> (8 - k)`` recovers it; then

  - ZP:  ``q << (8 - k)``                      (zeros in the low bits)
  - MIG: ``round(q * 255 / (2^k - 1))``        (multiplication by the ideal gain; 2^k - 1 is
    odd, so no value ever falls on a .5 tie)
  - BR:  the k bits repeated from the MSB down, truncated to 8 bits
    (e.g. k = 3, q = 101b -> 10110110b = 182)

* ``Bicubic(scale)`` ("bicubic"): bicubic upsampling by ``scale`` for SR inputs (the target
  size is the input size times ``scale``) with PIL's / MATLAB's kernel (a = -0.5), rounded
  to 8-bit levels and clamped to [0, 1].

All are ``nn.Module`` s without parameters. ``BASELINES[name](data_cfg)`` builds one from the
run's data config (``bits`` / ``scale``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict

import numpy as np
import torch
from torch import nn

EXPANSIONS = ("zp", "mig", "br")


def _check_bits(bits: int) -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 7:
        raise ValueError(f"bits: bit depth must be an integer in 1..7, got {bits!r}")
    return bits


def expand_bits(q: torch.Tensor, bits: int, method: str) -> torch.Tensor:
    """Expand integer k-bit codes ``q`` (any integer dtype) to 8-bit values (int64)."""
    _check_bits(bits)
    q = q.long()
    if method == "zp":
        return q << (8 - bits)
    if method == "mig":
        # exact integer rounding of q * 255 / (2^k - 1): floor((2 q 255 + d) / 2d)
        d = (1 << bits) - 1
        return torch.div(2 * q * 255 + d, 2 * d, rounding_mode="floor")
    if method == "br":
        out = torch.zeros_like(q)
        shift = 8 - bits
        while shift > -bits:
            out = out | (q << shift if shift >= 0 else q >> -shift)
            shift -= bits
        return out & 255
    raise ValueError(f"expansion method {method!r} is not one of {', '.join(EXPANSIONS)}")


class Identity(nn.Module):
    """The degraded input, unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Reexpand(nn.Module):
    method = ""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = _check_bits(bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = torch.round(x.float().clamp(0, 1) * 255).long() >> (8 - self.bits)
        return (expand_bits(codes, self.bits, self.method).float() / 255).to(x.dtype)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class ZeroPadding(_Reexpand):
    """k-bit code shifted to the MSBs, low bits zero."""

    method = "zp"


class MIG(_Reexpand):
    """Multiplication by the ideal gain 255 / (2^k - 1), rounded."""

    method = "mig"


class BitReplication(_Reexpand):
    """The k-bit code repeated into the low bits."""

    method = "br"


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


@functools.lru_cache(maxsize=64)
def _upsample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) bicubic weights exactly as PIL's resampler computes them for enlarging:
    cubic a = -0.5, support 2, window clipped to the image and renormalised at the borders."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - 2 + 0.5), 0)
        hi = min(int(center + 2 + 0.5), n_in)
        xs = np.arange(lo, hi)
        w = _cubic(xs - center + 0.5)
        m[i, lo:hi] = w / w.sum()
    return m


class Bicubic(nn.Module):
    """Bicubic x``scale`` upsampling of an SR input to the target size (input size * scale).

    Same kernel and border handling as PIL's ``Image.resize(..., BICUBIC)`` (a = -0.5, as
    MATLAB ``imresize``), which ``raygan.datasets.degradations.bicubic_up`` uses; the result is
    two separable passes (horizontal first) each rounded to 8-bit levels and clamped to [0, 1],
    like PIL's uint8 intermediate; within 1 grey level of PIL, which works in fixed point.
    """

    def __init__(self, scale: int):
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"scale: must be an integer >= 1, got {scale!r}")
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1:
            return x
        h, w = x.shape[-2:]
        mh = torch.from_numpy(_upsample_matrix(h, h * self.scale)).to(x.device, torch.float32)
        mw = torch.from_numpy(_upsample_matrix(w, w * self.scale)).to(x.device, torch.float32)
        # two passes, horizontal first, with an 8-bit intermediate image, as PIL does
        y = self._to_8bit(torch.einsum("bchw,pw->bchp", x.float(), mw))
        y = self._to_8bit(torch.einsum("oh,bchp->bcop", mh, y))
        return y.to(x.dtype)

    @staticmethod
    def _to_8bit(y: torch.Tensor) -> torch.Tensor:
        return torch.floor(y.clamp(0, 1) * 255 + 0.5) / 255

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _bits(cfg: Any) -> int:
    return _check_bits(getattr(cfg, "bits", 4) if cfg is not None else 4)


BASELINES: Dict[str, Callable[[Any], nn.Module]] = {
    "input": lambda cfg: Identity(),
    "zp": lambda cfg: ZeroPadding(_bits(cfg)),
    "mig": lambda cfg: MIG(_bits(cfg)),
    "br": lambda cfg: BitReplication(_bits(cfg)),
    "bicubic": lambda cfg: Bicubic(getattr(cfg, "scale", 4) if cfg is not None else 4),
}


def build_baseline(name: str, data_cfg: Any = None) -> nn.Module:
    try:
        factory = BASELINES[name]
    except KeyError:
        raise KeyError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}") from None
    return factory(data_cfg).eval()


__all__ = ["BASELINES", "Bicubic", "BitReplication", "EXPANSIONS", "Identity", "MIG",
           "ZeroPadding", "build_baseline", "expand_bits"]
