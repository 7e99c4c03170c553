"""CelebAMask-HQ faces + face-parsing maps: the shard ingester and the ``face_sr`` task.

Source layout (the CelebAMask-HQ release)::

    SRC/CelebA-HQ-img/<i>.jpg                                     1024x1024 faces
    SRC/CelebAMask-HQ-mask-anno/<k>/<i zero-padded to 5>_<part>.png  512x512 part masks
                                                                   (k = i // 2000)

Mask files are found anywhere under ``CelebAMask-HQ-mask-anno`` by name, so the folder
number ``k`` is not relied upon. A missing part file means the part is not visible (e.g.
an ear behind hair): its map is all zeros.

The 11 maps (Liu 2023 uses CelebAMask-HQ's facial parts; hair, neck, cloth, hat,
eyeglasses and earrings are not used):

====  =========  =============================================
map   part       meaning
====  =========  =============================================
0     skin       facial skin
1     nose       nose
2     l_eye      left eye (image-left as annotated)
3     r_eye      right eye
4     l_brow     left eyebrow
5     r_brow     right eyebrow
6     l_ear      left ear
7     r_ear      right ear
8     mouth      mouth interior (between the lips)
9     u_lip      upper lip
10    l_lip      lower lip
====  =========  =============================================

Shard records (:func:`write_face_shards`, written with ``ShardSetWriter``): ``png`` = the
face resized to ``size`` (128) with PIL bicubic (antialiased), lossless RGB PNG;
``parsing.npy`` = the 11 maps, bit-packed along the map axis
(``np.packbits(maps, axis=-1)``, big bit order: map k is bit ``7 - k % 8`` of byte
``k // 8``) as a ``size x size x 2`` uint8 array saved with ``allow_pickle=False``
(lossless, 2 bytes per pixel, and still spatially croppable without unpacking); ``json``
= ``{"source", "index", "width", "height", "parts", "parsing_format"}``. Masks are
resized by box-filter averaging and a majority threshold (>= 50 % of the covered source
pixels), which is exact for masks that are constant on the resize blocks.

Task ``face_sr`` (:class:`FaceSRTask`): crop (a random ``data.patch`` crop aligned to
``data.scale`` for training -- the identity for 128x128 records and ``patch: 128`` --, a
centre ``data.val_crop`` crop or the whole face for validation) and augmentation are
applied to the face and its maps together. Augmentation is a **horizontal flip only,
no rotations** (faces are upright in the data and at test time; rotated faces would
teach the prior branch poses it never sees). A flip mirrors the face, so what was the
person's left eye/brow/ear is now where the right one is: the flip also **swaps the
left/right maps** (2<->3, 4<->5, 6<->7) so each map keeps meaning the same side of the
image. The input is ``bicubic_down(face, data.scale)`` (16x16 for x8); the batch gets
``"parsing"`` as float {0, 1} maps (``B x 11 x H x W``).
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from raygan.datasets.degradations import Task, bicubic_down, register_task
from raygan.datasets.shards import ShardSetWriter, ray_map_ordered, split_of
from raygan.platform.core import storage

__all__ = [
    "PARTS", "N_MAPS", "FLIP_PERM", "IMG_DIR", "MASK_DIR", "PARSING_FORMAT", "FaceSRTask",
    "pack_maps", "unpack_maps", "encode_parsing", "decode_parsing", "find_faces",
    "load_face", "write_face_shards", "draw_synthetic_face", "make_synthetic_celebamask",
]

PARTS: Tuple[str, ...] = ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear",
                          "r_ear", "mouth", "u_lip", "l_lip")
N_MAPS = len(PARTS)
#: map permutation applied with a horizontal flip (left/right parts swap)
# (l_/r_ eye, brow and ear swap; "l_lip"/"u_lip" are lower/upper, not sides)
FLIP_PERM: Tuple[int, ...] = (0, 1, 3, 2, 5, 4, 7, 6, 8, 9, 10)
IMG_DIR = "CelebA-HQ-img"
MASK_DIR = "CelebAMask-HQ-mask-anno"
PARSING_FORMAT = "packbits-big-11"

_IMG_RE = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)
_MASK_RE = re.compile(r"^(\d+)_([a-z_]+)\.png$", re.IGNORECASE)


# ----------------------------------------------------------------------------- encoding


def pack_maps(maps: np.ndarray) -> np.ndarray:
    """HxWx11 {0,1} maps -> HxWx2 uint8 (bit-packed along the map axis)."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[2] != N_MAPS:
        raise ValueError(f"expected HxWx{N_MAPS} parsing maps, got shape {maps.shape}")
    return np.packbits(maps.astype(bool), axis=-1)


