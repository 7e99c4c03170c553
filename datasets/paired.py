"""Paired image-to-image data: the ``paired`` task and the pix2pix-style ingesters.

Two source layouts, both local folders or ``s3://`` prefixes:

* **A|B pairs** (pix2pix's ``datasets/<name>/{train,val,test}/*.jpg``): every image is
  the input and the target side by side, ``2w x h``. ``direction="AtoB"`` (pix2pix's
  default) takes the left half as the input and the right half as the target;
  ``"BtoA"`` the opposite (e.g. facades, where A is the photo).
* **Two aligned folders**: ``inputs/<rel>.<ext>`` and ``targets/<rel>.<ext>`` are paired
  by relative path without extension (``a/b.jpg`` pairs with ``a/b.png``); files present
  on one side only are listed in the manifest's ``skipped``.

Splits: when the source has ``train/`` and ``val/`` (or ``test/``) sub-folders they are
used as the splits (``test`` becomes ``val`` when there is no ``val``); otherwise a pair
goes to val iff ``split_of(relpath, seed, val_fraction)``.

Shard records: ``png`` = the target, ``input.png`` = the input (both re-encoded as lossless
RGB PNGs, see ``raygan.datasets.shards.encode_image``), ``json`` = ``{"source", "width",
"height", "direction"}``. Input and target must have the same size (checked).

Task ``paired`` (:class:`PairedTask`): the stored input is cropped with exactly the same
box as the target (``spatial_fields``), converted to Y with it when ``data.channels: 1``
(``color_fields``), and flipped with it. As in pix2pix, augmentation is a **horizontal flip
only** (no 90-degree rotations: facades, maps and shoes have an up direction).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from raygan.datasets.degradations import Task, register_task
from raygan.datasets.shards import IMAGE_EXTENSIONS, ShardSetWriter, encode_image, sanitize_key, split_of
from raygan.platform.core import storage

__all__ = ["PairedTask", "split_ab", "write_paired_shards", "decode_image_field"]


def decode_image_field(field: Any, name: str = "input") -> np.ndarray:
    """PNG/JPEG bytes or an already decoded array -> uint8 HxWx3 (or HxW) array."""
    if isinstance(field, (bytes, bytearray, memoryview)):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(bytes(field))) as im:
                return np.asarray(im.convert("RGB")).copy()
        except Exception as exc:
            raise ValueError(f"field {name!r} is not a decodable image: {exc}") from None
    arr = np.asarray(field)
    if arr.dtype != np.uint8:
        raise ValueError(f"field {name!r}: expected uint8 image, got {arr.dtype}")
    return arr


def _to_rgb_array(data: bytes, what: str) -> np.ndarray:
    png, _, _ = encode_image(data)  # EXIF, grayscale/palette/16-bit, alpha -> RGB, as images
    return decode_image_field(png, what)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def split_ab(img: np.ndarray, direction: str = "AtoB") -> Tuple[np.ndarray, np.ndarray]:
    """(input, target) halves of a side-by-side ``A|B`` image."""
    if direction not in ("AtoB", "BtoA"):
        raise ValueError(f"direction must be AtoB or BtoA, got {direction!r}")
    h, w = img.shape[:2]
    if w % 2:
        raise ValueError(f"an A|B pair needs an even width, got {w}x{h}")
    a, b = img[:, : w // 2], img[:, w // 2:]
    return (a, b) if direction == "AtoB" else (b, a)


def _rel_stem(uri: str, base: str) -> str:
    rel = uri[len(base.rstrip("/")):].lstrip("/")
    return os.path.splitext(rel)[0]


def _list_images(src: str, storage_cfg: Any) -> List[str]:
    if storage.is_local(src) and not os.path.isdir(storage.local_path(src)):
        raise FileNotFoundError(f"source folder {src} does not exist")
    base = src.rstrip("/")
    out = []
    for uri in storage.list_files(base, storage_cfg=storage_cfg):
        rel = uri[len(base):].lstrip("/")
        if any(p.startswith(".") for p in rel.split("/")):
            continue
        if rel.lower().endswith(IMAGE_EXTENSIONS):
            out.append(uri)
    return out


def _splits_of(rels: List[str], seed: int, val_fraction: float) -> Dict[str, str]:
    """relpath -> split: train/val/test sub-folders if present, else the seeded hash."""
    tops = {r.split("/", 1)[0] for r in rels if "/" in r}
    if "train" in tops and ({"val", "test"} & tops):
        val_dir = "val" if "val" in tops else "test"
        out = {}
        for r in rels:
            top = r.split("/", 1)[0]
            if top == "train":
                out[r] = "train"
            elif top == val_dir:
                out[r] = "val"
        return out  # other folders (e.g. test when val exists) are not ingested
    return {r: split_of(r, seed, val_fraction) for r in rels}


def write_paired_shards(dst: str, pairs: Optional[str] = None, inputs: Optional[str] = None,
                        targets: Optional[str] = None, direction: str = "AtoB",
                        val_fraction: float = 0.1, seed: int = 0, shard_size: int = 128,
                        min_size: int = 0, storage_cfg: Any = None,
                        progress: bool = True) -> Dict[str, Any]:
    """Ingest A|B images (``pairs``) or two aligned folders (``inputs`` + ``targets``)."""
    if (pairs is None) == (inputs is None and targets is None):
        raise ValueError("give either pairs=<A|B folder> or inputs=<folder> and targets=<folder>")
    if pairs is None and (inputs is None or targets is None):
        raise ValueError("two-folder mode needs both inputs and targets folders")
    if direction not in ("AtoB", "BtoA"):
        raise ValueError(f"direction must be AtoB or BtoA, got {direction!r}")

    jobs: List[Tuple[str, Optional[str], str]] = []  # (uri, other uri or None, relpath)
    skipped: List[Dict[str, str]] = []
    if pairs is not None:
        base = pairs.rstrip("/")
        for uri in _list_images(base, storage_cfg):
            jobs.append((uri, None, _rel_stem(uri, base)))
        sources = [{"uri": pairs, "role": "pairs", "files": len(jobs)}]
    else:
        ins = {_rel_stem(u, inputs): u for u in _list_images(inputs, storage_cfg)}
        tgs = {_rel_stem(u, targets): u for u in _list_images(targets, storage_cfg)}
        for rel in sorted(set(ins) | set(tgs)):
            if rel in ins and rel in tgs:
                jobs.append((ins[rel], tgs[rel], rel))
            else:
                side = "targets" if rel in ins else "inputs"
                skipped.append({"path": ins.get(rel) or tgs.get(rel),
                                "reason": f"no matching file in {side}"})
        sources = [{"uri": inputs, "role": "inputs", "files": len(ins)},
                   {"uri": targets, "role": "targets", "files": len(tgs)}]
    if not jobs:
        raise FileNotFoundError(f"no image pairs found in {pairs or (inputs + ' + ' + targets)}")
    split = _splits_of([j[2] for j in jobs], seed, val_fraction)
    jobs = [j for j in jobs if j[2] in split]
    train = [j for j in jobs if split[j[2]] == "train"]
    val = sorted((j for j in jobs if split[j[2]] == "val"), key=lambda j: j[2])
    order = [train[i] for i in np.random.default_rng(seed).permutation(len(train))] + val

    from tqdm import tqdm

    with ShardSetWriter(dst, shard_size, storage_cfg) as writer:
        for uri, other, rel in tqdm(order, desc="pairs", unit="pair", disable=not progress):
            try:
                a = _to_rgb_array(storage.read_bytes(uri, storage_cfg=storage_cfg), uri)
                if other is None:
                    inp, tgt = split_ab(a, direction)
                else:
                    inp, tgt = a, _to_rgb_array(storage.read_bytes(other, storage_cfg=storage_cfg), other)
                    if inp.shape != tgt.shape:
                        raise ValueError(f"input {inp.shape[1]}x{inp.shape[0]} and target "
                                         f"{tgt.shape[1]}x{tgt.shape[0]} differ in size")
                if min(tgt.shape[:2]) < min_size:
                    raise ValueError(f"too small: {tgt.shape[1]}x{tgt.shape[0]} < min_size {min_size}")
            except ValueError as exc:
                skipped.append({"path": uri, "reason": str(exc)})
                continue
            meta = {"source": uri if other is None else [uri, other], "width": tgt.shape[1],
                    "height": tgt.shape[0], "direction": direction if other is None else "folders"}
            writer.add(split[rel], sanitize_key(rel),
                       {"png": _png(np.ascontiguousarray(tgt)),
                        "input.png": _png(np.ascontiguousarray(inp)),
                        "json": json.dumps(meta).encode()})
        if sum(writer.counts.values()) == 0:
            first = skipped[0]["reason"] if skipped else "none"
            raise ValueError(f"no usable pairs ({len(skipped)} skipped; first: {first})")
        return writer.close({"sources": sources, "skipped": skipped, "val_fraction": val_fraction,
                             "seed": seed, "direction": direction if pairs else "folders",
                             "task": "paired"})


@register_task
class PairedTask(Task):
    """Paired translation: the record's stored ``input`` is cropped/flipped with the target."""

    name = "paired"
    spatial_fields = ("input",)
    color_fields = ("input",)

    def prepare(self, record: Dict[str, Any], cfg: Any, rng: np.random.Generator,
                train: bool) -> Dict[str, np.ndarray]:
        record = self.decoded(record, "input", decode_image_field, "jobs/make_paired_shards.py")
        fields = self.prepare_without_rotation(record, cfg, rng, train)  # pix2pix: flips only
        if train and cfg.augment and rng.integers(0, 2):
            fields = {n: np.ascontiguousarray(a[:, ::-1]) for n, a in fields.items()}
        return fields

    def degrade(self, fields: Dict[str, np.ndarray], cfg: Any, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        return {"input": fields["input"]}
