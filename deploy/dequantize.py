"""DequantizerNet's "very simple API": ``quantize(image, quality)`` and ``dequantize(image, model)``.

    from raygan.deploy.dequantize import quantize, dequantize
    low = quantize(Image.open("photo.png"), quality=1)        # JPEG-degrade
    restored = dequantize(low, "models:/raygan-dequantizer-gimel/latest")

Images are PIL images (mode L, RGB; RGBA/P/... are converted to RGB) or uint8 numpy arrays
(H x W or H x W x 3). Both functions return the same kind they were given (a PIL image of
the same mode family, or a uint8 array of the same shape layout).

``model`` is a generator ``nn.Module`` (taking (B, C, H, W) in [0, 1]) or anything
``raygan.platform.restorer.load_generator`` accepts: ``models:/name/version``, ``runs:/...``,
a local or ``s3://`` checkpoint directory. Loaded models are cached per URI.

No padding is needed: DequantizerNet's generator is fully convolutional with stride-1 convs
(U = 0 for JPEG restoration; with U > 0 the output is simply 2**U times larger, and any input
size works as well), so images of any size, odd ones included, go through unchanged.
"""

from __future__ import annotations

import functools
from typing import Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from raygan.datasets.degradations import jpeg
from raygan.platform.restorer import load_generator

ImageLike = Union[Image.Image, np.ndarray]


def _to_array(image: ImageLike, what: str) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"{what}: expected a uint8 array, got dtype {image.dtype}")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise ValueError(f"{what}: expected an H x W or H x W x 3 array, got shape {image.shape}")
        return image
    raise TypeError(f"{what}: expected a PIL image or a uint8 numpy array, got {type(image).__name__}")


def _like(arr: np.ndarray, original: ImageLike) -> ImageLike:
    if isinstance(original, Image.Image):
        return Image.fromarray(arr)
    if original.ndim == 3 and original.shape[2] == 1 and arr.ndim == 2:
        return arr[..., None]
    return arr


def quantize(image: ImageLike, quality: int) -> ImageLike:
    """JPEG-compress and decode ``image`` at ``quality`` (1..100), like the training data.

    Calls ``raygan.datasets.degradations.jpeg``, the training data's degradation (PIL/libjpeg,
    standard tables scaled by quality, 4:2:0 chroma for RGB, grayscale JPEG for L).
    """

    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise ValueError(f"quality: JPEG quality must be an integer in 1..100, got {quality!r}")
    arr = _to_array(image, "quantize image")
    return _like(np.ascontiguousarray(jpeg(arr, int(quality))), image)


@functools.lru_cache(maxsize=4)
def _load(uri: str) -> nn.Module:
    loaded = load_generator(uri)
    model = loaded[0] if isinstance(loaded, tuple) else loaded
    if not isinstance(model, nn.Module):
        raise TypeError(f"model {uri!r}: the loader returned {type(model).__name__}, not a module")
    return model.eval()


def _in_channels(model: nn.Module) -> int:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return -1  # unknown: let the forward pass decide


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def dequantize(image: ImageLike, model: Union[nn.Module, str]) -> ImageLike:
    """Restore a JPEG-degraded ``image`` with a generator (module or URI); same kind out."""
    if isinstance(model, str):
        model = _load(model)
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module or a model URI string, got {type(model).__name__}")
    arr = _to_array(image, "dequantize image")
    channels = 1 if arr.ndim == 2 else 3
    expected = _in_channels(model)
    if expected not in (-1, channels):
        raise ValueError(f"dequantize: the model takes {expected}-channel images but the image "
                         f"has {channels} channel(s); convert it (e.g. PIL .convert('RGB'/'L'))")
    x = torch.from_numpy(arr.astype(np.float32) / 255.0)
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
    was_training = model.training
    model.eval()
    try:
        y = model(x.to(_device(model)))
    finally:
        model.train(was_training)
    y = y.float().clamp(0, 1)[0].cpu()
    out = (y * 255.0 + 0.5).floor().to(torch.uint8)
    out = out[0].numpy() if out.shape[0] == 1 else out.permute(1, 2, 0).numpy()
    return _like(np.ascontiguousarray(out), image)


__all__ = ["dequantize", "quantize"]