def unpack_maps(packed: np.ndarray) -> np.ndarray:
    """HxWx2 packed uint8 (or already unpacked HxWx11) -> HxWx11 uint8 in {0, 1}."""
    packed = np.asarray(packed)
    if packed.ndim == 3 and packed.shape[2] == N_MAPS:
        return (packed > 0).astype(np.uint8)
    if packed.ndim != 3 or packed.dtype != np.uint8 or packed.shape[2] != (N_MAPS + 7) // 8:
        raise ValueError(f"parsing maps: expected HxWx{(N_MAPS + 7) // 8} packed uint8 "
                         f"({PARSING_FORMAT}), got {packed.dtype} {packed.shape}")
    return np.unpackbits(packed, axis=-1, count=N_MAPS)


def encode_parsing(maps: np.ndarray) -> bytes:
    """The ``parsing.npy`` field: packed maps via ``np.save(..., allow_pickle=False)``."""
    buf = io.BytesIO()
    np.save(buf, pack_maps(maps), allow_pickle=False)
    return buf.getvalue()


def decode_parsing(field: Any) -> np.ndarray:
    """``parsing.npy`` bytes or a decoded array -> HxWx11 uint8 {0, 1} maps."""
    if isinstance(field, (bytes, bytearray, memoryview)):
        try:
            field = np.load(io.BytesIO(bytes(field)), allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"parsing.npy is not a plain numpy array: {exc}") from None
    return unpack_maps(field)


# ----------------------------------------------------------------------------- ingest


