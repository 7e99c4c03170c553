import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_image
from raygan.datasets import degradations as dg
from raygan.platform.core.config import DataConfig


def _cfg(**kw):
    base = dict(task="jpeg", patch=32, augment=False, val_crop=None)
    base.update(kw)
    return DataConfig(**base)


def test_y_matches_matlab_formula_on_known_values():
    rgb = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255],
                     [128, 128, 128], [10, 200, 30]]], dtype=np.uint8)
    # round(16 + (65.481 R + 128.553 G + 24.966 B) / 255), e.g. (10,200,30): 122.33 -> 122
    assert dg.rgb_to_y_uint8(rgb).tolist() == [[16, 235, 81, 145, 41, 126, 122]]
    assert dg.rgb_to_y_uint8(rgb).dtype == np.uint8
    with pytest.raises(ValueError, match="HxWx3"):
        dg.rgb_to_y_uint8(np.zeros((4, 4), np.uint8))


def test_quantize_known_values():
    x = np.array([0, 37, 128, 200, 255], dtype=np.uint8)
    # 3 bits: q = x >> 5 = [0, 1, 4, 6, 7]
    assert dg.quantize(x, 3, "zp").tolist() == [0, 32, 128, 192, 224]
    assert dg.quantize(x, 3, "mig").tolist() == [0, 36, 146, 219, 255]   # round(q*255/7)
    assert dg.quantize(x, 3, "br").tolist() == [0, 36, 146, 219, 255]    # 001001 00, 100100 10
    # 4 bits: MIG (x17) and BR (nibble repeated) coincide; ZP pads zeros
    assert dg.quantize(x, 4, "zp").tolist() == [0, 32, 128, 192, 240]
    assert dg.quantize(x, 4, "br").tolist() == [0, 34, 136, 204, 255]
    assert dg.quantize(x, 4, "mig").tolist() == [0, 34, 136, 204, 255]
    # 5 bits: BR (q<<3 | q>>2) differs from MIG
    q = np.array([0b10101 << 3], dtype=np.uint8)
    assert dg.quantize(q, 5, "br").tolist() == [0b10101101]
    assert dg.quantize(q, 5, "mig").tolist() == [round(21 * 255 / 31)]
    assert dg.quantize(np.array([255], np.uint8), 1, "br").tolist() == [255]
    with pytest.raises(ValueError, match="zp, mig or br"):
        dg.quantize(x, 3, "nope")


def test_jpeg_quality_changes_the_result():
    img = random_image(np.random.default_rng(0), 64, 64)
    low, high = dg.jpeg(img, 5), dg.jpeg(img, 95)
    assert low.shape == img.shape and low.dtype == np.uint8
    err = lambda a: np.abs(a.astype(int) - img).mean()  # noqa: E731
    assert err(low) > err(high) + 1
    # RGB: exactly libjpeg at that quality with 4:2:0 chroma subsampling (as MATLAB imwrite)
    for q, out in ((5, low), (95, high)):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=q, subsampling=2)
        ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        assert np.array_equal(out, ref), f"quality {q}: {(out != ref).sum()} values differ from 4:2:0"
    gray = dg.jpeg(img[..., 0], 10)
    assert gray.shape == (64, 64)  # grayscale JPEG of a 2-D image
    # the 2-D path is a real single-channel JPEG
    buf = io.BytesIO()
    Image.fromarray(img[..., 0]).save(buf, "JPEG", quality=10)
    assert np.array_equal(gray, np.asarray(Image.open(io.BytesIO(buf.getvalue()))))
    with pytest.raises(ValueError, match="1..100"):
        dg.jpeg(img, 0)


def test_bicubic_shapes():
    img = random_image(np.random.default_rng(0), 50, 70)
    assert dg.bicubic_down(img, 4).shape == (12, 17, 3)
    assert dg.bicubic_up(dg.bicubic_down(img, 4), (48, 68)).shape == (48, 68, 3)
    flat = np.full((40, 40, 3), 77, np.uint8)
    assert (dg.bicubic_down(flat, 4) == 77).all()


@pytest.mark.parametrize("hw", [(64, 64), (80, 120), (9, 7), (256, 256)])
def test_inpaint_mask_fraction(hw):
    rng = np.random.default_rng(3)
    for _ in range(10):
        m = dg.inpaint_mask(*hw, rng, 0.25, 0.5)
        assert m.dtype == np.float32 and m.shape == hw
        assert set(np.unique(m)) <= {0.0, 1.0}
        assert 0.25 <= m.mean() <= 0.5
    narrow = dg.inpaint_mask(64, 64, rng, 0.3, 0.32)
    assert 0.3 <= narrow.mean() <= 0.32


