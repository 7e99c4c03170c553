"""WebDataset tar shards: a generic writer and the image-folder -> shard-set job.

Layout at ``dst`` (a local folder or ``s3://bucket/prefix``)::

    dst/train/shard-000000.tar ...
    dst/val/shard-000000.tar ...
    dst/manifest.json

``manifest.json`` = ``{"format": "raygan-shards/1", "splits": {"train": {"count": N,
"shards": [{"name", "count", "bytes", "sha256"}], "image_sizes": [[w, h, n], ...]},
"val": {...}}, "shard_size", ...}`` plus what the producer adds (:func:`write_shards` adds ``sources``, ``skipped``,
``val_fraction``, ``seed``, ``min_size``). Shard names are relative to ``dst/<split>/``.

A sample is the tar members ``<key>.<field>`` (the webdataset convention: the key is
everything before the first dot of the last path component). Image shards hold ``png``
(lossless RGB) and ``json`` (``{"source", "width", "height"}``). Other producers add more
fields through :class:`ShardSetWriter`, e.g. ``input.png`` (paired data) or
``parsing.npy`` (face parsing maps); the pipeline decodes them by extension.

``image_sizes`` is a histogram of the split's target sizes (``n`` images of ``w`` x ``h``,
sorted), from each sample's ``json`` ``width``/``height`` (or ``add(..., size=(w, h))``); it
is what ``train.epoch_unit: patches`` counts patches from, and is left out of a split where
any sample had no size. Manifests written before it existed lack it: re-run the producer.

Tar members get fixed owners and mtimes, so the same inputs give byte-identical shards
(and the same sha256) on every run.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from raygan.platform.core import storage
from raygan.platform.core.errors import ShardError

__all__ = [
    "ShardError", "ShardSetWriter", "write_shards", "encode_image", "sanitize_key",
    "split_of", "read_manifest", "shard_name", "MANIFEST_NAME", "FORMAT", "IMAGE_EXTENSIONS",
]

FORMAT = "raygan-shards/1"
MANIFEST_NAME = "manifest.json"
DEFAULT_SHARD_SIZE = 128
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pnm", ".gif")
# "auto" switches to Ray at this many files: below it, starting Ray costs more than it saves.
RAY_AUTO_THRESHOLD = 64

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$")
_FIELD_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")




def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def sanitize_key(relpath: str) -> str:
    """A webdataset-safe key from a relative path: extension dropped, other characters
    than ``[A-Za-z0-9_-]`` replaced by ``_``, ``/`` kept as the folder separator."""
    relpath = relpath.replace(os.sep, "/").strip("/")
    stem, ext = os.path.splitext(relpath)
    parts = [re.sub(r"[^A-Za-z0-9_\-]", "_", p) for p in stem.split("/") if p]
    return "/".join(p for p in parts if p) or "_"


def split_of(relpath: str, seed: int, val_fraction: float) -> str:
    """``"val"`` iff sha256(seed, relpath) as a number in [0, 1) is below val_fraction."""
    if val_fraction <= 0:
        return "train"
    digest = hashlib.sha256(f"{seed}:{relpath}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0 ** 64
    return "val" if u < val_fraction else "train"


# ----------------------------------------------------------------------------- writer


class _OpenShard:
    def __init__(self, tmpdir: str):
        fd, self.path = tempfile.mkstemp(prefix="shard-", suffix=".tar", dir=tmpdir)
        self.file = os.fdopen(fd, "wb")
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.USTAR_FORMAT)
        self.count = 0


class ShardSetWriter:
    """Write samples into per-split tar shards of ``shard_size`` samples under ``dst``.

    ``add(split, key, {"png": b"...", "json": b"..."})`` appends one sample (field names
    become member extensions); full shards are uploaded as they fill (local: atomic
    rename; S3: multipart upload), so memory stays at one shard per split on local disk.
    ``close(extra)`` flushes, writes ``manifest.json`` (``extra`` merged in) and returns
    the manifest. Keys must be unique within a split and match ``[A-Za-z0-9_-]`` parts
    joined by ``/`` (see :func:`sanitize_key`). Use as a context manager to clean up
    temporary files on errors (``abort``).
    """

    def __init__(self, dst: str, shard_size: int = DEFAULT_SHARD_SIZE, storage_cfg: Any = None,
                 splits: Sequence[str] = ("train", "val")):
        if int(shard_size) < 1:
            raise ShardError(f"shard_size must be >= 1, got {shard_size}")
        if storage.is_s3(dst):  # fail before any work on a missing bucket / dead endpoint
            storage.exists(storage.join(dst, MANIFEST_NAME), storage_cfg=storage_cfg)
        self.dst = dst
        self.shard_size = int(shard_size)
        self.storage_cfg = storage_cfg
        self._tmpdir = tempfile.mkdtemp(prefix="raygan-shards-")
        self._open: Dict[str, _OpenShard] = {}
        self._done: Dict[str, List[Dict[str, Any]]] = {s: [] for s in splits}
        self._keys: Dict[str, set] = {s: set() for s in splits}
        # per split: {(w, h): n}; None once a sample of the split came without a size
        self._sizes: Dict[str, Optional[Dict[Tuple[int, int], int]]] = {s: {} for s in splits}
        self._closed = False

    def __enter__(self) -> "ShardSetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    def add(self, split: str, key: str, fields: Dict[str, bytes],
            size: Optional[Tuple[int, int]] = None) -> None:
        """Append one sample. ``size`` = ``(width, height)`` of its target image, for the
        manifest's ``image_sizes``; by default read from the ``json`` field's ``width`` and
        ``height``."""
        if self._closed:
            raise ShardError("ShardSetWriter.add after close")
        if not isinstance(split, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", split):
            raise ShardError(f"invalid split name {split!r}")
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise ShardError(f"invalid sample key {key!r}: use [A-Za-z0-9_-] parts joined by '/' (see sanitize_key)")
        if not fields:
            raise ShardError(f"sample {key!r} has no fields")
        for name, data in fields.items():
            if not _FIELD_RE.match(name):
                raise ShardError(f"sample {key!r}: invalid field name {name!r}")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ShardError(f"sample {key!r}: field {name!r} must be bytes, got {type(data).__name__}")
        keys = self._keys.setdefault(split, set())
        self._done.setdefault(split, [])
        if key in keys:
            raise ShardError(f"duplicate sample key {key!r} in split {split!r}")
        keys.add(key)
        shard = self._open.get(split)
        if shard is None:
            shard = self._open[split] = _OpenShard(self._tmpdir)
        for name in sorted(fields):
            data = bytes(fields[name])
            info = tarfile.TarInfo(f"{key}.{name}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uname = info.gname = "raygan"
            shard.tar.addfile(info, io.BytesIO(data))
        shard.count += 1
        self._record_size(split, fields, size)
        if shard.count >= self.shard_size:
            self._flush(split)

    def _record_size(self, split: str, fields: Dict[str, bytes], size: Optional[Tuple[int, int]]) -> None:
        hist = self._sizes.setdefault(split, {})
        if hist is None:
            return
        if size is None and "json" in fields:
            try:
                meta = json.loads(bytes(fields["json"]))
                size = (int(meta["width"]), int(meta["height"]))
            except (ValueError, TypeError, KeyError):
                size = None
        if size is None:
            self._sizes[split] = None  # one unknown size: no histogram for this split
            return
        wh = (int(size[0]), int(size[1]))
        hist[wh] = hist.get(wh, 0) + 1

    def _flush(self, split: str) -> None:
        shard = self._open.pop(split, None)
        if shard is None:
            return
        shard.tar.close()
        shard.file.close()
        try:
            h = hashlib.sha256()
            with open(shard.path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            name = shard_name(len(self._done[split]))
            storage.put_file(shard.path, storage.join(self.dst, split, name), storage_cfg=self.storage_cfg)
            self._done[split].append({
                "name": name, "count": shard.count, "bytes": os.path.getsize(shard.path),
                "sha256": h.hexdigest(),
            })
        finally:
            os.unlink(shard.path)

    @property
    def counts(self) -> Dict[str, int]:
        return {s: len(k) for s, k in self._keys.items()}

    def close(self, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Flush the open shards, write ``manifest.json``, return the manifest."""
        if self._closed:
            raise ShardError("ShardSetWriter closed twice")
        try:
            for split in list(self._open):
                self._flush(split)
            manifest: Dict[str, Any] = {
                "format": FORMAT,
                "shard_size": self.shard_size,
                "splits": {
                    s: {"count": sum(e["count"] for e in shards), "shards": shards}
                    for s, shards in self._done.items()
                },
            }
            for s, entry in manifest["splits"].items():
                hist = self._sizes.get(s)
                if hist is not None and entry["count"]:
                    entry["image_sizes"] = [[w, h, n] for (w, h), n in sorted(hist.items())]
            for k, v in (extra or {}).items():
                if k in ("format", "splits"):
                    raise ShardError(f"manifest key {k!r} is reserved")
                manifest[k] = v
            storage.write_bytes(storage.join(self.dst, MANIFEST_NAME),
                                json.dumps(manifest, indent=1).encode(), storage_cfg=self.storage_cfg)
            return manifest
        finally:
            self._closed = True
            self._cleanup()

    def abort(self) -> None:
        """Drop open shards and temporary files (uploaded shards stay; no manifest)."""
        self._closed = True
        self._cleanup()

    def _cleanup(self) -> None:
        for shard in self._open.values():
            try:
                shard.tar.close()
                shard.file.close()
            except Exception:
                pass
        self._open.clear()
        shutil.rmtree(self._tmpdir, ignore_errors=True)


