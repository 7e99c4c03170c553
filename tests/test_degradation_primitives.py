"""The image primitives of ``datasets/degradations.py``, pinned at their edges.

What these tests pin (the task classes, masks, Y conversion and tensors are in
``test_degradations.py``):

* ``is_gray``: HxW and HxWx3 with three equal channels are gray; any pair of unequal
  channels, or another channel count, is not;
* the input checks of ``jpeg``/``bicubic_down``/``bicubic_up``/``edges`` name the function
  in their error, and the range checks (JPEG quality 1..100, bit depth 1..8, a downscale
  that leaves at least one pixel) accept their limits exactly and refuse one past them;
* ``quantize``: the default expansion is MIG, every mode returns uint8 of the input's shape,
  8 bits is the identity, bit replication matches a bit-string construction;
* ``edges``: Canny of the gray image scaled to [0, 1] by 255 (on an image with many pixels
  near Canny's thresholds, so the scale matters);
* crop boxes (``random_crop_box``, ``center_crop_box``): default ``align`` 1, sizes limited
  by each side, crops exactly at a limit accepted, offsets aligned and all reachable,
  refusals as ``SkipRecord`` naming the image size;
* ``resize_array``: PIL bicubic for uint8 HxW/HxWx3 images (also by default), nearest
  neighbour (pixel centres, checked by hand and against PIL's NEAREST) for everything
  else, the input returned as is when already at the size;
* ``center_square_resize``: the centred square (offsets ``(H - s) // 2``) resized bicubic
  by default, nearest with ``image=False``;
* ``grow_to``: ``resize`` keeps the aspect ratio (bicubic for images, nearest for others),
  ``pad`` reflect-pads only the short axes, split evenly;
* ``augment_arrays``: the same op on every array, the 8 dihedral ops equally likely;
* ``register_task``: instances and classes are registered, anything else refused.
"""

import itertools
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from conftest import random_image
from raygan.datasets import degradations as dg
from raygan.platform.core.errors import SkipRecord


def _pil_bicubic(a, h, w):
    """An independent reference: PIL's bicubic resize to (h, w) of a uint8 image."""
    return np.asarray(Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC))


def _pil_nearest(a, h, w):
    """PIL's nearest neighbour (pixel centres) of a 2-D float map."""
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((w, h), Image.Resampling.NEAREST))


# ----------------------------------------------------------------------------- is_gray


def test_is_gray_needs_a_single_channel_or_three_equal_ones():
    v = random_image(np.random.default_rng(0), 6, 5, channels=1)
    w = 255 - v
    assert dg.is_gray(v)
    assert dg.is_gray(v.tolist())  # anything array-like
    assert dg.is_gray(np.stack([v, v, v], axis=2))
    # one channel differing from the others, in each position
    assert not dg.is_gray(np.stack([w, v, v], axis=2))
    assert not dg.is_gray(np.stack([v, w, v], axis=2))  # R == B, G differs
    assert not dg.is_gray(np.stack([v, v, w], axis=2))
    # equal channels, but not three of them: not an image is_gray knows
    assert not dg.is_gray(np.stack([v, v, v, v], axis=2))
    assert not dg.is_gray(v[..., None])
    assert not dg.is_gray(np.stack([v, v], axis=2))


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("label, call", [
    ("jpeg input", lambda x: dg.jpeg(x, 50)),
    ("bicubic_down input", lambda x: dg.bicubic_down(x, 2)),
    ("bicubic_up input", lambda x: dg.bicubic_up(x, (8, 8))),
    ("edges input", lambda x: dg.edges(x)),
])
def test_input_checks_name_the_function(label, call):
    with pytest.raises(TypeError, match=rf"^{label}: expected a uint8 array, got float32$"):
        call(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=rf"^{label}: expected HxW or HxWx3, got shape \(4, 4, 2\)$"):
        call(np.zeros((4, 4, 2), np.uint8))


# ----------------------------------------------------------------------------- jpeg