#: sha256 (first 16 hex digits) of inpaint_mask(h, w, default_rng(seed)): the masks a seed
#: draws are part of a run's data. numpy and Pillow (which draws the strokes) are pinned in
#: constraints.txt; an upgrade that changes the strokes fails here, not silently in training.
MASK_DIGESTS = [((64, 64, 0), "750549c42941cccf"), ((64, 64, 1), "cf613e22c3ebe633"),
                ((17, 23, 2), "96866dfa5af60d65"), ((96, 48, 3), "2b08fe23adf356b3"),
                ((9, 7, 4), "805ad21c0a9d3d74")]


@pytest.mark.parametrize("hws,digest", MASK_DIGESTS, ids=[f"{h}x{w}-{s}" for (h, w, s), _ in MASK_DIGESTS])
def test_inpaint_masks_of_a_seed_are_pinned(hws, digest):
    import hashlib

    h, w, seed = hws
    assert hashlib.sha256(dg.inpaint_mask(h, w, np.random.default_rng(seed)).tobytes()).hexdigest()[:16] == digest


def test_edges_white_background_black_edges():
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, 32:] = 255
    e = dg.edges(img)
    assert e.shape == (64, 64, 3) and e.dtype == np.uint8
    assert set(np.unique(e)) <= {0, 255}
    assert (e[:, :20] == 255).all()
    # one-pixel edges on the step between columns 31 and 32, in every row but the two
    # border rows (Canny drops those): nothing thickened, shifted or missing
    rows, cols = np.nonzero(e[..., 0] == 0)
    assert set(cols.tolist()) == {31, 32} and set(rows.tolist()) == set(range(1, 63))
    assert np.array_equal(e[..., 0], e[..., 2])
    # a colour image: Canny (sigma 2) of the BT.601 luma, as scikit-image computes it
    from skimage.feature import canny

    rgb = random_image(np.random.default_rng(4), 48, 40)
    rgb[..., 0] = rgb[..., 0] // 3  # channels differ: the luma weights matter
    gray = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0
    assert np.array_equal(dg.edges(rgb)[..., 1], np.where(canny(gray, sigma=2.0), 0, 255))


@pytest.mark.parametrize("task", ["jpeg", "bitdepth", "sr", "inpaint", "edges"])
@pytest.mark.parametrize("channels", [3, 1])
def test_task_shapes(task, channels):
    img = random_image(np.random.default_rng(0), 70, 90)
    cfg = _cfg(task=task, channels=channels, patch=32, scale=4, augment=True, quality=30, bits=5,
               expand="br")  # non-default knobs: the task must pass on the configured ones
    out = dg.TASKS[task]({"key": "k", "target": img}, cfg, np.random.default_rng(1), True)
    lr = 8 if task == "sr" else 32
    assert out["target"].shape == (channels, 32, 32)
    assert out["input"].shape == (channels, lr, lr)
    for v in out.values():
        assert v.dtype == torch.float32
    # the target is an 8-bit image; the input is the degradation of exactly that crop
    t8 = torch.round(out["target"] * 255)
    assert torch.equal(t8 / 255, out["target"])
    t8 = t8.to(torch.uint8).permute(1, 2, 0).numpy()
    t8 = t8[..., 0] if channels == 1 else t8
    expected = {"jpeg": lambda: dg.jpeg(t8, 30), "bitdepth": lambda: dg.quantize(t8, 5, "br"),
                "sr": lambda: dg.bicubic_down(t8, 4),
                "edges": lambda: dg.edges(t8)[..., 0] if channels == 1 else dg.edges(t8)}
    if task in expected:
        got, want = out["input"], dg.to_tensor(expected[task]())
        assert torch.equal(got, want), f"{task}: {(got != want).sum().item()} of {want.numel()} values differ"
    if task == "inpaint":
        assert out["mask"].shape == (1, 32, 32)
        hole = out["mask"][0] > 0
        assert torch.allclose(out["input"][:, hole], torch.tensor(0.5))
        assert torch.equal(out["input"][:, ~hole], out["target"][:, ~hole])
    # validation: whole image, cropped to a multiple of the scale for SR
    val = dg.TASKS[task]({"key": "k", "target": img}, cfg, dg.key_rng("k"), False)
    full = (68, 88) if task == "sr" else (70, 90)
    assert val["target"].shape == (channels, *full)


def test_channels_one_uses_y_and_grayscale_jpeg():
    img = random_image(np.random.default_rng(0), 40, 40)
    cfg = _cfg(task="jpeg", channels=1, patch=40, quality=20)
    out = dg.TASKS["jpeg"]({"key": "k", "target": img}, cfg, np.random.default_rng(0), True)
    y = dg.rgb_to_y_uint8(img)
    assert torch.equal(out["target"][0], torch.from_numpy(y).float() / 255)
    assert torch.equal(out["input"][0], torch.from_numpy(dg.jpeg(y, 20)).float() / 255)


