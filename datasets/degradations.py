"""On-the-fly degradations and the task table that turns a decoded record into a sample.

Conventions: images are numpy ``uint8`` arrays, ``HxWx3`` (RGB) or ``HxW`` (Y / gray), in
and out of every degradation; tensors only appear at the very end, as float32 CHW in
[0, 1].

A :class:`Task` receives the decoded record (``{"key": str, "target": uint8 HxWx3, ...}``
plus any extra fields stored in the shard), the :class:`DataConfig`, a
``numpy.random.Generator`` and ``train``. It then, in this order:

1. converts the target (and the extras named in ``color_fields``) to Y when
   ``cfg.channels == 1`` (MATLAB BT.601, the papers' Y protocol); a grayscale image
   (HxW, or RGB with three equal channels) is used as it is (``y_image_uint8``);
2. crops: a random ``cfg.patch`` crop for training, a centre ``cfg.val_crop`` crop or the
   whole image for validation; crop size and offset are multiples of ``align(cfg)``
   (the SR scale), so a low-resolution input lines up with the target grid. In training,
   an image whose short side is below the patch follows ``cfg.small_images``: ``resize``
   (default: bicubic upscaling, aspect kept, short side = the patch), ``pad`` (reflect
   padding up to the patch, split evenly between the two sides) or ``skip``
   (:class:`SkipRecord`); ``cfg.min_size`` > 0 skips images with a side below it. With
   ``cfg.crop: center_square_resize`` (DequantizerNet) training takes the centred largest
   square instead and resizes it to the patch (bicubic, antialiased when shrinking).
   Fields other than the target and ``color_fields`` (parsing maps, masks) are resized
   with nearest neighbour. Validation never resizes: a ``val_crop`` larger than the image
   gives the image's short side (benchmarks are scored on the images as they are);
3. augments (training with ``cfg.augment``): random flips and 90-degree rotations;
   steps 2-3 are applied identically to the target and every spatial extra
   (``spatial_fields``);
4. degrades (``degrade``), which returns the input (and e.g. a mask);
5. converts everything to float32 CHW tensors in [0, 1].

Degrading after cropping means, for JPEG, that we compress the crop rather than crop a
compressed image: it is several times cheaper per sample, and block artifacts then sit on
the crop's own 8x8 grid, which is what the network sees at test time on whole images.

New tasks (e.g. "paired": the input stored in the record; "face_sr": parsing maps stored
in the record) subclass :class:`Task`, list their record fields in ``spatial_fields``
(and ``color_fields`` when they follow ``cfg.channels``), override ``degrade`` (or
``__call__`` for anything unusual) and call :func:`register_task`.

Validation is deterministic: the pipeline passes ``key_rng(key)``, a generator seeded
from a stable hash of the sample key, so inpainting masks are the same every time.
"""

from __future__ import annotations

import copy
import hashlib
import io
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw

from raygan.platform.core.colour import rgb_to_y_uint8
from raygan.platform.core.errors import SkipRecord
from raygan.platform.core.registry import TASKS

__all__ = [
    "SkipRecord", "Task", "TASKS", "register_task", "get_task", "task_tag", "key_rng",
    "rgb_to_y_uint8", "is_gray", "y_image_uint8", "jpeg", "quantize", "bicubic_down",
    "bicubic_up", "inpaint_mask", "edges", "to_tensor", "random_crop_box", "center_crop_box", "center_square_resize", "augment_arrays",
    "resize_array", "grow_to",
]




# ----------------------------------------------------------------------------- helpers