def read_manifest(uri: str, storage_cfg: Any = None) -> Optional[Dict[str, Any]]:
    """The manifest at ``uri/manifest.json``, or None when there is none."""
    path = storage.join(uri, MANIFEST_NAME)
    if not storage.exists(path, storage_cfg=storage_cfg):
        return None
    try:
        manifest = json.loads(storage.read_bytes(path, storage_cfg=storage_cfg))
    except ValueError as exc:
        raise ShardError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "splits" not in manifest:
        raise ShardError(f"{path} is not a {FORMAT} manifest")
    return manifest


# ----------------------------------------------------------------------------- encoding


def _to_rgb(im) -> Any:
    from PIL import Image

    if im.mode == "RGB":
        return im
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(im, dtype=np.float64)
        if arr.max(initial=0) > 255:  # 16-bit data
            arr = arr / 257.0
        g = np.clip(np.floor(arr + 0.5), 0, 255).astype(np.uint8)
        return Image.fromarray(g, mode="L").convert("RGB")
    if "A" in im.mode or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")  # transparency -> white
    return im.convert("RGB")


def encode_image(data: bytes, min_size: int = 0) -> Tuple[bytes, int, int]:
    """Decode any PIL-readable image and re-encode it as a lossless RGB PNG.

    EXIF orientation is applied, grayscale/palette/16-bit sources become 8-bit RGB,
    transparency is composited on white. Raises ``ValueError`` with the skip reason
    ("cannot decode: ..." or "too small: WxH < min_size N").
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
            rgb.load()
    except Image.UnidentifiedImageError:
        raise ValueError("cannot decode: not a recognized image format") from None
    except Exception as exc:  # PIL raises many types for broken files
        raise ValueError(f"cannot decode: {type(exc).__name__}: {exc}") from None
    w, h = rgb.size
    if min(w, h) < min_size:
        raise ValueError(f"too small: {w}x{h} < min_size {min_size}")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", compress_level=3)
    return buf.getvalue(), w, h


def _encode_chunk(uris: List[str], min_size: int, storage_cfg: Any) -> List[Tuple]:
    """Encode a chunk: ``("ok", png, w, h)`` or ``("skip", reason)`` per input, in order."""
    out: List[Tuple] = []
    for uri in uris:
        try:
            data = storage.read_bytes(uri, storage_cfg=storage_cfg)
            png, w, h = encode_image(data, min_size)
            out.append(("ok", png, w, h))
        except (ValueError, storage.StorageError) as exc:
            out.append(("skip", str(exc)))
    return out


def _encode_sequential(uris: List[str], min_size: int, storage_cfg: Any) -> Iterable[Tuple]:
    for uri in uris:
        yield _encode_chunk([uri], min_size, storage_cfg)[0]


def ray_map_ordered(fn: Any, items: List[Any], *args: Any, chunk: Optional[int] = None) -> Iterable[Any]:
    """``fn(chunk_of_items, *args)`` (returning a list) as Ray tasks over ``items``; results
    are yielded in input order (shards come out deterministic) with at most 2 tasks per CPU
    in flight. Starts a private local Ray when none is running, and stops it after."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        chunk = chunk or int(min(64, max(4, math.ceil(len(items) / (4 * cpus)))))
        chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
        remote = ray.remote(num_cpus=1, max_retries=2)(fn)
        arg_refs = [ray.put(a) for a in args]
        pending: List[Any] = []
        nxt = 0
        while nxt < len(chunks) or pending:
            while nxt < len(chunks) and len(pending) < 2 * cpus:
                pending.append(remote.remote(chunks[nxt], *arg_refs))
                nxt += 1
            yield from ray.get(pending.pop(0))
    finally:
        if started:
            ray.shutdown()