def test_sr_crops_align_to_scale():
    h, w = 120, 110
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([yy, xx, np.zeros_like(yy)], axis=2).astype(np.uint8)  # pixel = its position
    cfg = _cfg(task="sr", scale=4, patch=30)  # 30 rounds down to 28
    for seed in range(20):
        t = dg.TASKS["sr"]({"key": "k", "target": img}, cfg, np.random.default_rng(seed), True)["target"]
        top, left = round(t[0, 0, 0].item() * 255), round(t[1, 0, 0].item() * 255)
        assert t.shape[1:] == (28, 28) and top % 4 == 0 and left % 4 == 0
    cfg = _cfg(task="sr", scale=3, val_crop=50)  # centre crop rounded down to 48, offsets aligned
    out = dg.TASKS["sr"]({"key": "k", "target": img}, cfg, dg.key_rng("k"), False)
    assert out["target"].shape == (3, 48, 48) and out["input"].shape == (3, 16, 16)
    top, left = round(out["target"][0, 0, 0].item() * 255), round(out["target"][1, 0, 0].item() * 255)
    # centred offsets (120-48)/2 = 36 and (110-48)/2 = 31, rounded down to multiples of 3
    assert (top, left) == (36, 30)


def test_too_small_records_are_skippable():
    img = random_image(np.random.default_rng(0), 20, 40)
    with pytest.raises(dg.SkipRecord, match="data.small_images=skip"):
        dg.TASKS["jpeg"]({"key": "k", "target": img}, _cfg(patch=32, small_images="skip"),
                         np.random.default_rng(0), True)
    with pytest.raises(dg.SkipRecord):  # data.min_size above the patch
        dg.TASKS["jpeg"]({"key": "k", "target": random_image(np.random.default_rng(0), 40, 40)},
                         _cfg(patch=32, min_size=48), np.random.default_rng(0), True)


def test_validation_masks_are_deterministic_per_key():
    img = random_image(np.random.default_rng(0), 48, 48)
    cfg = _cfg(task="inpaint")
    run = lambda key: dg.TASKS["inpaint"]({"key": key, "target": img}, cfg, dg.key_rng(key), False)  # noqa: E731
    assert torch.equal(run("a/1")["mask"], run("a/1")["mask"])
    assert not torch.equal(run("a/1")["mask"], run("a/2")["mask"])


def test_task_tags():
    assert dg.task_tag(_cfg(task="jpeg", quality=10)) == "jpeg-q10-rgb"
    assert dg.task_tag(_cfg(task="jpeg", quality=10, channels=1)) == "jpeg-q10-y"
    assert dg.task_tag(_cfg(task="bitdepth", bits=4, expand="mig")) == "bitdepth-4-mig"
    assert dg.task_tag(_cfg(task="sr", scale=4)) == "sr-x4"
    assert dg.task_tag(_cfg(task="inpaint")) == "inpaint"
    assert dg.task_tag(_cfg(task="edges")) == "edges"
    with pytest.raises(KeyError, match="known tasks"):
        dg.task_tag(_cfg(task="nope"))


def test_a_task_with_record_extras_can_be_registered():
    """The extension path for e.g. "paired": extras are cropped/augmented with the target."""

    class Paired(dg.Task):
        name = "test-paired"
        spatial_fields = ("input",)
        color_fields = ("input",)

        def degrade(self, fields, cfg, rng):
            return {"input": fields["input"]}

    dg.register_task(Paired)
    try:
        img = random_image(np.random.default_rng(0), 50, 60)
        rec = {"key": "k", "target": img, "input": 255 - img}
        cfg = _cfg(task="test-paired", patch=24, augment=True)
        for seed in range(8):
            out = dg.get_task("test-paired")(rec, cfg, np.random.default_rng(seed), True)
            assert torch.allclose(out["input"], 1 - out["target"], atol=1e-6)
        with pytest.raises(dg.SkipRecord, match="lacks field 'input'"):
            dg.get_task("test-paired")({"key": "k", "target": img}, cfg, np.random.default_rng(0), True)
    finally:
        dg.TASKS.unregister("test-paired")