def key_rng(key: str, seed: int = 0) -> np.random.Generator:
    """A generator seeded from a stable hash of ``(seed, key)`` (same on every process)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _check_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise TypeError(f"{name}: expected a uint8 array, got {img.dtype}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise ValueError(f"{name}: expected HxW or HxWx3, got shape {img.shape}")
    return img


def is_gray(img: np.ndarray) -> bool:
    """True for a grayscale image: HxW, or HxWx3 with three equal channels (a mode-L file
    that was read, or stored in a shard, as RGB)."""
    img = np.asarray(img)
    if img.ndim == 2:
        return True
    return (img.ndim == 3 and img.shape[2] == 3 and np.array_equal(img[..., 0], img[..., 1])
            and np.array_equal(img[..., 0], img[..., 2]))


def y_image_uint8(img: np.ndarray) -> np.ndarray:
    """The Y image of the papers' Y protocol, uint8 HxW: a grayscale image as it is (its gray
    values *are* the Y image, as MATLAB's ``if size(im, 3) == 3, rgb2ycbcr`` leaves a gray
    file untouched), anything else through :func:`rgb_to_y_uint8` (BT.601 studio range)."""
    img = np.asarray(img)
    if is_gray(img):
        return np.ascontiguousarray(img if img.ndim == 2 else img[..., 0])
    return rgb_to_y_uint8(img)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG-compress and decode with PIL (libjpeg, standard tables scaled by ``quality``).

    RGB uses PIL's default 4:2:0 chroma subsampling (as MATLAB ``imwrite``); a 2-D image
    is encoded as a single-channel grayscale JPEG (mode "L").
    """
    img = _check_uint8(img, "jpeg input")
    q = int(quality)
    if not 1 <= q <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    pil = Image.fromarray(img, mode="L" if img.ndim == 2 else "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=q)
    buf.seek(0)
    with Image.open(buf) as out:
        return np.asarray(out.convert(pil.mode)).copy()


def quantize(img: np.ndarray, bits: int, expand: str = "mig") -> np.ndarray:
    """Reduce to ``bits`` bits by truncation (``img >> (8 - bits)``) and expand back to 8.

    ``expand``: ``"zp"`` zero padding (``q << (8 - bits)``); ``"mig"`` multiply by ideal
    gain (``round(q * 255 / (2**bits - 1))``); ``"br"`` bit replication (the k-bit pattern
    repeated MSB first until 8 bits are filled).
    """
    img = np.asarray(img)
    if img.dtype != np.uint8:  # elementwise: any shape is fine
        raise TypeError(f"quantize input: expected a uint8 array, got {img.dtype}")
    k = int(bits)
    if not 1 <= k <= 8:
        raise ValueError(f"bit depth must be in 1..8, got {bits}")
    q = (img >> (8 - k)).astype(np.uint16)
    if expand == "zp":
        out = q << (8 - k)
    elif expand == "mig":
        out = np.floor(q.astype(np.float64) * 255.0 / (2 ** k - 1) + 0.5)
    elif expand == "br":
        out = q << (8 - k)
        pos = 8 - k
        while pos > 0:
            pos -= k
            out = out | ((q << pos) if pos >= 0 else (q >> -pos))
    else:
        raise ValueError(f"unknown bit-depth expansion {expand!r}: use zp, mig or br")
    return np.asarray(out, dtype=np.uint8)


def bicubic_down(img: np.ndarray, scale: int) -> np.ndarray:
    """Downscale by an integer factor with PIL's bicubic to ``(h // scale, w // scale)``.

    PIL widens the cubic kernel (a = -0.5) by the scale factor when shrinking, i.e. it
    antialiases like MATLAB ``imresize(..., 'bicubic')``; values match MATLAB to within a
    few grey levels (PIL works in integer fixed point), not bit-exactly.
    """
    img = _check_uint8(img, "bicubic_down input")
    s = int(scale)
    h, w = img.shape[:2]
    if s < 1 or h // s < 1 or w // s < 1:
        raise ValueError(f"cannot downscale a {h}x{w} image by {scale}")
    pil = Image.fromarray(img)
    return np.asarray(pil.resize((w // s, h // s), Image.BICUBIC))


def bicubic_up(img: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bicubic resize to ``size = (height, width)`` (numpy order, not PIL's)."""
    img = _check_uint8(img, "bicubic_up input")
    h, w = int(size[0]), int(size[1])
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BICUBIC))


def inpaint_mask(h: int, w: int, rng: np.random.Generator, hole_min: float = 0.25,
                 hole_max: float = 0.5) -> np.ndarray:
    """A float32 HxW mask in {0, 1} (1 = hole) of large irregular holes.

    Random thick brush strokes (polylines with round joints) and rectangles are added one
    at a time; a shape that would push the hole fraction above ``hole_max`` is dropped and
    the shapes shrink, until the fraction lands in ``[hole_min, hole_max]``. If that has
    not happened after a bounded number of shapes (tiny masks), the hole grows as a blob
    around a random point by exactly the missing number of pixels.
    """
    if not 0 < hole_min <= hole_max < 1:
        raise ValueError(f"need 0 < hole_min <= hole_max < 1, got {hole_min}, {hole_max}")
    n = h * w
    lo, hi = int(np.ceil(hole_min * n)), int(np.floor(hole_max * n))
    lo = min(lo, hi) if hi >= 1 else 0
    mask = np.zeros((h, w), dtype=bool)
    side = max(1, min(h, w))
    size = 1.0
    for _ in range(200):
        cur = int(mask.sum())
        if cur >= lo:
            break
        layer = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(layer)
        if rng.random() < 0.7:  # brush stroke
            width = max(1, int(rng.uniform(0.06, 0.16) * side * size))
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            pts = [(x, y)]
            for _ in range(int(rng.integers(2, 6))):
                angle = rng.uniform(0, 2 * np.pi)
                length = rng.uniform(0.1, 0.4) * side * size
                x = float(np.clip(x + length * np.cos(angle), 0, w - 1))
                y = float(np.clip(y + length * np.sin(angle), 0, h - 1))
                pts.append((x, y))
            draw.line(pts, fill=255, width=width, joint="curve")
            r = width / 2
            for px, py in pts:  # round caps
                draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
        else:  # rectangle
            rh = max(1, int(rng.uniform(0.15, 0.45) * h * size))
            rw = max(1, int(rng.uniform(0.15, 0.45) * w * size))
            y0, x0 = int(rng.integers(0, max(1, h - rh + 1))), int(rng.integers(0, max(1, w - rw + 1)))
            draw.rectangle((x0, y0, x0 + rw - 1, y0 + rh - 1), fill=255)
        cand = mask | (np.asarray(layer) > 0)
        if int(cand.sum()) <= hi:
            mask = cand
        else:
            size *= 0.7
    cur = int(mask.sum())
    if cur < lo:  # fallback: grow a blob around a random point by the missing pixels
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        yy, xx = np.mgrid[0:h, 0:w]
        dist = (yy - cy) ** 2 + (xx - cx) ** 2
        dist[mask] = np.inf
        order = np.argsort(dist, axis=None, kind="stable")[: lo - cur]
        mask.flat[order] = True
    return mask.astype(np.float32)


def edges(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Edge map for edges->photo: Canny (scikit-image, ``sigma``) of the gray image.

    Returned as uint8 RGB with a white background and black edges (the pix2pix look).
    """
    from skimage.feature import canny

    img = _check_uint8(img, "edges input")
    if img.ndim == 3:
        gray = (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]) / 255.0
    else:
        gray = img / 255.0
    e = canny(gray, sigma=sigma)
    out = np.where(e, 0, 255).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2)


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """uint8 (scaled by 1/255) or float array, HxW or HxWxC -> float32 CHW tensor."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        f = arr.astype(np.float32)  # a fresh writable copy (PIL arrays are read-only)
        f /= 255.0
    else:
        f = np.array(arr, dtype=np.float32, copy=True)
    t = torch.from_numpy(f)
    if t.ndim == 2:
        return t.unsqueeze(0)
    if t.ndim == 3:
        return t.permute(2, 0, 1).contiguous()
    raise ValueError(f"to_tensor: expected HxW or HxWxC, got shape {tuple(arr.shape)}")


# ----------------------------------------------------------------------------- crops


def random_crop_box(h: int, w: int, size: int, rng: np.random.Generator, align: int = 1) -> Tuple[int, int, int]:
    """``(top, left, size)`` of a random square crop; size and offsets multiples of align."""
    size = (int(size) // align) * align
    if size < align or size > h or size > w:
        raise SkipRecord(f"image {h}x{w} is smaller than the {size}px crop")
    top = int(rng.integers(0, (h - size) // align + 1)) * align
    left = int(rng.integers(0, (w - size) // align + 1)) * align
    return top, left, size


def center_crop_box(h: int, w: int, size: Optional[int], align: int = 1) -> Tuple[int, int, int, int]:
    """``(top, left, ch, cw)``: a centre square crop of ``min(size, h, w)`` (None: the whole
    image), rounded down to a multiple of ``align``, with aligned offsets."""
    if size is None:
        ch, cw = (h // align) * align, (w // align) * align
    else:
        s = (min(int(size), h, w) // align) * align
        ch = cw = s
    if ch < align or cw < align or ch < 1 or cw < 1:
        raise SkipRecord(f"image {h}x{w} is too small for a crop aligned to {align}")
    top = ((h - ch) // 2 // align) * align
    left = ((w - cw) // 2 // align) * align
    return top, left, ch, cw


def resize_array(a: np.ndarray, size: Tuple[int, int], image: bool = True) -> np.ndarray:
    """Resize to ``size = (height, width)``: bicubic through PIL for a uint8 image (HxW or
    HxWx3; PIL antialiases when shrinking), nearest neighbour for anything else (maps,
    masks, any channel count)."""
    a = np.asarray(a)
    h, w = int(size[0]), int(size[1])
    if a.shape[:2] == (h, w):
        return np.ascontiguousarray(a)
    if image and a.dtype == np.uint8 and (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)):
        return bicubic_up(np.ascontiguousarray(a), (h, w))
    rows = np.minimum((np.arange(h) + 0.5) * a.shape[0] / h, a.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(w) + 0.5) * a.shape[1] / w, a.shape[1] - 1).astype(np.int64)
    return np.ascontiguousarray(a[rows][:, cols])


def center_square_resize(a: np.ndarray, size: int, image: bool = True) -> np.ndarray:
    """The centred largest square of ``a`` (side ``min(H, W)``, offsets ``(H - s) // 2`` and
    ``(W - s) // 2``), resized to ``size x size`` with :func:`resize_array` (bicubic, PIL
    antialiasing when shrinking, for images; nearest for maps). DequantizerNet's training
    crop (``data.crop: center_square_resize``) and its evaluation protocol (``rgb-sq96``)."""
    h, w = a.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return resize_array(a[top:top + s, left:left + s], (int(size), int(size)), image)


def grow_to(fields: Dict[str, np.ndarray], need: int, policy: str,
            images: Tuple[str, ...] = ("target",)) -> Dict[str, np.ndarray]:
    """Bring arrays whose short side is below ``need`` up to it (``data.small_images``).

    ``resize``: scale by ``need / short side`` (aspect kept, the short side exactly
    ``need``), bicubic for the fields named in ``images``, nearest for the others.
    ``pad``: reflect padding of each short axis up to ``need``, split evenly.
    """
    h, w = next(iter(fields.values())).shape[:2]
    if policy == "resize":
        f = need / min(h, w)
        size = (max(need, int(round(h * f))), max(need, int(round(w * f))))
        return {n: resize_array(a, size, n in images) for n, a in fields.items()}
    if policy == "pad":
        ph, pw = max(0, need - h), max(0, need - w)
        pads = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        return {n: np.pad(a, pads + ((0, 0),) * (a.ndim - 2), mode="reflect") for n, a in fields.items()}
    raise ValueError(f"data.small_images: {policy!r} is not one of resize, pad, skip")


def augment_arrays(arrays: Dict[str, np.ndarray], rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """The same random flip / 90-degree rotation (one of the 8 dihedral ops) on every array."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = {}
    for name, a in arrays.items():
        if flip:
            a = a[:, ::-1]
        if k:
            a = np.rot90(a, k, axes=(0, 1))
        out[name] = np.ascontiguousarray(a)
    return out


# ----------------------------------------------------------------------------- tasks


class Task:
    """A restoration task: crop + augment the record, then degrade (see module docstring)."""

    name: str = ""
    #: record fields cropped/augmented together with "target" (same resolution)
    spatial_fields: Tuple[str, ...] = ()
    #: record fields converted to Y together with "target" when cfg.channels == 1
    color_fields: Tuple[str, ...] = ()

    def align(self, cfg: Any) -> int:
        """Crop sizes and offsets are multiples of this (the SR scale)."""
        return 1

    def tag(self, cfg: Any) -> str:
        return self.name + ("-y" if cfg.channels == 1 else "")

    def min_size(self, cfg: Any, train: bool) -> int:
        """Smallest side a record needs before ``data.small_images`` applies (train: the
        patch, or data.min_size when larger)."""
        if train:
            return max(int(cfg.patch), int(getattr(cfg, "min_size", 0) or 0))
        return self.align(cfg)

    def degrade(self, fields: Dict[str, np.ndarray], cfg: Any, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        """Given the cropped ``target`` (+ extras), return at least ``{"input": ...}``."""
        raise NotImplementedError

    # -- helpers of tasks with extra record fields ---------------------------------------
    @staticmethod
    def decoded(record: Dict[str, Any], field: str, decode: Any, source: str) -> Dict[str, Any]:
        """A copy of ``record`` with ``field`` decoded by ``decode``; a record without it, or
        with one that does not decode, is skipped (``source``: the job that makes such shards)."""
        key = record.get("key", "?")
        if field not in record:
            raise SkipRecord(f"record {key} has no {field!r} field (this task needs shards from {source})")
        record = dict(record)
        try:
            record[field] = decode(record[field])
        except ValueError as exc:
            raise SkipRecord(f"record {key}: {exc}") from None
        return record

    def prepare_without_rotation(self, record: Dict[str, Any], cfg: Any, rng: np.random.Generator,
                                 train: bool) -> Dict[str, np.ndarray]:
        """:meth:`prepare` with augmentation off (callers flip: their fields do not rotate)."""
        no_aug = copy.copy(cfg)
        no_aug.augment = False
        return Task.prepare(self, record, no_aug, rng, train)

    # -- the common path --------------------------------------------------------------
    def prepare(self, record: Dict[str, Any], cfg: Any, rng: np.random.Generator,
                train: bool) -> Dict[str, np.ndarray]:
        """Channels, crop and augmentation: returns the aligned uint8 arrays."""
        if "target" not in record:
            raise SkipRecord(f"record {record.get('key', '?')} has no target image")
        fields = {"target": record["target"]}
        for name in self.spatial_fields:
            if name not in record:
                raise SkipRecord(f"record {record.get('key', '?')} lacks field {name!r} for task {self.name}")
            fields[name] = record[name]
        if cfg.channels == 1:
            for name in ("target",) + tuple(self.color_fields):
                a = fields[name]
                if a.ndim == 3:  # grayscale images stay as they are (see y_image_uint8)
                    fields[name] = y_image_uint8(a)
        h, w = fields["target"].shape[:2]
        key = record.get('key', '?')
        if h == 0 or w == 0:  # a raw-array member can be empty; no resize or pad can grow it
            raise SkipRecord(f"record {key}: the target image is empty ({h}x{w})")
        for name, a in fields.items():
            if a.shape[:2] != (h, w):
                raise SkipRecord(f"record {key}: field {name!r} is {a.shape[:2]}, target is {(h, w)}")
        align = self.align(cfg)
        images = ("target",) + tuple(self.color_fields)
        explicit = int(getattr(cfg, "min_size", 0) or 0) if train else 0
        if min(h, w) < explicit:
            raise SkipRecord(f"record {key} is {h}x{w}, smaller than data.min_size={explicit}px")
        if train and getattr(cfg, "crop", "random") == "center_square_resize":
            size = (int(cfg.patch) // align) * align
            fields = {n: center_square_resize(a, size, n in images) for n, a in fields.items()}
        else:
            need = self.min_size(cfg, train)
            if min(h, w) < need:
                policy = getattr(cfg, "small_images", "resize") if train else "skip"
                if policy == "skip":
                    raise SkipRecord(f"record {key} is {h}x{w}, smaller than {need}px"
                                     + (" (data.small_images=skip)" if train else ""))
                fields = grow_to(fields, need, policy, images)
                h, w = fields["target"].shape[:2]
            if train:
                top, left, size = random_crop_box(h, w, cfg.patch, rng, align)
                ch = cw = size
            else:
                top, left, ch, cw = center_crop_box(h, w, getattr(cfg, "val_crop", None), align)
            fields = {n: a[top:top + ch, left:left + cw] for n, a in fields.items()}
        if train and cfg.augment:
            fields = augment_arrays(fields, rng)
        else:
            fields = {n: np.ascontiguousarray(a) for n, a in fields.items()}
        return fields

    def __call__(self, record: Dict[str, Any], cfg: Any, rng: np.random.Generator,
                 train: bool) -> Dict[str, torch.Tensor]:
        fields = self.prepare(record, cfg, rng, train)
        out = dict(fields)
        out.update(self.degrade(fields, cfg, rng))
        if "input" not in out:
            raise RuntimeError(f"task {self.name}: degrade() returned no 'input'")
        return {name: to_tensor(a) for name, a in out.items()}


class JpegTask(Task):
    name = "jpeg"

    def tag(self, cfg):
        return f"jpeg-q{cfg.quality}-{'y' if cfg.channels == 1 else 'rgb'}"

    def degrade(self, fields, cfg, rng):
        return {"input": jpeg(fields["target"], cfg.quality)}


class BitDepthTask(Task):
    name = "bitdepth"

    def tag(self, cfg):
        return f"bitdepth-{cfg.bits}-{cfg.expand}" + ("-y" if cfg.channels == 1 else "")

    def degrade(self, fields, cfg, rng):
        return {"input": quantize(fields["target"], cfg.bits, cfg.expand)}


class SuperResolutionTask(Task):
    """Bicubic x``scale`` SR: the input is the small image (``patch // scale`` square)."""

    name = "sr"

    def align(self, cfg):
        return int(cfg.scale)

    def tag(self, cfg):
        return f"sr-x{cfg.scale}" + ("-y" if cfg.channels == 1 else "")

    def degrade(self, fields, cfg, rng):
        return {"input": bicubic_down(fields["target"], cfg.scale)}


class InpaintTask(Task):
    """Inpainting: holes (``mask`` 1xHxW, 1 = hole) are filled with 0.5 grey in the input.

    Mid-grey rather than 0 keeps the filled value at the centre of the [0, 1] range so the
    network cannot confuse holes with black image content; the mask is returned too, so a
    generator can take it as a fourth input channel.
    """

    name = "inpaint"

    def degrade(self, fields, cfg, rng):
        t = fields["target"]
        mask = inpaint_mask(t.shape[0], t.shape[1], rng, cfg.hole_min, cfg.hole_max)
        m = mask if t.ndim == 2 else mask[..., None]
        inp = (t.astype(np.float32) / 255.0) * (1.0 - m) + 0.5 * m
        return {"input": inp.astype(np.float32), "mask": mask}


class EdgesTask(Task):
    """Edges->photo: the input is the Canny edge map of the (cropped) target."""

    name = "edges"

    def degrade(self, fields, cfg, rng):
        e = edges(fields["target"])
        return {"input": e[..., 0] if fields["target"].ndim == 2 else e}


def register_task(task: Any) -> Any:
    """Register a Task instance (or a Task subclass, instantiated) under ``task.name`` in
    :data:`raygan.platform.core.registry.TASKS`. Usable as a class decorator; returns its argument."""
    inst = task() if isinstance(task, type) else task
    if not isinstance(inst, Task) or not inst.name:
        raise TypeError(f"register_task: expected a named Task, got {task!r}")
    TASKS.register(inst.name, inst)
    return task


for _cls in (JpegTask, BitDepthTask, SuperResolutionTask, InpaintTask, EdgesTask):
    register_task(_cls)


def get_task(name: Optional[str]) -> Task:
    """The registered task ``name`` (KeyError listing the registered ones otherwise)."""
    return TASKS.get(name)


def task_tag(data_cfg: Any) -> str:
    """A short label of task + settings, e.g. ``jpeg-q10-rgb``, ``bitdepth-4-mig``, ``sr-x4``."""
    return get_task(data_cfg.task).tag(data_cfg)