def test_jpeg_quality_limits():
    img = random_image(np.random.default_rng(1), 16, 24)
    for q in (1, 100):  # both limits are valid qualities
        out = dg.jpeg(img, q)
        assert out.shape == img.shape and out.dtype == np.uint8
        gray = dg.jpeg(img[..., 1], q)
        assert gray.shape == img.shape[:2] and gray.dtype == np.uint8
    # quality 100 is near-lossless on the gray image, quality 1 is not
    err = lambda q: np.abs(dg.jpeg(img[..., 1], q).astype(int) - img[..., 1]).mean()  # noqa: E731
    assert err(100) < 1.5 < err(1)
    for q in (0, 101, -5):
        with pytest.raises(ValueError, match=rf"^JPEG quality must be in 1\.\.100, got {q}$"):
            dg.jpeg(img, q)


# ----------------------------------------------------------------------------- quantize


def _bit_replicate(v, k):
    """Bit replication from the bit string: the top k bits repeated until 8 are filled."""
    bits = format(v, "08b")[:k]
    return int((bits * 8)[:8], 2)


def test_quantize_defaults_limits_and_dtype():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    # the default expansion is MIG: round(q * 255 / 7) for 3 bits
    assert dg.quantize(np.array([0, 37, 128, 200, 255], np.uint8), 3).tolist() == [0, 36, 146, 219, 255]
    for k, mode in itertools.product(range(1, 9), ("zp", "mig", "br")):
        out = dg.quantize(x, k, mode)
        assert out.dtype == np.uint8 and out.shape == x.shape, (k, mode)
        q = x.astype(int) >> (8 - k)
        if mode == "zp":
            ref = q << (8 - k)
        elif mode == "mig":
            ref = np.floor(q * 255 / (2 ** k - 1) + 0.5)
        else:
            ref = np.vectorize(_bit_replicate)(x.astype(int), k)
        assert np.array_equal(out, ref), (k, mode)
        if k == 8:  # 8 bits: nothing to reduce, every mode is the identity
            assert np.array_equal(out, x)
    for k in (0, 9):
        with pytest.raises(ValueError, match=rf"^bit depth must be in 1\.\.8, got {k}$"):
            dg.quantize(x, k)
    with pytest.raises(TypeError, match="uint8"):
        dg.quantize(x.astype(np.int16), 4)


# ----------------------------------------------------------------------------- bicubic