def test_small_images_are_resized_or_padded_to_the_patch_never_skipped_by_default():
    """Aligned CelebA (178x218) with PAN's 256 patch: a 256 crop under resize and pad."""
    img = random_image(np.random.default_rng(0), 218, 178)  # H x W
    assert DataConfig().small_images == "resize"
    for policy in ("resize", "pad"):
        for task in ("inpaint", "jpeg"):
            out = dg.TASKS[task]({"key": "k", "target": img}, _cfg(task=task, patch=256, small_images=policy),
                                 np.random.default_rng(1), True)
            assert out["target"].shape == (3, 256, 256) and out["input"].shape == (3, 256, 256)
    # resize scales the short side to the patch, aspect kept: 178x218 -> 256x314
    grown = dg.grow_to({"target": img}, 256, "resize")["target"]
    assert grown.shape == (314, 256, 3)
    # pad keeps the pixels and reflects around them: 39 + 178 + 39 columns
    padded = dg.grow_to({"target": img, "maps": np.zeros((218, 178, 11), np.uint8)}, 256, "pad")
    assert padded["target"].shape == (256, 256, 3) and padded["maps"].shape == (256, 256, 11)
    np.testing.assert_array_equal(padded["target"][19:19 + 218, 39:39 + 178], img)
    # maps and other non-image fields are resized with nearest neighbour (values kept)
    maps = (np.arange(218 * 178 * 2).reshape(218, 178, 2) % 2).astype(np.uint8)
    r = dg.grow_to({"target": img, "parsing": maps}, 256, "resize")
    assert r["parsing"].shape == (314, 256, 2) and set(np.unique(r["parsing"])) <= {0, 1}


def test_center_square_resize_crop_takes_the_whole_square():
    # a 60x100 image whose left/right 20 columns are black: the centred 60x60 square is all
    # white, so its 32x32 resize is too (a random crop would catch black columns)
    img = np.zeros((60, 100, 3), np.uint8)
    img[:, 20:80] = 255
    cfg = _cfg(patch=32, crop="center_square_resize", quality=95)
    for seed in range(3):
        t = dg.TASKS["jpeg"]({"key": "k", "target": img}, cfg, np.random.default_rng(seed), True)["target"]
        assert t.shape == (3, 32, 32) and t.min().item() == 1.0
    # a smaller image than the patch is resized up, not skipped
    small = dg.TASKS["jpeg"]({"key": "k", "target": img[:20, :24]}, cfg, np.random.default_rng(0), True)
    assert small["target"].shape == (3, 32, 32)
    # SR: the resized patch keeps the scale alignment (30 -> 28 at x4)
    sr = dg.TASKS["sr"]({"key": "k", "target": img}, _cfg(task="sr", scale=4, patch=30, crop="center_square_resize"),
                        np.random.default_rng(0), True)
    assert sr["target"].shape == (3, 28, 28) and sr["input"].shape == (3, 7, 7)


# ----------------------------------------------------------------------------- helpers


def test_key_rng_is_a_stable_hash_of_seed_and_key():
    # the validation masks of a key are part of a run's data: the same draws on every
    # process and every release (sha256 of "<seed>:<key>", first 8 bytes little-endian)
    import hashlib

    assert dg.key_rng("val/0001").integers(0, 1000, 4).tolist() == [867, 226, 480, 148]
    assert dg.key_rng("val/0001", 1).integers(0, 1000, 4).tolist() == [357, 974, 763, 803]
    assert dg.key_rng("val/0002").integers(0, 1000, 4).tolist() == [734, 189, 970, 528]
    seed = int.from_bytes(hashlib.sha256(b"0:val/0001").digest()[:8], "little")
    assert dg.key_rng("val/0001").random(3).tolist() == np.random.default_rng(seed).random(3).tolist()


def test_uint8_image_checks_refuse_other_dtypes_and_shapes():
    with pytest.raises(TypeError, match="^image: expected a uint8 array, got float32$"):
        dg._check_uint8(np.zeros((4, 4), np.float32))
    with pytest.raises(TypeError, match="^bicubic_down input: expected a uint8 array"):
        dg.bicubic_down(np.zeros((8, 8, 3), np.float32), 2)
    # RGBA, a 4-D batch and a 1-D row are not images (PIL would happily resize RGBA)
    for bad in (np.zeros((8, 8, 4), np.uint8), np.zeros((1, 8, 8, 3), np.uint8), np.zeros(8, np.uint8)):
        with pytest.raises(ValueError, match=r"expected HxW or HxWx3, got shape"):
            dg.bicubic_down(bad, 2)
    assert dg._check_uint8(np.zeros((4, 5), np.uint8)).shape == (4, 5)
    assert dg._check_uint8(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)


def test_y_image_keeps_gray_images_as_they_are():
    gray = np.array([[0, 10, 128], [200, 250, 255]], np.uint8)
    # a gray image is its own Y image (no studio-range remapping: 0 stays 0, 255 stays 255)
    for img in (gray, np.stack([gray] * 3, axis=2)):
        y = dg.y_image_uint8(img)
        assert y.shape == (2, 3) and y.dtype == np.uint8 and y.flags["C_CONTIGUOUS"]
        assert y.tolist() == gray.tolist()
    # a colour image goes through BT.601 (one channel differing is enough)
    rgb = np.stack([gray] * 3, axis=2)
    rgb[0, 0] = (255, 0, 0)
    assert dg.y_image_uint8(rgb).tolist() == dg.rgb_to_y_uint8(rgb).tolist()
    assert dg.y_image_uint8(rgb)[0, 0] == 81


