import io

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_image
from raygan.datasets import degradations as dg
from raygan.platform.config import DataConfig


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
