"""PSNR/SSIM against scikit-image on real photos bundled with scikit-image (no downloads)."""

import math
import os

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from raygan.platform.core.metrics import (
    METRIC_CONVENTIONS, metric_conventions, psnr, quantize_uint8, rgb_to_y, ssim,
)

DATA = os.path.join(os.path.dirname(skimage.__file__), "data")


def _photo(name, size=128):
    img = np.asarray(Image.open(os.path.join(DATA, name)))
    if img.ndim == 3:
        img = img[..., :3]
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def _degrade(img, seed):
    """A JPEG-like degradation: noise plus 4x4 block averaging, as uint8."""
    rng = np.random.default_rng(seed)
    f = img.astype(np.float64)
    h, w = f.shape[:2]
    blocks = f.reshape(h // 4, 4, w // 4, 4, *f.shape[2:]).mean(axis=(1, 3))
    blocky = np.repeat(np.repeat(blocks, 4, axis=0), 4, axis=1)
    out = 0.5 * f + 0.5 * blocky + rng.normal(0, 6, f.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _tensor(img):
    t = torch.from_numpy(img.astype(np.float32) / 255.0)
    return (t.permute(2, 0, 1) if t.dim() == 3 else t[None])[None]


def _y(img):
    f = img.astype(np.float64) / 255.0
    return 16.0 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]


def _sk_ssim(a, b, channel_axis=None):
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=255,
                                 channel_axis=channel_axis)


PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png"]


def _batch():
    clean = [_photo(n) for n in PHOTOS]
    noisy = [_degrade(c, i) for i, c in enumerate(clean)]
    pred = torch.cat([_tensor(x) for x in noisy])
    target = torch.cat([_tensor(x) for x in clean])
    return clean, noisy, pred, target


def test_rgb_matches_skimage():
    clean, noisy, pred, target = _batch()
    p, s = psnr(pred, target), ssim(pred, target)
    assert p.shape == s.shape == (3,) and p.dtype == torch.float64
    for i in range(3):
        c, n = clean[i].astype(np.float64), noisy[i].astype(np.float64)
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(c, n, data_range=255), abs=1e-6)
        assert s[i].item() == pytest.approx(_sk_ssim(n, c, channel_axis=2), abs=1e-4)
    assert 0.3 < s.min() and s.max() < 0.99  # a real, non-trivial comparison


def test_y_matches_skimage():
    clean, noisy, pred, target = _batch()
    p, s = psnr(pred, target, y=True), ssim(pred, target, y=True)
    for i in range(3):
        yc, yn = _y(clean[i]), _y(noisy[i])
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(yc, yn, data_range=255), abs=1e-6)
        assert s[i].item() == pytest.approx(_sk_ssim(yn, yc), abs=1e-4)


def test_border_crop_matches_skimage():
    clean, noisy, pred, target = _batch()
    b = 4
    s = ssim(pred, target, border=b, y=True)
    p = psnr(pred, target, border=b)
    for i in range(3):
        yc, yn = _y(clean[i])[b:-b, b:-b], _y(noisy[i])[b:-b, b:-b]
        assert s[i].item() == pytest.approx(_sk_ssim(yn, yc), abs=1e-4)
        c, n = clean[i][b:-b, b:-b].astype(float), noisy[i][b:-b, b:-b].astype(float)
        assert p[i].item() == pytest.approx(peak_signal_noise_ratio(c, n, data_range=255), abs=1e-6)


def test_single_channel_is_already_y():
    clean = _photo("camera.png")
    noisy = _degrade(clean, 7)
    pred, target = _tensor(noisy), _tensor(clean)
    assert pred.shape == (1, 1, 128, 128)
    c, n = clean.astype(np.float64), noisy.astype(np.float64)
    assert psnr(pred, target, y=True).item() == pytest.approx(
        peak_signal_noise_ratio(c, n, data_range=255), abs=1e-6)
    assert ssim(pred, target, y=True).item() == pytest.approx(_sk_ssim(n, c), abs=1e-4)
    # the plain (non-Y) path on one channel against scikit-image too, not against the Y path
    assert psnr(pred, target).item() == pytest.approx(peak_signal_noise_ratio(c, n, data_range=255), abs=1e-6)
    assert ssim(pred, target).item() == pytest.approx(_sk_ssim(n, c), abs=1e-4)


def test_quantization_and_y_values():
    x = torch.tensor([-0.5, 0.0, 0.5, 1.0 / 255 * 0.49, 1.0, 1.5]).view(1, 1, 1, 6)
    assert quantize_uint8(x).flatten().tolist() == [0, 0, 128, 0, 255, 255]
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert torch.allclose(rgb_to_y(white), torch.full((1, 1, 2, 2), 235.0, dtype=torch.float64))
    assert torch.allclose(rgb_to_y(black), torch.full((1, 1, 2, 2), 16.0, dtype=torch.float64))
    # outputs are judged as 8-bit images: a sub-quantum error is invisible
    a = torch.rand(1, 3, 16, 16)
    q = torch.round(a * 255) / 255
    assert math.isinf(psnr(q + 0.4 / 255, q).item())


def test_known_psnr_and_bad_input():
    a = torch.zeros(1, 3, 16, 16)
    b = torch.full((1, 3, 16, 16), 10 / 255)
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255 ** 2 / 100))
    # constant images: mu = 0 and 10, no variance, so SSIM = C1 / (10^2 + C1), C1 = (0.01*255)^2
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b).item() == pytest.approx(c1 / (100 + c1), rel=1e-9)
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, b[:, :, :8])
    with pytest.raises(ValueError, match="border"):
        psnr(a, b, border=8)
    # the limits themselves: a border leaving 2 px, and SSIM's smallest image (one 11x11 window)
    assert psnr(a, b, border=7).item() == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert ssim(a[..., :11, :11], b[..., :11, :11]).item() == pytest.approx(c1 / (100 + c1), rel=1e-9)
    with pytest.raises(ValueError, match="11x11"):
        ssim(a[..., :10, :11], b[..., :10, :11])


def test_conventions_line():
    for part in ("BT.601", "MATLAB", "8-bit", "255", "border", "11x11", "1.5", "Wang"):
        assert part in METRIC_CONVENTIONS
    assert "\n" not in METRIC_CONVENTIONS
    line = metric_conventions(border=4, y=True)
    assert "border crop 4 px" in line and "Y (BT.601" in line