def test_to_tensor_dtypes_layout_and_copies():
    u8 = np.array([[[0, 51, 255], [255, 0, 102]]], np.uint8)  # 1x2x3
    t = dg.to_tensor(u8)
    assert t.dtype == torch.float32 and t.shape == (3, 1, 2)
    assert torch.equal(t[:, 0, 0], torch.tensor([0.0, 0.2, 1.0])) and torch.equal(t[:, 0, 1], torch.tensor([1.0, 0.0, 0.4]))
    f64 = np.array([[0.25, 0.5], [0.75, 1.5]])  # floats are taken as they are, not scaled
    t = dg.to_tensor(f64)
    assert t.dtype == torch.float32 and t.shape == (1, 2, 2) and t[0].tolist() == f64.tolist()
    f32 = np.full((2, 2), 0.5, np.float32)  # e.g. an inpainting mask: the tensor owns its data
    t = dg.to_tensor(f32)
    t += 1
    assert f32.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    with pytest.raises(ValueError, match="HxW or HxWxC"):
        dg.to_tensor(np.zeros((1, 2, 2, 3), np.float32))


def test_task_tags_mark_y_for_every_task():
    for task, tag in (("inpaint", "inpaint"), ("edges", "edges"), ("bitdepth", "bitdepth-4-mig"), ("sr", "sr-x4"),
                      ("jpeg", "jpeg-q10")):
        want_rgb = tag + ("-rgb" if task == "jpeg" else "")
        assert dg.task_tag(_cfg(task=task, quality=10, channels=3)) == want_rgb
        assert dg.task_tag(_cfg(task=task, quality=10, channels=1)) == tag + "-y"


def test_register_task_takes_instances_and_refuses_unnamed_or_foreign_objects():
    class Named(dg.Task):
        name = "test-instance"

    inst = Named()
    assert dg.register_task(inst) is inst
    try:
        assert dg.get_task("test-instance") is inst  # the instance itself, not a new one
    finally:
        dg.TASKS.unregister("test-instance")

    class Unnamed(dg.Task):
        pass

    class Foreign:
        name = "test-foreign"

    for bad in (Unnamed, Unnamed(), Foreign, Foreign()):
        with pytest.raises(TypeError, match="expected a named Task"):
            dg.register_task(bad)
    with pytest.raises(KeyError):
        dg.get_task("test-foreign")


# ----------------------------------------------------------------------------- inpaint masks


def test_inpaint_mask_refuses_impossible_ranges():
    rng = np.random.default_rng(0)
    for lo, hi in ((0.0, 0.5), (-0.1, 0.5), (0.3, 0.2), (0.25, 1.0), (0.25, 1.5)):
        with pytest.raises(ValueError, match="0 < hole_min <= hole_max < 1"):
            dg.inpaint_mask(8, 8, rng, lo, hi)
    # an exact fraction (hole_min == hole_max) is allowed
    assert dg.inpaint_mask(10, 10, rng, 0.3, 0.3).sum() == 30


def _mask_rows(m):
    return "/".join("".join(str(int(v)) for v in row) for row in m)


#: consecutive masks drawn from one generator (as a training worker does) on sizes where a
#: shape is often dropped, plus a strip (one-pixel-wide strokes, full-height rectangles).
#: 1x1 with at most half a pixel of hole: no hole at all (hole_max wins over hole_min).
TINY_MASKS = [
    ((2, 2, 1, 0.3, 0.3), ["00/10", "10/00", "00/01"]),
    ((1, 40, 1, 0.25, 0.3), ["0000111000111000000111100000000000000000",
                             "0011000000000001100000000000000011110011",
                             "1100000110000011000110000000000001100000"]),
    ((12, 1, 0, 0.25, 0.5), ["1/0/0/0/0/0/0/1/1/1/1/0", "0/1/1/1/0/0/0/0/0/0/1/0", "0/0/0/0/0/0/1/1/1/0/0/0"]),
    ((1, 1, 0, 0.25, 0.5), ["0", "0", "0"]),
]


@pytest.mark.parametrize("args,rows", TINY_MASKS, ids=[f"{a[0]}x{a[1]}" for a, _ in TINY_MASKS])
def test_inpaint_masks_of_tiny_sizes_are_pinned(args, rows):
    h, w, seed, lo, hi = args
    rng = np.random.default_rng(seed)
    got = [dg.inpaint_mask(h, w, rng, lo, hi) for _ in rows]
    n = h * w
    most = int(np.floor(hi * n))
    for m in got:  # the fraction rule holds where it can: ceil(lo*n) (at most floor(hi*n)) .. floor(hi*n)
        assert min(int(np.ceil(lo * n)), most) <= m.sum() <= most
    assert [_mask_rows(m) for m in got] == rows


