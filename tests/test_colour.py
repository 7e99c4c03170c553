"""The one BT.601 conversion (platform/core/colour.py) that metrics, the Y-channel tasks and
the serving path share: its three outputs agree with each other and with MATLAB's values."""
import numpy as np
import torch

from raygan.platform.core import colour


def test_y_is_the_same_number_in_every_form():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1, 3, 5, 7), dtype=np.uint8)
    x = torch.from_numpy(img).double() / 255.0
    y = colour.rgb_to_y(x)
    ycbcr = colour.rgb_to_ycbcr(x)
    assert torch.allclose(ycbcr[:, :1] * 255.0, y)
    y8 = colour.rgb_to_y_uint8(img[0].transpose(1, 2, 0))
    assert np.array_equal(y8, np.floor(y[0, 0].numpy() + 0.5).astype(np.uint8))


def test_matlab_values_and_round_trip():
    white, black = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    assert colour.rgb_to_y(white).item() == 235.0 and colour.rgb_to_y(black).item() == 16.0
    assert torch.allclose(colour.rgb_to_ycbcr(black).flatten() * 255.0, torch.tensor([16.0, 128.0, 128.0]))
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)
    assert torch.allclose(colour.ycbcr_to_rgb(colour.rgb_to_ycbcr(x)), x, atol=1e-12)
    assert torch.equal(colour.rgb_to_y(torch.full((1, 1, 2, 2), 0.5)), torch.full((1, 1, 2, 2), 127.5, dtype=torch.float64))
