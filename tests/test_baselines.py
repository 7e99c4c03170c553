"""Non-learned baselines: exact values, re-expansion from any expansion, bicubic vs PIL."""

import numpy as np
import pytest
import torch

from raygan.models.baselines import (
    BASELINES, MIG, Bicubic, BitReplication, Identity, ZeroPadding, build_baseline, expand_bits,
)
from raygan.platform.core.config import DataConfig


def as_tensor(values_8bit):
    return torch.tensor(values_8bit, dtype=torch.float32).view(1, 1, 1, -1) / 255


def as_8bit(t):
    return (t.flatten() * 255).round().long().tolist()


def test_exact_values_4bit_pattern():
    q = list(range(16))
    zp_input = as_tensor([v << 4 for v in q])  # the 4-bit ramp, zero-padded
    assert as_8bit(MIG(4)(zp_input)) == [17 * v for v in q]       # 255 / 15 = 17
    assert as_8bit(BitReplication(4)(zp_input)) == [17 * v for v in q]  # 0xAB -> 0xAA...
    assert as_8bit(ZeroPadding(4)(zp_input)) == [16 * v for v in q]
    assert as_8bit(Identity()(zp_input)) == [16 * v for v in q]


def test_exact_values_3bit():
    zp_input = as_tensor([v << 5 for v in range(8)])
    assert as_8bit(BitReplication(3)(zp_input)) == [0, 36, 73, 109, 146, 182, 219, 255]  # 101b -> 10110110b
    assert as_8bit(MIG(3)(zp_input)) == [round(v * 255 / 7) for v in range(8)]
    assert as_8bit(ZeroPadding(3)(zp_input)) == [v << 5 for v in range(8)]


@pytest.mark.parametrize("bits", range(1, 8))
@pytest.mark.parametrize("method", ["zp", "mig", "br"])
def test_reexpansion_from_any_expansion_matches_degradations(bits, method):
    from raygan.datasets.degradations import quantize

    img = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = torch.from_numpy(quantize(img, bits, method).astype(np.float32) / 255).view(1, 1, 16, 16)
    for name, cls in (("zp", ZeroPadding), ("mig", MIG), ("br", BitReplication)):
        got = (cls(bits)(x) * 255).round().to(torch.uint8).numpy()[0, 0]
        np.testing.assert_array_equal(got, quantize(img, bits, name), err_msg=f"{method}->{name}")


def test_expand_bits_rejects_bad_input():
    with pytest.raises(ValueError, match="bits"):
        MIG(0)
    with pytest.raises(ValueError, match="expansion"):
        expand_bits(torch.tensor([1]), 4, "nearest")


def test_shapes_rgb_and_no_parameters():
    x = torch.rand(2, 3, 7, 9)
    for name in ("input", "zp", "mig", "br"):
        m = build_baseline(name, DataConfig(bits=5))
        assert m(x).shape == x.shape and not list(m.parameters())
    assert build_baseline("bicubic", DataConfig(scale=3))(x).shape == (2, 3, 21, 27)
    assert set(BASELINES) == {"input", "zp", "mig", "br", "bicubic"}
    assert build_baseline("mig", DataConfig(bits=6)).bits == 6
    with pytest.raises(KeyError, match="unknown baseline"):
        build_baseline("lanczos")


@pytest.mark.parametrize("scale", [2, 4])
def test_bicubic_matches_dataset_bicubic_up(scale):
    from raygan.datasets.degradations import bicubic_up, to_tensor

    rng = np.random.default_rng(0)
    for shape in ((9, 11, 3), (6, 6)):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        ref = to_tensor(bicubic_up(img, (shape[0] * scale, shape[1] * scale)))
        got = Bicubic(scale)(to_tensor(img)[None])[0]
        assert got.shape == ref.shape
        assert (got - ref).abs().max().item() * 255 <= 1.0 + 1e-4  # PIL works in fixed point
    flat = torch.full((1, 3, 5, 5), 0.4)
    torch.testing.assert_close(Bicubic(scale)(flat), torch.full((1, 3, 5 * scale, 5 * scale), 102 / 255))


def test_mig_equals_bit_replication_at_4_bits_and_where_else():
    """Why equal MIG and BR rows in a 4-bit table are expected: 255 / 15 = 17 is an integer and
    multiplying by it repeats the 4-bit code (likewise 255 and 85 for 1 and 2 bits); at 3 and 7
    bits rounding and replication happen to agree on every code; only 5 and 6 bits differ."""
    same = {}
    for bits in range(1, 8):
        q = torch.arange(1 << bits)
        same[bits] = torch.equal(expand_bits(q, bits, "mig"), expand_bits(q, bits, "br"))
    assert same == {1: True, 2: True, 3: True, 4: True, 5: False, 6: False, 7: True}
    assert expand_bits(torch.arange(16), 4, "mig").tolist() == [17 * v for v in range(16)]