#: masks whose range is one exact pixel count near the top: the shapes run out and the blob
#: fallback places the last pixels (sha256, first 16 hex digits, as MASK_DIGESTS).
FALLBACK_DIGESTS = [((64, 64, 3, 0.95), "34306eef3a767b16"), ((3, 100, 2, 0.99), "e43f88001eed8413")]


@pytest.mark.parametrize("args,digest", FALLBACK_DIGESTS, ids=[f"{a[0]}x{a[1]}" for a, _ in FALLBACK_DIGESTS])
def test_inpaint_masks_that_need_the_blob_fallback_are_pinned(args, digest):
    import hashlib

    h, w, seed, frac = args
    m = dg.inpaint_mask(h, w, np.random.default_rng(seed), frac, frac)
    assert m.sum() == int(np.floor(frac * h * w))
    assert hashlib.sha256(m.tobytes()).hexdigest()[:16] == digest


class _StuckRng:
    """Draws the same rectangle at the top-left corner forever (``uniform`` a quarter of the
    way into its range), so the shapes never reach hole_min and the blob fallback runs."""

    def random(self):
        return 0.9  # >= 0.7: a rectangle

    def uniform(self, low=0.0, high=1.0):
        return low + 0.25 * (high - low)

    def integers(self, low, high=None):
        return low if high is not None else 0


def test_inpaint_mask_fallback_grows_a_blob_by_exactly_the_missing_pixels():
    h, w = 20, 32
    m = dg.inpaint_mask(h, w, _StuckRng(), 0.25, 0.5)
    # the rectangle: int(0.225 * 20) x int(0.225 * 32) = 4 x 7 at (0, 0); then the
    # 160 - 28 = 132 free pixels nearest (0.25 h, 0.25 w) = (5, 8), ties in raster order
    rect = {(y, x) for y in range(4) for x in range(7)}
    free = sorted(((y - 5.0) ** 2 + (x - 8.0) ** 2, y * w + x) for y in range(h) for x in range(w)
                  if (y, x) not in rect)
    want = np.zeros((h, w), np.float32)
    for y, x in rect:
        want[y, x] = 1
    for _, i in free[:132]:
        want.flat[i] = 1
    assert m.dtype == np.float32 and m.sum() == 160  # ceil(0.25 * 640)
    np.testing.assert_array_equal(m, want)


def test_inpaint_task_uses_the_configured_hole_range():
    img = random_image(np.random.default_rng(0), 40, 48)
    cfg = _cfg(task="inpaint", hole_min=0.2, hole_max=0.22)
    out = dg.TASKS["inpaint"]({"key": "v/1", "target": img}, cfg, dg.key_rng("v/1"), False)
    # (a narrow range: with the default hole_max of 0.5 these shapes would differ)
    # validation crops nothing and draws nothing before the mask: the mask of the key's rng
    want = dg.inpaint_mask(40, 48, dg.key_rng("v/1"), 0.2, 0.22)
    assert torch.equal(out["mask"][0], torch.from_numpy(want))
    assert 0.2 <= want.mean() <= 0.22
    # degrade itself returns float32 arrays: the target in [0, 1] with 0.5 in the holes
    fields = {"target": img[..., 0]}
    deg = dg.TASKS["inpaint"].degrade(fields, cfg, np.random.default_rng(5))
    mask = dg.inpaint_mask(40, 48, np.random.default_rng(5), 0.2, 0.22)
    assert deg["input"].dtype == np.float32 and deg["mask"].dtype == np.float32 and deg["input"].shape == (40, 48)
    np.testing.assert_array_equal(deg["mask"], mask)
    np.testing.assert_array_equal(deg["input"], np.where(mask > 0, np.float32(0.5), img[..., 0] / np.float32(255)))


# ----------------------------------------------------------------------------- the task path


class _Extras(dg.Task):
    """A task with a colour extra ("input", follows the target) and a map ("parsing")."""

    name = "test-extras"
    spatial_fields = ("input", "parsing")
    color_fields = ("input",)

    def degrade(self, fields, cfg, rng):
        return {"input": fields["input"]}