def test_bicubic_down_accepts_a_downscale_to_exactly_one_pixel():
    img = random_image(np.random.default_rng(2), 8, 8)
    for h, w, s in ((4, 8, 4), (8, 4, 4), (4, 4, 4), (3, 6, 3)):
        out = dg.bicubic_down(img[:h, :w], s)
        assert out.shape == (h // s, w // s, 3)
        assert np.array_equal(out, _pil_bicubic(img[:h, :w], h // s, w // s))
    # scale 1 keeps the image as it is
    assert np.array_equal(dg.bicubic_down(img, 1), img)
    assert np.array_equal(dg.bicubic_down(img[..., 0], 2), _pil_bicubic(img[..., 0], 4, 4))


@pytest.mark.parametrize("h, w, s", [(3, 40, 4), (40, 3, 4), (3, 3, 4), (8, 8, 0), (8, 8, -1)])
def test_bicubic_down_refuses_scales_that_leave_no_pixel(h, w, s):
    with pytest.raises(ValueError, match=rf"^cannot downscale a {h}x{w} image by {s}$"):
        dg.bicubic_down(np.zeros((h, w, 3), np.uint8), s)


# ----------------------------------------------------------------------------- edges


def test_edges_are_canny_of_the_gray_image_scaled_by_255():
    from skimage.feature import canny

    # many pixels of this image lie near Canny's thresholds: a gray scaled by 1/256, or not
    # scaled, gives different edges
    gray = random_image(np.random.default_rng(3), 64, 64, channels=1)
    ref = canny(gray / 255.0, sigma=2.0)
    assert (ref != canny(gray / 256.0, sigma=2.0)).sum() > 10
    expect = np.where(ref, 0, 255)
    out = dg.edges(gray)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(out[..., c], expect)
    # an RGB image with three equal channels: its luma is the gray image itself
    out_rgb = dg.edges(np.stack([gray] * 3, axis=2))
    assert np.array_equal(out_rgb[..., 0], expect)


# ----------------------------------------------------------------------------- crop boxes


def test_random_crop_box_limits_and_offsets():
    rng = np.random.default_rng(0)
    # default align 1: an odd size is kept, every offset 0..2 comes up
    boxes = {dg.random_crop_box(5, 5, 3, rng) for _ in range(200)}
    assert {s for _, _, s in boxes} == {3}
    assert {(top, left) for top, left, _ in boxes} == set(itertools.product(range(3), range(3)))
    # aligned: size rounded down to a multiple of 2, all aligned offsets reachable
    boxes = {dg.random_crop_box(10, 13, 5, rng, align=2) for _ in range(400)}
    assert {s for _, _, s in boxes} == {4}
    assert {top for top, _, _ in boxes} == {0, 2, 4, 6}
    assert {left for _, left, _ in boxes} == {0, 2, 4, 6, 8}
    # a crop exactly the image's size, or exactly one align unit, is fine
    assert dg.random_crop_box(4, 4, 4, rng, align=4) == (0, 0, 4)
    assert dg.random_crop_box(1, 1, 1, rng) == (0, 0, 1)
    assert dg.random_crop_box(7, 9, 7, rng)[0] == 0


@pytest.mark.parametrize("h, w, size, align, shown", [
    (3, 10, 4, 1, 4), (10, 3, 4, 1, 4), (8, 8, 0, 1, 0), (8, 8, 3, 4, 0), (8, 8, 9, 1, 9),
])
def test_random_crop_box_refuses_crops_larger_than_a_side(h, w, size, align, shown):
    with pytest.raises(SkipRecord, match=rf"^image {h}x{w} is smaller than the {shown}px crop$"):
        dg.random_crop_box(h, w, size, np.random.default_rng(0), align=align)


@pytest.mark.parametrize("args, box", [
    ((5, 5, None), (0, 0, 5, 5)),          # default align 1: odd sizes kept
    ((1, 5, None), (0, 0, 1, 5)),          # one-pixel sides are crops too
    ((5, 1, None), (0, 0, 5, 1)),
    ((1, 1, 3), (0, 0, 1, 1)),
    ((4, 10, 8), (0, 3, 4, 4)),            # the size is limited by the height...
    ((10, 4, 8), (3, 0, 4, 4)),            # ...and by the width
    ((7, 9, 5), (1, 2, 5, 5)),
    ((4, 4, None, 4), (0, 0, 4, 4)),       # exactly one align unit
    ((4, 9, None, 4), (0, 0, 4, 8)),
    ((20, 30, 10, 4), (4, 8, 8, 8)),       # offsets rounded down to the align
])
def test_center_crop_box(args, box):
    assert dg.center_crop_box(*args) == box


@pytest.mark.parametrize("h, w, size, align", [(3, 9, None, 4), (9, 3, None, 4), (9, 9, 3, 4), (0, 5, None, 1)])
def test_center_crop_box_refuses_images_below_the_align(h, w, size, align):
    with pytest.raises(SkipRecord, match=rf"^image {h}x{w} is too small for a crop aligned to {align}$"):
        dg.center_crop_box(h, w, size, align)


# ----------------------------------------------------------------------------- resize


def test_resize_array_is_pil_bicubic_for_uint8_images():
    rgb = random_image(np.random.default_rng(5), 9, 14)
    for h, w in ((20, 31), (5, 6), (9, 30)):
        assert np.array_equal(dg.resize_array(rgb, (h, w)), _pil_bicubic(rgb, h, w))
        assert np.array_equal(dg.resize_array(rgb[..., 2], (h, w), True), _pil_bicubic(rgb[..., 2], h, w))


def test_resize_array_is_nearest_for_maps_by_hand():
    a = np.arange(15, dtype=np.float32).reshape(5, 3)  # 5 rows, 3 columns, distinct values
    # source index = floor((i + 0.5) * n_in / n_out): pixel centres
    up_rows, up_cols = [0, 1, 1, 2, 3, 3, 4], [0, 0, 1, 1, 2, 2]  # 5 -> 7 rows, 3 -> 6 columns
    out = dg.resize_array(a, (7, 6))  # a float map: nearest even with image=True
    assert np.array_equal(out, a[up_rows][:, up_cols])
    down = dg.resize_array(a, (2, 1))  # 5 -> 2 rows: centres 1.25, 3.75; 3 -> 1 column: 1.5
    assert np.array_equal(down, a[[1, 3]][:, [1]])
    # a tall source to a wide target and back, against PIL's nearest neighbour
    for h, w in ((7, 6), (2, 1), (3, 8), (11, 2), (1, 1), (5, 9), (10, 3)):
        assert np.array_equal(dg.resize_array(a, (h, w)), _pil_nearest(a, h, w)), (h, w)
    wide = a.T.copy()  # 3 x 5
    for h, w in ((6, 7), (1, 2), (8, 3), (2, 11), (9, 5), (3, 10)):
        assert np.array_equal(dg.resize_array(wide, (h, w)), _pil_nearest(wide, h, w)), (h, w)


def test_resize_array_uses_nearest_for_anything_but_uint8_images():
    rng = np.random.default_rng(6)
    img = random_image(rng, 5, 3)
    rows, cols = [0, 1, 1, 2, 3, 3, 4], [0, 0, 1, 1, 2, 2]
    # a uint8 image with image=False, a 4-channel or 1-channel uint8 array, a float RGB array
    cases = [(img, False), (img[..., 0], False), (np.concatenate([img, img[..., :1]], axis=2), True),
             (img[..., :1], True), (img.astype(np.float32), True), (img.astype(np.int32), True)]
    for a, image in cases:
        out = dg.resize_array(a, (7, 6), image)
        assert out.dtype == a.dtype and np.array_equal(out, a[rows][:, cols]), (a.shape, a.dtype, image)


def test_resize_array_at_its_size_returns_the_input():
    rng = np.random.default_rng(7)
    for a in (random_image(rng, 6, 4), random_image(rng, 6, 4, channels=1), rng.random((6, 4, 5))):
        out = dg.resize_array(a, (6, 4))
        assert np.array_equal(out, a) and np.shares_memory(out, a)  # no resampling, no copy
    flipped = random_image(rng, 6, 4)[:, ::-1]
    out = dg.resize_array(flipped, (6, 4))
    assert np.array_equal(out, flipped) and out.flags.c_contiguous


def test_center_square_resize_takes_the_centred_square():
    rng = np.random.default_rng(8)
    tall, wide = random_image(rng, 8, 4), random_image(rng, 4, 8)
    tall7 = random_image(rng, 7, 4, channels=1)
    # at the square's own size: exactly the centred square, offset (H - s) // 2
    assert np.array_equal(dg.center_square_resize(tall, 4), tall[2:6])
    assert np.array_equal(dg.center_square_resize(wide, 4), wide[:, 2:6])
    assert np.array_equal(dg.center_square_resize(tall7, 4), tall7[1:5])
    assert np.array_equal(dg.center_square_resize(wide[:, :6], 4), wide[:, 1:5])
    # resized: bicubic (PIL) by default, nearest with image=False
    assert np.array_equal(dg.center_square_resize(wide, 7), _pil_bicubic(wide[:, 2:6], 7, 7))
    assert np.array_equal(dg.center_square_resize(tall7, 3), _pil_bicubic(tall7[1:5], 3, 3))
    assert np.array_equal(dg.center_square_resize(wide, 8, image=False), wide[:, 2:6].repeat(2, 0).repeat(2, 1))


# ----------------------------------------------------------------------------- grow_to


def test_grow_to_resize_keeps_the_aspect_bicubic_for_images_nearest_for_others():
    rng = np.random.default_rng(9)
    for h, w, need, size in ((4, 6, 8, (8, 12)), (6, 4, 8, (12, 8)), (3, 5, 4, (4, 7)), (5, 3, 4, (7, 4))):
        target, extra = random_image(rng, h, w), random_image(rng, h, w)
        mask = (rng.random((h, w)) > 0.5).astype(np.uint8)
        out = dg.grow_to({"target": target, "extra": extra, "mask": mask}, need, "resize",
                         images=("target", "extra"))
        assert np.array_equal(out["target"], _pil_bicubic(target, *size))
        assert np.array_equal(out["extra"], _pil_bicubic(extra, *size))
        assert np.array_equal(out["mask"], _pil_nearest(mask, *size).astype(np.uint8))
        if size[0] == 2 * h:
            assert np.array_equal(out["mask"], mask.repeat(2, 0).repeat(2, 1))
    # default images=("target",): another uint8 field is a map (nearest)
    target = random_image(rng, 4, 6)
    out = dg.grow_to({"target": target, "other": target}, 8, "resize")
    assert np.array_equal(out["target"], _pil_bicubic(target, 8, 12))
    assert np.array_equal(out["other"], target.repeat(2, 0).repeat(2, 1))


def test_grow_to_pad_reflects_only_the_short_axes_split_evenly():
    row = np.array([10, 20, 30, 40], np.uint8)
    a = np.tile(row, (10, 1))  # 10 x 4: only the width is short of 8
    rgb = np.stack([a, a + 1, a + 2], axis=2)
    out = dg.grow_to({"target": rgb, "mask": a}, 8, "pad")
    assert out["mask"].shape == (10, 8) and out["target"].shape == (10, 8, 3)
    assert out["mask"][0].tolist() == [30, 20, 10, 20, 30, 40, 30, 20]  # reflect, 2 + 2
    assert np.array_equal(out["target"][..., 2], out["mask"] + 2)
    col = np.array([1, 2, 3, 4, 5], np.uint8)
    b = np.tile(col[:, None], (1, 9))  # 5 x 9: only the height is short; 3 rows, 1 + 2
    out = dg.grow_to({"target": b}, 8, "pad")["target"]
    assert out.shape == (8, 9) and out[:, 0].tolist() == [2, 1, 2, 3, 4, 5, 4, 3]
    # both sides long enough: unchanged
    c = np.arange(80, dtype=np.uint8).reshape(8, 10)
    assert np.array_equal(dg.grow_to({"target": c}, 8, "pad")["target"], c)
    with pytest.raises(ValueError, match="'crop' is not one of resize, pad, skip"):
        dg.grow_to({"target": c}, 8, "crop")


# ----------------------------------------------------------------------------- augment


def _dihedral(a):
    """The 8 flips/rotations of the first two axes, written as transposes and flips."""
    t = np.swapaxes(a, 0, 1)
    return [a, a[::-1], a[:, ::-1], a[::-1, ::-1], t, t[::-1], t[:, ::-1], t[::-1, ::-1]]


def test_augment_arrays_applies_one_of_eight_ops_uniformly_to_every_array():
    base = np.arange(6, dtype=np.int64).reshape(2, 3)
    extra = np.stack([base * 10, base * 10 + 1], axis=2).astype(np.float32)
    ops = _dihedral(base)
    rng = np.random.default_rng(10)
    counts = Counter()
    n = 4000
    for _ in range(n):
        out = dg.augment_arrays({"target": base, "extra": extra}, rng)
        assert set(out) == {"target", "extra"}
        hit = [i for i, op in enumerate(ops) if op.shape == out["target"].shape and np.array_equal(op, out["target"])]
        assert len(hit) == 1
        i = hit[0]
        counts[i] += 1
        # the same op on the other array (its channels untouched)
        assert np.array_equal(out["extra"], _dihedral(extra)[i])
        assert out["target"].flags.c_contiguous and out["extra"].flags.c_contiguous
    # each of the 8 ops 1/8 of the time (500 +- 4.5 standard deviations)
    assert sorted(counts) == list(range(8))
    assert all(abs(c - n / 8) < 95 for c in counts.values()), counts


# ----------------------------------------------------------------------------- register_task


def test_register_task_takes_instances_and_classes_and_refuses_the_rest():
    class _Probe(dg.Task):
        name = "test-primitives-probe"

    inst = _Probe()
    try:
        assert dg.register_task(inst) is inst  # an instance is registered as it is
        assert dg.get_task("test-primitives-probe") is inst
    finally:
        dg.TASKS.unregister("test-primitives-probe")

    class _Named:
        name = "test-primitives-not-a-task"

    class _Unnamed(dg.Task):
        pass

    for bad in (_Named(), _Named, _Unnamed, _Unnamed()):
        with pytest.raises(TypeError, match="register_task: expected a named Task"):
            dg.register_task(bad)
    assert "test-primitives-not-a-task" not in dg.TASKS