def _encode_ray(uris: List[str], min_size: int, storage_cfg: Any) -> Iterable[Tuple]:
    return ray_map_ordered(_encode_chunk, uris, min_size, storage_cfg)


# ----------------------------------------------------------------------------- job


def _collect(source: str, storage_cfg: Any) -> Tuple[str, List[Tuple[str, str]]]:
    """``(name, [(uri, relpath)])`` for a folder (recursive) or a single image file."""
    if storage.is_local(source):
        path = storage.local_path(source)
        if os.path.isfile(path):
            name = os.path.basename(path)
            return "", [(source, name)] if name.lower().endswith(IMAGE_EXTENSIONS) else []
        if not os.path.isdir(path):
            raise ShardError(f"source {source} does not exist")
    uris = storage.list_files(source, storage_cfg=storage_cfg)
    base = source.rstrip("/")
    if storage.is_local(source):
        name = os.path.basename(os.path.abspath(storage.local_path(source)))
    else:
        name = base.rsplit("/", 1)[-1]
    if storage.is_s3(source) and not uris:
        raise ShardError(f"source {source} holds no files")
    files = []
    for uri in uris:
        rel = uri[len(base):].lstrip("/")
        parts = rel.split("/")
        if any(p.startswith(".") for p in parts):  # hidden files (.DS_Store, ._x)
            continue
        if rel.lower().endswith(IMAGE_EXTENSIONS):
            files.append((uri, rel))
    return name, files