def test_prepare_refusals_name_the_record_and_the_reason():
    img = random_image(np.random.default_rng(0), 24, 30)
    rng = np.random.default_rng(0)

    def refusal(record, cfg, task="jpeg", train=True):
        t = _Extras() if task == "extras" else dg.TASKS[task]
        with pytest.raises(dg.SkipRecord) as info:
            t.prepare(record, cfg, rng, train)
        return str(info.value)

    assert refusal({"key": "a/1"}, _cfg()) == "record a/1 has no target image"
    assert refusal({}, _cfg()) == "record ? has no target image"
    assert refusal({"key": "a/1", "target": img}, _cfg(), "extras") == \
        "record a/1 lacks field 'input' for task test-extras"
    assert refusal({"target": img}, _cfg(), "extras") == "record ? lacks field 'input' for task test-extras"
    bad = {"key": "a/1", "target": img, "input": img[:, :29], "parsing": img[..., 0]}
    assert refusal(bad, _cfg(), "extras") == "record a/1: field 'input' is (24, 29), target is (24, 30)"
    assert refusal({"key": "a/1", "target": img}, _cfg(patch=16, min_size=25)) == \
        "record a/1 is 24x30, smaller than data.min_size=25px"
    assert refusal({"target": img}, _cfg(patch=16, min_size=25)) == "record ? is 24x30, smaller than data.min_size=25px"
    assert refusal({"key": "a/1", "target": img}, _cfg(patch=25, small_images="skip")) == \
        "record a/1 is 24x30, smaller than 25px (data.small_images=skip)"
    assert refusal({"target": img}, _cfg(patch=25, small_images="skip")) == \
        "record ? is 24x30, smaller than 25px (data.small_images=skip)"
    # validation never grows an image (whatever data.small_images says): one smaller than
    # the SR scale is skipped
    assert refusal({"key": "a/1", "target": img[:3, :10]}, _cfg(task="sr", scale=4), "sr", train=False) == \
        "record a/1 is 3x10, smaller than 4px"
    # an empty target (a raw-array member can be 0 pixels) is skipped under every policy,
    # not a ZeroDivisionError in the resize or a ValueError in the pad
    for extra in ({"small_images": "resize"}, {"small_images": "pad"}, {"crop": "center_square_resize"}, {}):
        for empty in (img[:0], img[:, :0]):
            h, w = empty.shape[:2]
            assert refusal({"key": "a/1", "target": empty}, _cfg(patch=16, **extra)) == \
                f"record a/1: the target image is empty ({h}x{w})"
    assert refusal({"key": "a/1", "target": img[:0]}, _cfg(), train=False) == \
        "record a/1: the target image is empty (0x30)"


def test_prepare_size_boundaries():
    img = random_image(np.random.default_rng(0), 40, 41)
    rng = np.random.default_rng(0)
    jpeg = dg.TASKS["jpeg"]
    # exactly the patch under small_images=skip, exactly data.min_size: both usable
    assert jpeg.prepare({"key": "k", "target": img[:32]}, _cfg(patch=32, small_images="skip"), rng, True)[
        "target"].shape == (32, 32, 3)
    assert jpeg.prepare({"key": "k", "target": img}, _cfg(patch=32, min_size=40), rng, True)["target"].shape == \
        (32, 32, 3)
    # data.min_size is a training filter: validation scores every image
    val = jpeg.prepare({"key": "k", "target": img}, _cfg(patch=32, min_size=48), rng, False)["target"]
    np.testing.assert_array_equal(val, img)
    # tasks without a scale do not align: odd validation images stay whole, odd patches stay odd
    np.testing.assert_array_equal(jpeg.prepare({"key": "k", "target": img[:35, :39]}, _cfg(), rng, False)["target"],
                                  img[:35, :39])
    assert jpeg.prepare({"key": "k", "target": img}, _cfg(patch=31), rng, True)["target"].shape == (31, 31, 3)
    assert jpeg.align(_cfg()) == 1 and dg.TASKS["sr"].align(_cfg(task="sr", scale=3)) == 3


def test_min_size_is_the_patch_or_data_min_size():
    jpeg, sr = dg.TASKS["jpeg"], dg.TASKS["sr"]
    assert jpeg.min_size(_cfg(patch=32), True) == 32
    assert jpeg.min_size(_cfg(patch=32, min_size=48), True) == 48
    assert jpeg.min_size(_cfg(patch=32, min_size=16), True) == 32
    assert jpeg.min_size(_cfg(patch=32, min_size=48), False) == 1  # validation: one aligned pixel
    assert sr.min_size(_cfg(task="sr", scale=4, patch=32, min_size=48), False) == 4