def find_faces(src: str, storage_cfg: Any = None) -> List[Tuple[int, str, Dict[str, str]]]:
    """``[(index, image uri, {part: mask uri})]`` sorted by index, for a CelebAMask-HQ root."""
    base = src.rstrip("/")
    files = storage.list_files(base, storage_cfg=storage_cfg)
    images: Dict[int, str] = {}
    masks: Dict[int, Dict[str, str]] = {}
    for uri in files:
        rel = uri[len(base):].lstrip("/")
        parts = rel.split("/")
        name = parts[-1]
        if parts[0] == IMG_DIR and len(parts) == 2:
            m = _IMG_RE.match(name)
            if m:
                images[int(m.group(1))] = uri
        elif parts[0] == MASK_DIR:
            m = _MASK_RE.match(name)
            if m and m.group(2).lower() in PARTS:
                masks.setdefault(int(m.group(1)), {})[m.group(2).lower()] = uri
    if not images:
        raise FileNotFoundError(
            f"{src}: no faces found; expected the CelebAMask-HQ layout "
            f"{IMG_DIR}/<i>.jpg and {MASK_DIR}/<k>/<iiiii>_<part>.png")
    return [(i, images[i], masks.get(i, {})) for i in sorted(images)]


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Boolean mask -> size x size by box averaging and a >= 50 % majority threshold."""
    from PIL import Image

    if mask.shape == (size, size):
        return mask
    im = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    return np.asarray(im.resize((size, size), Image.BOX)) >= 128


def load_face(index: int, image_uri: str, mask_uris: Dict[str, str], size: int = 128,
              storage_cfg: Any = None) -> Tuple[np.ndarray, np.ndarray]:
    """Read one face and its 11 maps: (size x size x 3 uint8, size x size x 11 uint8 {0,1})."""
    from PIL import Image


    try:
        with Image.open(io.BytesIO(storage.read_bytes(image_uri, storage_cfg=storage_cfg))) as im:
            im = im.convert("RGB")
            face = im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC)
            face = np.asarray(face).copy()
    except storage.StorageError:
        raise
    except Exception as exc:
        raise ValueError(f"{image_uri}: cannot decode face image: {exc}") from None
    maps = np.zeros((size, size, N_MAPS), dtype=np.uint8)
    for k, part in enumerate(PARTS):
        uri = mask_uris.get(part)
        if uri is None:
            continue  # part not annotated: not visible
        try:
            with Image.open(io.BytesIO(storage.read_bytes(uri, storage_cfg=storage_cfg))) as im:
                m = np.asarray(im.convert("L")) >= 128
        except storage.StorageError:
            raise
        except Exception as exc:
            raise ValueError(f"{uri}: cannot decode mask: {exc}") from None
        maps[..., k] = _resize_mask(m, size)
    return face, maps


def _encode_one(item: Tuple[int, str, Dict[str, str]], size: int, storage_cfg: Any) -> Tuple:
    index, image_uri, mask_uris = item
    try:
        face, maps = load_face(index, image_uri, mask_uris, size, storage_cfg)
    except ValueError as exc:
        return ("skip", str(exc))
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(face).save(buf, format="PNG", compress_level=3)
    meta = {"source": image_uri, "index": index, "width": size, "height": size,
            "parts": [p for p in PARTS if p in mask_uris], "parsing_format": PARSING_FORMAT}
    return ("ok", buf.getvalue(), encode_parsing(maps), json.dumps(meta).encode())


def _encode_chunk(items: List[Tuple], size: int, storage_cfg: Any) -> List[Tuple]:
    return [_encode_one(it, size, storage_cfg) for it in items]


def _map_ordered(items: List[Tuple], size: int, storage_cfg: Any, use_ray: bool) -> Iterable[Tuple]:
    if not use_ray:
        for it in items:
            yield _encode_one(it, size, storage_cfg)
        return
    yield from ray_map_ordered(_encode_chunk, items, size, storage_cfg, chunk=32)


def write_face_shards(src: str, dst: str, size: int = 128, val_fraction: float = 0.1,
                      val_last: int = 0, seed: int = 0, shard_size: int = 128,
                      limit: Optional[int] = None, parallel: str = "auto",
                      storage_cfg: Any = None, progress: bool = True) -> Dict[str, Any]:
    """Ingest a CelebAMask-HQ root into a face shard set at ``dst``; returns the manifest.

    Split: ``val_last > 0`` puts the ``val_last`` highest indices in val (a fixed split
    by index); otherwise a face goes to val iff ``split_of(str(index), seed, val_fraction)``.
    Train faces are written in a seeded random order, val faces by index.
    """

    if size % 8 or size < 8:
        raise ValueError(f"size must be a positive multiple of 8 (the SR scale), got {size}")
    if parallel not in ("auto", "ray", "none"):
        raise ValueError(f"parallel must be auto, ray or none, got {parallel!r}")
    items = find_faces(src, storage_cfg)
    if limit:
        items = items[:limit]
    indices = [it[0] for it in items]
    if val_last > 0:
        val_ids = set(indices[-val_last:])
    else:
        val_ids = {i for i in indices if split_of(str(i), seed, val_fraction) == "val"}
    train = [it for it in items if it[0] not in val_ids]
    val = [it for it in items if it[0] in val_ids]
    order = [train[j] for j in np.random.default_rng(seed).permutation(len(train))] + val
    use_ray = parallel == "ray" or (parallel == "auto" and len(order) >= 256)

    from tqdm import tqdm

    skipped: List[Dict[str, str]] = []
    with ShardSetWriter(dst, shard_size, storage_cfg) as writer:
        bar = tqdm(total=len(order), desc="faces", unit="img", disable=not progress)
        for item, res in zip(order, _map_ordered(order, size, storage_cfg, use_ray)):
            if res[0] == "ok":
                _, png, npy, meta = res
                split = "val" if item[0] in val_ids else "train"
                writer.add(split, f"celebamaskhq/{item[0]:05d}",
                           {"png": png, "parsing.npy": npy, "json": meta})
            else:
                skipped.append({"path": item[1], "reason": res[1]})
            bar.update(1)
        bar.close()
        if sum(writer.counts.values()) == 0:
            raise ValueError(f"{src}: no usable faces ({len(skipped)} skipped)")
        return writer.close({
            "sources": [{"uri": src, "role": "celebamask-hq", "files": len(items)}],
            "skipped": skipped, "val_fraction": val_fraction, "val_last": val_last,
            "seed": seed, "size": size, "parts": list(PARTS), "parsing_format": PARSING_FORMAT,
            "task": "face_sr",
        })


# ----------------------------------------------------------------------------- synthetic


def draw_synthetic_face(rng: np.random.Generator, size: int = 128,
                        drop_ear: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """A cartoon face and its exact 11 part maps (PIL ellipses/polygons), for demos/tests.

    Parts are drawn on separate layers and made disjoint in drawing order (later parts,
    e.g. the eyes, are cut out of the skin), like CelebAMask-HQ's non-overlapping labels.
    """
    from PIL import Image, ImageDraw

    s = size / 128.0
    j = lambda v: v + rng.uniform(-4, 4)  # noqa: E731  (small random shifts per face)
    cx, cy = j(64), j(66)
    shapes = {
        "l_ear": ("ellipse", (cx - 50, cy - 12, cx - 34, cy + 14)),
        "r_ear": ("ellipse", (cx + 34, cy - 12, cx + 50, cy + 14)),
        "skin": ("ellipse", (cx - 38, cy - 50, cx + 38, cy + 50)),
        "l_brow": ("rectangle", (cx - 28, cy - 28, cx - 8, cy - 23)),
        "r_brow": ("rectangle", (cx + 8, cy - 28, cx + 28, cy - 23)),
        "l_eye": ("ellipse", (cx - 26, cy - 18, cx - 10, cy - 9)),
        "r_eye": ("ellipse", (cx + 10, cy - 18, cx + 26, cy - 9)),
        "nose": ("polygon", [(cx, cy - 10), (cx - 7, cy + 10), (cx + 7, cy + 10)]),
        "u_lip": ("rectangle", (cx - 16, cy + 20, cx + 16, cy + 24)),
        "mouth": ("rectangle", (cx - 14, cy + 25, cx + 14, cy + 27)),
        "l_lip": ("rectangle", (cx - 16, cy + 28, cx + 16, cy + 33)),
    }
    colors = {"skin": (224, 172, 140), "nose": (205, 150, 120), "l_eye": (60, 40, 30),
              "r_eye": (60, 40, 30), "l_brow": (80, 50, 30), "r_brow": (80, 50, 30),
              "l_ear": (214, 160, 130), "r_ear": (214, 160, 130), "mouth": (90, 20, 30),
              "u_lip": (190, 80, 90), "l_lip": (200, 90, 100)}
    taken = np.zeros((size, size), dtype=bool)
    maps = np.zeros((size, size, N_MAPS), dtype=np.uint8)
    bg = rng.integers(40, 200, size=3)
    img = np.empty((size, size, 3), dtype=np.float64)
    img[:] = bg
    # draw order: front-most parts first so that they own their pixels
    for part in ("l_eye", "r_eye", "l_brow", "r_brow", "nose", "mouth", "u_lip", "l_lip",
                 "skin", "l_ear", "r_ear"):
        if drop_ear and part == "r_ear":
            continue
        kind, geom = shapes[part]
        layer = Image.new("L", (size, size), 0)
        d = ImageDraw.Draw(layer)
        if kind == "polygon":
            getattr(d, kind)([(x * s, y * s) for x, y in geom], fill=255)
        else:
            getattr(d, kind)([v * s for v in geom], fill=255)
        m = (np.asarray(layer) > 0) & ~taken
        taken |= m
        maps[..., PARTS.index(part)] = m
        tint = np.asarray(colors[part], dtype=np.float64) * rng.uniform(0.85, 1.15)
        img[m] = tint
    img += rng.normal(0, 4, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), maps


def make_synthetic_celebamask(root: str, n: int, image_size: int = 256, mask_size: int = 256,
                              face_size: int = 128, seed: int = 0, start: int = 0) -> Dict[int, np.ndarray]:
    """Write ``n`` synthetic faces in the exact CelebAMask-HQ layout under local ``root``.

    Faces and maps are drawn at ``face_size`` and enlarged by an integer factor (nearest)
    to ``image_size`` (JPEG, like ``CelebA-HQ-img``) and ``mask_size`` (PNG, 0/255, like
    the annotations), so ingesting at ``face_size`` must give the drawn maps back exactly.
    Every third face has no ``r_ear`` file (a hidden part). Returns ``{index: maps}``.
    """
    from PIL import Image

    for big in (image_size, mask_size):
        if big % face_size:
            raise ValueError(f"sizes must be multiples of face_size {face_size}, got {big}")
    rng = np.random.default_rng(seed)
    out: Dict[int, np.ndarray] = {}
    os.makedirs(os.path.join(root, IMG_DIR), exist_ok=True)
    for i in range(start, start + n):
        face, maps = draw_synthetic_face(rng, face_size, drop_ear=(i % 3 == 2))
        f = image_size // face_size
        Image.fromarray(face.repeat(f, 0).repeat(f, 1)).save(
            os.path.join(root, IMG_DIR, f"{i}.jpg"), quality=95)
        folder = os.path.join(root, MASK_DIR, str(i // 2000))
        os.makedirs(folder, exist_ok=True)
        g = mask_size // face_size
        for k, part in enumerate(PARTS):
            if not maps[..., k].any():
                continue  # CelebAMask-HQ has no file for an absent part
            m = (maps[..., k] * 255).repeat(g, 0).repeat(g, 1)
            Image.fromarray(m, mode="L").save(os.path.join(folder, f"{i:05d}_{part}.png"))
        out[i] = maps
    return out


# ----------------------------------------------------------------------------- task


@register_task
class FaceSRTask(Task):
    """Face SR: crop + horizontal flip (l/r maps swapped) of face and maps; bicubic input."""

    name = "face_sr"
    spatial_fields = ("parsing",)

    def align(self, cfg: Any) -> int:
        return int(cfg.scale)

    def tag(self, cfg: Any) -> str:
        return f"face-sr-x{cfg.scale}" + ("-y" if cfg.channels == 1 else "")

    def prepare(self, record: Dict[str, Any], cfg: Any, rng: np.random.Generator,
                train: bool) -> Dict[str, np.ndarray]:
        record = self.decoded(record, "parsing", decode_parsing, "jobs/make_face_shards.py")
        fields = self.prepare_without_rotation(record, cfg, rng, train)  # faces are only flipped
        if train and cfg.augment and rng.integers(0, 2):
            fields = {"target": np.ascontiguousarray(fields["target"][:, ::-1]),
                      "parsing": np.ascontiguousarray(fields["parsing"][:, ::-1][..., list(FLIP_PERM)])}
        return fields

    def degrade(self, fields: Dict[str, np.ndarray], cfg: Any, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        return {"input": bicubic_down(fields["target"], cfg.scale),
                "parsing": fields["parsing"].astype(np.float32)}