def write_shards(
    sources: Sequence[str],
    dst: str,
    shard_size: int = DEFAULT_SHARD_SIZE,
    val_fraction: float = 0.1,
    seed: int = 0,
    min_size: int = 32,
    parallel: str = "auto",
    storage_cfg: Any = None,
    progress: bool = True,
    val_sources: Sequence[str] = (),
) -> Dict[str, Any]:
    """Encode image folders (or single files; local or S3) into a train/val shard set.

    Split: every file under ``val_sources`` goes to val; any other file goes to val iff
    :func:`split_of` (a hash of seed and its relative path ``<folder name>/<path>``) says
    so. Train samples are written in a seeded random order (so every shard mixes the
    whole corpus), val samples sorted by key. Undecodable images and images smaller than
    ``min_size`` on a side are skipped and listed in ``manifest["skipped"]``; files
    without an image extension and hidden files are ignored. ``parallel``: ``"ray"``
    (chunked Ray tasks; ``ray.init(address="local")`` when Ray is not running),
    ``"none"``, or ``"auto"`` (Ray from 64 files on). Returns the manifest.
    """
    if isinstance(sources, str):
        sources = [sources]
    if isinstance(val_sources, str):
        val_sources = [val_sources]
    if not sources and not val_sources:
        raise ShardError("no sources given")
    if not 0 <= val_fraction < 1:
        raise ShardError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if parallel not in ("auto", "ray", "none"):
        raise ShardError(f"parallel must be auto, ray or none, got {parallel!r}")
    storage.join(dst)  # scheme check before any work
    if storage.is_s3(dst):  # missing bucket / dead endpoint: fail before encoding anything
        storage.exists(storage.join(dst, MANIFEST_NAME), storage_cfg=storage_cfg)

    entries: List[Tuple[str, str, str]] = []  # (uri, key, split)
    source_info = []
    seen: Dict[str, int] = {}
    for role, group in (("split", sources), ("val", val_sources)):
        for src in group:
            name, files = _collect(src, storage_cfg)
            source_info.append({"uri": src, "role": role, "files": len(files)})
            for uri, rel in files:
                relpath = f"{name}/{rel}" if name else rel
                split = "val" if role == "val" else split_of(relpath, seed, val_fraction)
                key = sanitize_key(relpath)
                if key in seen:  # e.g. "a b.png" and "a_b.png"; keep keys unique
                    seen[key] += 1
                    key = f"{key}_{seen[key]}"
                seen.setdefault(key, 0)
                entries.append((uri, key, split))
    if not entries:
        raise ShardError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {', '.join(list(sources) + list(val_sources))}")

    train = [e for e in entries if e[2] == "train"]
    val = sorted((e for e in entries if e[2] == "val"), key=lambda e: e[1])
    order = [train[i] for i in np.random.default_rng(seed).permutation(len(train))] + val

    use_ray = parallel == "ray" or (parallel == "auto" and len(order) >= RAY_AUTO_THRESHOLD)
    uris = [e[0] for e in order]
    results = (_encode_ray if use_ray else _encode_sequential)(uris, int(min_size), storage_cfg)

    from tqdm import tqdm

    skipped: List[Dict[str, str]] = []
    writer = ShardSetWriter(dst, shard_size, storage_cfg)
    with writer:
        bar = tqdm(total=len(order), desc="encoding", unit="img", disable=not progress)
        for (uri, key, split), res in zip(order, results):
            if res[0] == "ok":
                _, png, w, h = res
                meta = json.dumps({"source": uri, "width": w, "height": h}).encode()
                writer.add(split, key, {"png": png, "json": meta})
            else:
                skipped.append({"path": uri, "reason": res[1]})
            bar.update(1)
        bar.close()
        if sum(writer.counts.values()) == 0:
            first = skipped[0]["reason"] if skipped else "none found"
            raise ShardError(
                f"no usable images in {', '.join(list(sources) + list(val_sources))}: "
                f"{len(skipped)} skipped (first: {first})"
            )
        return writer.close({
            "sources": source_info,
            "skipped": skipped,
            "val_fraction": val_fraction,
            "seed": seed,
            "min_size": min_size,
        })