def test_a_config_with_only_the_core_fields_uses_the_documented_defaults():
    """Optional knobs (min_size, crop, small_images, val_crop) may be absent from a config
    object: random crops, small images resized up, no size filter, whole validation images."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(channels=3, patch=16, augment=False, quality=50)
    jpeg = dg.TASKS["jpeg"]
    assert jpeg.min_size(cfg, True) == 16
    img = random_image(np.random.default_rng(0), 30, 20)
    small = jpeg.prepare({"key": "k", "target": img[:10, :12]}, cfg, np.random.default_rng(0), True)["target"]
    grown = dg.resize_array(img[:10, :12], (16, 19))  # short side to the patch, bicubic
    assert small.shape == (16, 16, 3)
    assert any(np.array_equal(small, grown[:, x:x + 16]) for x in range(4))
    crop = jpeg.prepare({"key": "k", "target": img}, cfg, np.random.default_rng(0), True)["target"]
    assert crop.shape == (16, 16, 3)
    np.testing.assert_array_equal(jpeg.prepare({"key": "k", "target": img}, cfg, np.random.default_rng(0), False)[
        "target"], img)
    out = jpeg({"key": "k", "target": img}, cfg, np.random.default_rng(0), True)
    assert out["input"].shape == (3, 16, 16)


def test_growing_and_square_resizing_are_bicubic_for_images_nearest_for_maps():
    rng = np.random.default_rng(0)
    img = random_image(rng, 20, 30)
    rec = {"key": "k", "target": img, "input": 255 - img,
           "parsing": (np.arange(600).reshape(20, 30) % 7).astype(np.uint8)}
    task = _Extras()
    # resize: the 20x30 record grows to 32x48 (short side = the patch); a 32 crop of that
    cfg = _cfg(task="test-extras", patch=32, small_images="resize")
    out = task.prepare(rec, cfg, np.random.default_rng(3), True)
    big = {"target": dg.bicubic_up(img, (32, 48)), "input": dg.bicubic_up(255 - img, (32, 48)),
           "parsing": dg.resize_array(rec["parsing"], (32, 48), image=False)}
    assert not np.array_equal(big["target"], dg.resize_array(img, (32, 48), image=False))  # the test can tell
    left = [x for x in range(17) if np.array_equal(out["target"], big["target"][:, x:x + 32])]
    assert len(left) == 1
    for name in ("input", "parsing"):
        np.testing.assert_array_equal(out[name], big[name][:, left[0]:left[0] + 32], err_msg=name)
    assert set(np.unique(out["parsing"])) <= set(range(7))
    # center_square_resize: the centred 20x20 square (columns 5..24) resized to the patch
    cfg = _cfg(task="test-extras", patch=32, crop="center_square_resize")
    out = task.prepare(rec, cfg, np.random.default_rng(3), True)
    np.testing.assert_array_equal(out["target"], dg.bicubic_up(img[:, 5:25], (32, 32)))
    np.testing.assert_array_equal(out["input"], dg.bicubic_up(255 - img[:, 5:25], (32, 32)))
    np.testing.assert_array_equal(out["parsing"], dg.resize_array(rec["parsing"][:, 5:25], (32, 32), image=False))


def test_decoded_copies_the_record_and_skips_what_does_not_decode():
    rec = {"key": "a/1", "target": np.zeros((2, 2, 3), np.uint8), "blob": b"\x01\x02"}
    out = dg.Task.decoded(rec, "blob", lambda b: np.frombuffer(b, np.uint8) * 2, "jobs/make_x.py")
    assert out["blob"].tolist() == [2, 4] and out["target"] is rec["target"]
    assert rec["blob"] == b"\x01\x02"  # the caller's record is left as it was

    def refusal(record, decode=bytes):
        with pytest.raises(dg.SkipRecord) as info:
            dg.Task.decoded(record, "blob", decode, "jobs/make_x.py")
        return str(info.value)

    assert refusal({"key": "a/1"}) == "record a/1 has no 'blob' field (this task needs shards from jobs/make_x.py)"
    assert refusal({}) == "record ? has no 'blob' field (this task needs shards from jobs/make_x.py)"

    def undecodable(b):
        raise ValueError(f"{len(b)} bytes are not a map")

    assert refusal(rec, undecodable) == "record a/1: 2 bytes are not a map"
    assert refusal({"blob": b"x"}, undecodable) == "record ?: 1 bytes are not a map"


def test_prepare_without_rotation_is_prepare_with_augmentation_off():
    img = random_image(np.random.default_rng(0), 40, 48)
    rec = {"key": "k", "target": img}
    jpeg = dg.TASKS["jpeg"]
    cfg = _cfg(patch=16, augment=True)
    rotated = 0
    for seed in range(6):
        got = jpeg.prepare_without_rotation(rec, cfg, np.random.default_rng(seed), True)
        want = jpeg.prepare(rec, _cfg(patch=16, augment=False), np.random.default_rng(seed), True)
        assert got.keys() == {"target"} and got["target"].shape == (16, 16, 3)
        np.testing.assert_array_equal(got["target"], want["target"])
        aug = jpeg.prepare(rec, cfg, np.random.default_rng(seed), True)["target"]
        rotated += not np.array_equal(aug, want["target"])
    assert rotated  # the augmenting path would have flipped or rotated some of these crops
    assert cfg.augment is True  # the caller's config is not changed
    # validation goes through unchanged: the whole image
    np.testing.assert_array_equal(jpeg.prepare_without_rotation(rec, cfg, dg.key_rng("k"), False)["target"], img)
