"""Streaming training and validation data from raygan shard sets (local or S3).

* :class:`ShardSet` finds the shards of a split from ``manifest.json`` (at the URI or its
  parent, so ``dst`` + split and ``dst/train`` both work), else by listing the shard files
  (``*.tar``, ``*.tar.gz``: other tools' shards, indexed on first use).
* :func:`iter_shard` (:mod:`raygan.datasets.reader`) streams the samples of one shard
  (local file or the S3 streaming body, grouped by ``webdataset``). A storage outage is retried within
  ``storage.outage_budget_s`` and resumes at the record where it stopped, never counted
  as bad data; a missing shard is an error; a corrupt tar ends that shard and the records
  it lost are counted as skipped (exactly, when the manifest gives the shard's count).
* :class:`TrainStream` is an infinite ``IterableDataset`` split over (Ray Train rank,
  DataLoader worker); every yielded sample carries ``counters``
  (:mod:`raygan.platform.core.counters`): the records that worker skipped (corrupt,
  undecodable, too small) and the storage retries it waited through since its previous
  sample, so the collated batch's sums are exact.
* :func:`resolve_data` decides once where a run's training and validation shards are
  (a :class:`DataPlan`, sent to the workers as plain data).
* :func:`make_val_loader` is deterministic: val shards in order, the first
  ``val_max_images`` records, ``i % world == rank``, masks seeded from the sample key.

Because the training stream is infinite, the trainer takes a fixed number of steps per
epoch (:func:`steps_per_epoch`): every rank runs the same number of batches, which DDP
needs (unequal counts hang the all-reduce). Create the iterator once and ``next()`` it.

What an epoch is (``train.epoch_unit``): ``images`` = one sample per training image;
``patches`` = every ``epoch_patch`` square at stride ``epoch_stride`` of every image, i.e.
``(floor((H - p) / s) + 1) * (floor((W - p) / s) + 1)`` per W x H image (a side shorter than
``p`` counts once: the image is resized or padded to one patch, see ``data.small_images``),
from the manifest's ``image_sizes`` (:func:`epoch_samples`). A manifest without sizes is an
error naming the fix (re-run the shard job), never a silent fall-back to images.
The run plan (``raygan.platform.plan.resolve_schedule``, on the driver) turns every
epoch-valued key (``train.epochs``, ``train.pretrain_epochs``, ``optim.lr_step_epochs``)
into iterations for a world size with these counts.

Too many skipped records stop the run: a worker that has skipped more than
``data.max_skip_fraction`` of the records it read (after a pass, or after 200 records)
raises :class:`TooManySkipped` with the counts and the most common reasons.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from raygan.datasets.degradations import Task, get_task, key_rng
from raygan.platform.core.errors import ShardError, SkipRecord, StorageError, TooManySkipped
from raygan.datasets.samples import ensure_demo_shards
from raygan.datasets.reader import (IMAGE_FIELDS, Skipped, index_folder, indexed_split, is_shard_file, prefetched,
                                    iter_shard, list_shards, own_manifest, target_field)
from raygan.datasets.shards import MANIFEST_NAME, read_manifest
from raygan.datasets.shards import _to_rgb as to_rgb
from raygan.platform.core import storage
from raygan.platform.core.config import DEFAULT_WORKDIR
from raygan.platform.core.counters import Counters

__all__ = [
    "ShardSet", "Skipped", "iter_shard", "decode_record", "TrainStream", "ValStream",
    "steps_per_epoch", "patches_per_image", "epoch_samples",
    "TooManySkipped", "make_train_loader", "make_val_loader", "DataPlan", "resolve_data",
]

_IMAGE_EXTS = IMAGE_FIELDS


# ----------------------------------------------------------------------------- shard sets


def _parent(uri: str) -> Tuple[Optional[str], str]:
    """``(parent URI, last component)``; no parent for a bare bucket."""
    stripped = uri.rstrip("/")
    if storage.is_s3(stripped):
        rest = stripped.split("://", 1)[1]
        if "/" not in rest:
            return None, ""
        parent, name = stripped.rsplit("/", 1)
        return parent, name
    if storage.local_path(stripped).startswith("/") or "/" in stripped:
        parent, name = stripped.rsplit("/", 1)
        return (parent or "/"), name
    return ".", stripped


class ShardSet:
    """The shards of one split: ``.shards`` (URIs in order), ``.shard_counts``, ``.count``.

    ``ShardSet(uri)``: ``uri`` is a split folder (``dst/train``, found through the parent's
    manifest) or a shard-set root (its manifest's ``split``, default train), else a folder
    of shard files (``*.tar``, ``*.tar.gz``, ``*.tgz``: ``uri/<split>`` first when a split is
    asked for), one shard file, or a webdataset brace pattern (``shard-{000000..000009}.tar``).
    A folder of shards without raygan's manifest is indexed on first use
    (:func:`raygan.datasets.reader.index_folder`: counts and image sizes, written beside the
    shards when the location is writable). ``ShardSet.open(dst, "val")`` is the same with
    an explicit split.
    """

    def __init__(self, uri: str, storage_cfg: Any = None, split: Optional[str] = None):
        self.uri = uri
        self.storage_cfg = storage_cfg
        self.manifest: Optional[Dict[str, Any]] = None
        #: the shard-set root whose manifest lists this split (None: a folder of foreign shards)
        self.root: Optional[str] = None
        #: the folder whose shards were indexed (no raygan manifest), else None
        self.indexed: Optional[str] = None
        self._sizes: Optional[List[List[int]]] = None
        shards: List[str] = []
        counts: List[Optional[int]] = []
        if is_shard_file(uri) or ("{" in uri and ".." in uri):  # one shard, or a brace pattern
            self._init_files(uri)
            return
        manifest, _ = own_manifest(uri, storage_cfg)
        if indexed_split(manifest) is not None:
            manifest = None  # an index of foreign shards in this folder: read below
        parent, name = (None, "")
        if manifest is None:
            parent, name = _parent(uri)
        if manifest is not None:
            split = split or "train"
            if split not in manifest["splits"]:
                raise ShardError(f"{storage.join(uri, MANIFEST_NAME)} has no split {split!r} "
                                 f"(it has {', '.join(sorted(manifest['splits']))})")
            base = storage.join(uri, split)
            self.manifest, self.root = manifest, uri
        else:
            pm = own_manifest(parent, storage_cfg)[0] if parent is not None else None
            if pm is not None and indexed_split(pm) is None and name in pm["splits"]:
                if split not in (None, name):
                    raise ShardError(f"{uri} is the {name!r} split of the shard set {parent}, "
                                     f"not split {split!r}: open {parent} instead")
                split, base, manifest, self.manifest, self.root = name, uri, pm, pm, parent
        if manifest is not None:
            for entry in manifest["splits"][split]["shards"]:
                shards.append(storage.join(base, entry["name"]))
                counts.append(int(entry["count"]))
            self._sizes = manifest["splits"][split].get("image_sizes")
        else:
            candidates = ([storage.join(uri, split)] if split else []) + [uri]
            for cand in candidates:
                found = list_shards(cand, storage_cfg)
                if found:
                    index = index_folder(cand, found, storage_cfg)
                    shards = [storage.join(cand, e["name"]) for e in index["shards"]]
                    counts = [int(e["count"]) for e in index["shards"]]
                    self._sizes, self.indexed = index.get("image_sizes"), cand
                    break
        if not shards:
            where = f"{uri} (split {split})" if split else uri
            raise ShardError(f"no shards found at {where}: expected manifest.json or shard files "
                             f"(*.tar, *.tar.gz){_images_hint(uri, storage_cfg)}")
        self.split = split
        self.shards = shards
        self.shard_counts = counts

    def _init_files(self, uri: str) -> None:
        """One shard file or a brace pattern: the files that exist, indexed in memory."""
        from braceexpand import braceexpand

        files = list(braceexpand(uri))
        missing = [f for f in files if not storage.exists(f, storage_cfg=self.storage_cfg)]
        if missing:
            raise ShardError(f"shard {missing[0]} does not exist"
                             + (f" (nor {len(missing) - 1} more of {uri})" if len(missing) > 1 else ""))
        folder = _parent(files[0])[0] or files[0]
        index = index_folder(folder, files, self.storage_cfg, write=False)
        self.split, self.shards = None, files
        self.shard_counts = [int(e["count"]) for e in index["shards"]]
        self._sizes = index.get("image_sizes")

    @classmethod
    def open(cls, uri: str, split: str = "train", storage_cfg: Any = None) -> "ShardSet":
        return cls(uri, storage_cfg=storage_cfg, split=split)

    @property
    def image_sizes(self) -> Optional[List[Tuple[int, int, int]]]:
        """``[(width, height, n), ...]`` of the split's images, from the manifest or the index
        (None when the manifest predates ``image_sizes``)."""
        sizes = self._sizes
        return None if sizes is None else [(int(w), int(h), int(n)) for w, h, n in sizes]

    @property
    def count(self) -> int:
        """Number of samples (from the manifest; counted by streaming when there is none)."""
        if any(c is None for c in self.shard_counts):
            counted = []
            for uri, c in zip(self.shards, self.shard_counts):
                if c is None:
                    c = sum(1 for item in iter_shard(uri, self.storage_cfg) if not isinstance(item, Skipped))
                counted.append(c)
            self.shard_counts = counted
        return int(sum(self.shard_counts))

    def __len__(self) -> int:
        return len(self.shards)

    def __repr__(self) -> str:
        return f"ShardSet({self.uri!r}, split={self.split!r}, shards={len(self.shards)})"

    def to_dict(self) -> Dict[str, Any]:
        """What was resolved, as plain data (sent from the driver to the Ray workers)."""
        return {"uri": self.uri, "split": self.split, "root": self.root, "shards": list(self.shards),
                "shard_counts": list(self.shard_counts), "manifest": self.manifest,
                "indexed": self.indexed, "image_sizes": self._sizes}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], storage_cfg: Any = None) -> "ShardSet":
        """A ShardSet from :meth:`to_dict` output, without reading the storage again."""
        ss = cls.__new__(cls)
        ss.uri, ss.split, ss.root, ss.manifest = data["uri"], data["split"], data["root"], data["manifest"]
        ss.shards, ss.shard_counts = list(data["shards"]), list(data["shard_counts"])
        ss.indexed = data.get("indexed")
        sizes = data.get("image_sizes")
        if sizes is None and ss.manifest is not None:
            sizes = ss.manifest["splits"].get(ss.split, {}).get("image_sizes")
        ss._sizes = sizes
        ss.storage_cfg = storage_cfg
        return ss


def _images_hint(uri: str, storage_cfg: Any) -> str:
    """``"; it holds N image files: ..."`` when ``uri`` is a local folder of photos."""
    if not storage.is_local(uri):
        return ""
    images = [u for u in storage.list_files(uri, storage_cfg=storage_cfg)
              if u.lower().endswith(tuple(f".{e}" for e in IMAGE_FIELDS))]
    if not images:
        return ""
    return (f"; it holds {len(images)} image file(s): pack them into shards first, e.g. "
            f"`raygan shards folder --src {uri} --dst <shards>`")


@dataclass
class DataPlan:
    """The training and validation shard sets of a run, resolved once (by the driver, or by
    a plain single-process run) and handed to every worker: nobody re-reads manifests."""

    train: ShardSet
    val: Optional[ShardSet]

    def to_dict(self) -> Dict[str, Any]:
        return {"train": self.train.to_dict(), "val": self.val.to_dict() if self.val else None}

    @classmethod
    def from_dict(cls, data: Dict[str, Any], storage_cfg: Any = None) -> "DataPlan":
        val = data["val"]
        return cls(ShardSet.from_dict(data["train"], storage_cfg),
                   ShardSet.from_dict(val, storage_cfg) if val is not None else None)


def resolve_data(data_cfg: Any, storage_cfg: Any = None, workdir: str = DEFAULT_WORKDIR,
                 with_val: bool = True) -> DataPlan:
    """Where a run's data is, decided once.

    ``data.train``, or the embedded demo shards (built on first use under ``workdir``) when
    unset; local paths are made absolute (Ray workers may run in another directory); the
    plan's ``train.uri`` (and ``val.uri`` when ``data.val`` is set) is what was chosen, and
    ``data_cfg`` is only read. Validation: ``data.val`` (its val split when it is a shard-set
    root), else the val split next to the training set (``dst`` for ``dst/train``). Missing
    or empty shard sets fail here with a :class:`ShardError`.
    """
    def absolute(uri):
        return str(Path(storage.local_path(uri)).resolve()) if uri and storage.is_local(uri) else uri

    train_uri = absolute(data_cfg.train or ensure_demo_shards(workdir))
    train = ShardSet.open(train_uri, "train", storage_cfg)
    if not with_val:
        return DataPlan(train, None)
    if data_cfg.val:
        val_uri = absolute(data_cfg.val)
        val_split = "val" if read_manifest(val_uri, storage_cfg) is not None else None
    else:  # the val split of the shard set the training split belongs to
        val_uri, val_split = train.root or train_uri, "val"
    return DataPlan(train, ShardSet(val_uri, storage_cfg, val_split))


# ----------------------------------------------------------------------------- reading


def _decode_image(data: bytes, rgb: bool) -> np.ndarray:
    """An image member as uint8: a target (``rgb``) as the shard jobs encode photos (EXIF
    orientation applied, 16-bit scaled to 8, transparency on white, RGB); an extra field
    (a parsing map, a paired input) as stored, L kept HxW."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if rgb:
            try:  # in place: a copy of every photo without an orientation tag costs ~0.4 ms
                ImageOps.exif_transpose(im, in_place=True)
            except Exception:  # noqa: BLE001 -- malformed EXIF: the pixels as stored
                pass
            return np.asarray(to_rgb(im))
        if im.mode not in ("L", "RGB"):
            im = im.convert("RGB")
        return np.asarray(im)


def decode_record(raw: Dict[str, Any]) -> Dict[str, Any]:
    """Decode a raw sample into ``{"key", "target": uint8 HxWx3, "meta", <extras>}``.

    ``png`` (or ``jpg``...) is the target (always RGB; a sample whose only image is
    ``<name>.<ext>``, e.g. ``photo.v2.jpg`` tarred as it is, uses that); ``json`` is ``meta``; extra fields
    ``<name>.<ext>`` become ``record[name]``: images as uint8 arrays (L stays HxW), ``npy``
    through ``np.load(allow_pickle=False)``, ``json`` parsed, ``txt`` as str, others raw
    bytes. Raises :class:`SkipRecord` when the target is missing or anything is undecodable.
    """
    key = raw.get("__key__", "?")
    rec: Dict[str, Any] = {"key": key}
    target = target_field(raw)
    try:
        for name, data in raw.items():
            if name.startswith("__"):
                continue
            if name == target and "." in name:  # the only image, behind a dotted name
                rec["target"] = _decode_image(data, rgb=True)
                continue
            stem, _, ext = name.rpartition(".")
            ext = ext.lower()
            if not stem:
                if ext in _IMAGE_EXTS:
                    if "target" not in rec:
                        rec["target"] = _decode_image(data, rgb=True)
                elif ext == "json":
                    rec["meta"] = json.loads(data)
                continue
            if ext in _IMAGE_EXTS:
                rec[stem] = _decode_image(data, rgb=False)
            elif ext == "npy":
                rec[stem] = np.load(io.BytesIO(data), allow_pickle=False)
            elif ext == "json":
                rec[stem] = json.loads(data)
            elif ext == "txt":
                rec[stem] = data.decode("utf-8")
            else:
                rec[stem] = data
    except SkipRecord:
        raise
    except Exception as exc:  # PIL/numpy/json raise many types for broken data
        raise SkipRecord(f"record {key}: cannot decode ({type(exc).__name__}: {exc})") from None
    if "target" not in rec:
        raise SkipRecord(f"record {key} has no image field")
    return rec


# ----------------------------------------------------------------------------- training


def steps_per_epoch(n_train: int, batch: int, world: int) -> int:
    """Optimizer steps per epoch, the same on every rank: ``max(1, n // (batch * world))``.

    ``n_train`` is the epoch's sample count: images or patches (:func:`epoch_samples`)."""
    return max(1, int(n_train) // (int(batch) * int(world)))


def patches_per_image(width: int, height: int, patch: int, stride: int) -> int:
    """``(floor((H - p) / s) + 1) * (floor((W - p) / s) + 1)``; a side shorter than the patch
    counts as one position (the pipeline resizes or pads such an image to one patch)."""
    p, s = int(patch), int(stride)
    if p < 1 or s < 1:
        raise ValueError(f"patch and stride must be >= 1, got {patch}, {stride}")
    along = lambda n: (int(n) - p) // s + 1 if int(n) >= p else 1  # noqa: E731
    return along(height) * along(width)


def epoch_samples(shardset: "ShardSet", train_cfg: Any, data_cfg: Any) -> int:
    """Samples in one epoch of ``shardset``: its image count (``train.epoch_unit: images``)
    or its patch count (``patches``, from the manifest's ``image_sizes``)."""
    unit = getattr(train_cfg, "epoch_unit", "images")
    if unit == "images":  # one pass: every record, each cut into data.crops_per_record patches
        return shardset.count * max(1, int(getattr(data_cfg, "crops_per_record", 1)))
    if unit != "patches":
        raise ValueError(f"train.epoch_unit: {unit!r} is not one of images, patches")
    sizes = shardset.image_sizes
    if sizes is None:
        where = shardset.uri if shardset.manifest is not None else f"{shardset.uri} (no manifest.json)"
        raise ShardError(
            f"train.epoch_unit=patches counts patches from the image sizes in the shard "
            f"manifest, but {where} records none for split {shardset.split!r}: re-run "
            f"jobs/make_shards.py (or the face/paired shard job) to rewrite it, or give the "
            f"schedule in iterations (train.steps, train.pretrain_steps, optim.lr_step) or "
            f"set train.epoch_unit=images")
    patch = train_cfg.epoch_patch or data_cfg.patch
    stride = train_cfg.epoch_stride or patch
    return sum(n * patches_per_image(w, h, patch, stride) for w, h, n in sizes)


class _SkipLog:
    """Counts the records a worker read and skipped, with the most common reasons."""

    CHECK_EVERY = 200

    def __init__(self, limit: float):
        self.limit = float(limit)
        self.read = 0
        self.skipped = 0
        self.reasons: Dict[str, int] = {}
        self.examples: Dict[str, str] = {}

    def ok(self) -> None:
        self.read += 1

    def skip(self, reason: str, count: int = 1) -> None:
        self.read += count
        self.skipped += count
        kind = _reason_kind(reason)
        self.reasons[kind] = self.reasons.get(kind, 0) + count
        self.examples.setdefault(kind, reason)

    def check(self, where: str, end_of_pass: bool = False) -> None:
        if self.limit >= 1 or not self.skipped:
            return
        if not end_of_pass and self.read < self.CHECK_EVERY:
            return
        if self.skipped <= self.limit * self.read:
            return
        top = sorted(self.reasons.items(), key=lambda kv: -kv[1])[:3]
        why = "; ".join(f"{n} x {kind} (e.g. {self.examples[kind]})" for kind, n in top)
        raise TooManySkipped(
            f"{where}: skipped {self.skipped} of the {self.read} training records it read "
            f"({self.skipped / self.read:.0%}, more than data.max_skip_fraction="
            f"{self.limit:g}): {why}. Images smaller than the patch follow data.small_images "
            f"(resize | pad | skip); fix or re-shard the data, or raise data.max_skip_fraction "
            f"(1.0: never stop)")


def _reason_kind(reason: str) -> str:
    """A reason without its record key, to group skips: 'smaller than the patch', ..."""
    r = reason.lower()
    for needle, kind in (("smaller than", "smaller than the patch or data.min_size"),
                         ("cannot decode", "undecodable"), ("corrupt", "corrupt shard"),
                         ("unreadable", "unreadable records"), ("cannot read", "unreadable shard"),
                         ("lacks field", "missing field"), ("has no", "missing field")):
        if needle in r:
            return kind
    return reason


class TrainStream(IterableDataset):
    """Infinite, shuffled, augmented and degraded training samples for one Ray Train rank.

    The DataLoader worker ``w`` of rank ``r`` is global worker ``r * W + w`` of
    ``world * W``. With at least that many shards, worker ``id`` owns shards
    ``id, id + total, ...`` (its own order reshuffled every pass with ``seed + pass``);
    otherwise every worker reads every shard and keeps record ``i`` iff
    ``i % total == id``. Either way the workers' samples are disjoint for the whole run.
    Only a set with fewer records than workers is shared out differently: the counter
    ``i`` then runs on across passes, so every worker still gets records. Processed
    samples go through a shuffle buffer of ``data_cfg.shuffle_buffer`` (capped at the
    worker's share of one pass, so a tiny set starts yielding within its first pass);
    the buffer carries over between passes.
    """

    def __init__(self, shardset: ShardSet, data_cfg: Any, storage_cfg: Any = None,
                 rank: int = 0, world: int = 1, seed: int = 0, task: Optional[Task] = None):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.shardset = shardset
        self.data_cfg = data_cfg
        self.storage_cfg = storage_cfg
        self.rank, self.world, self.seed = int(rank), int(world), int(seed)
        self.task = task if task is not None else get_task(data_cfg.task)

    def _worker(self) -> Tuple[int, int]:
        info = get_worker_info()
        nw, wid = (info.num_workers, info.id) if info is not None else (1, 0)
        return self.rank * nw + wid, self.world * nw

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        gid, total = self._worker()
        cfg = self.data_cfg
        shards = list(zip(self.shardset.shards, self.shardset.shard_counts))
        shard_mode = len(shards) >= total
        mine = shards[gid::total] if shard_mode else shards
        known = all(c is not None for _, c in shards)
        per_pass = sum(c for _, c in shards) if known else None
        # Tiny sets (fewer records than workers) keep the record counter running across
        # passes so that every worker still gets records; otherwise it restarts each pass
        # and the assignment is fixed (disjoint across workers for the whole run).
        continuous = not shard_mode and (per_pass is None or per_pass < total)
        if not known:
            share = None
        elif shard_mode:
            share = sum(c for _, c in mine)
        else:
            share = -(-per_pass // total)
        crops = max(1, int(getattr(cfg, "crops_per_record", 1)))
        bufsize = max(1, int(cfg.shuffle_buffer))
        if share is not None:
            bufsize = max(1, min(bufsize, share * crops))
        rng = np.random.default_rng([self.seed, gid, 7919])
        buffer: List[Dict[str, Any]] = []
        skipped = 0
        fetched = Counters()  # storage retries and seconds waited (iter_shard), at the fetch
        reported = Counters()  # fetched, as of the last sample handed out
        index = 0  # record counter of the sample-level split
        passes_since_progress = 0
        pass_no = 0
        skiplog = _SkipLog(getattr(cfg, "max_skip_fraction", 1.0))
        where = f"training data {self.shardset.uri}, worker {gid} of {total}"
        while True:
            if shard_mode:  # own shards, reshuffled each pass
                order = np.random.default_rng([self.seed + pass_no, gid]).permutation(len(mine))
                sequence = [mine[i] for i in order]
            else:  # every worker reads the same sequence: the counter must agree
                sequence = mine
            if not continuous:
                index = 0
            progressed = False
            def shard_items(sequence=sequence):
                for uri, expected in sequence:
                    for item in iter_shard(uri, self.storage_cfg, expected, fetched):
                        # the storage counters as they stood when this record arrived
                        yield item, fetched.copy()

            # fetch and tar parsing run ahead in a thread, off the decode (data.prefetch_records);
            # the counters travel with the records, so a retry is reported with the sample
            # after the record it delayed, however far ahead the fetch runs
            for item, fetched_now in prefetched(shard_items(), int(getattr(cfg, "prefetch_records", 0))):
                if isinstance(item, Skipped):
                    if shard_mode:
                        mine_lost = item.count
                    else:  # only this worker's share of the lost records
                        mine_lost = sum(1 for j in range(index, index + item.count) if j % total == gid)
                        index += item.count
                    skipped += mine_lost
                    if mine_lost:
                        skiplog.skip(item.reason, mine_lost)
                        skiplog.check(where)
                    continue
                if not shard_mode:
                    j, index = index, index + 1
                    if j % total != gid:
                        continue
                try:
                    # decoding a whole photo for one small patch wastes most of a loader's
                    # time: data.crops_per_record patches are cut from each decoded record
                    record = decode_record(item)
                    samples = [self.task(record, cfg, rng, True) for _ in range(crops)]
                except SkipRecord as exc:
                    skipped += 1
                    skiplog.skip(str(exc))
                    skiplog.check(where)
                    continue
                skiplog.ok()
                progressed = True
                for sample in samples:
                    sample["key"] = item["__key__"]
                    if len(buffer) < bufsize:
                        buffer.append(sample)
                        continue
                    k = int(rng.integers(len(buffer)))
                    out, buffer[k] = buffer[k], sample
                    # what was skipped and what the storage cost since the previous sample
                    # (the collated batch sums them)
                    counted = fetched_now.since(reported)
                    counted.add("skipped_records", skipped)
                    out["counters"], skipped, reported = counted.values, 0, fetched_now
                    yield out
            if skiplog.read:
                skiplog.check(where, end_of_pass=True)
            # A sample-level split of a set smaller than the worker count gives some passes
            # nothing; more than `total` empty passes in a row means nothing is usable.
            passes_since_progress = 0 if progressed else passes_since_progress + 1
            if passes_since_progress > total + 2:
                raise RuntimeError(
                    f"no usable training samples from {self.shardset.uri} in worker {gid} of {total} "
                    f"after {passes_since_progress} passes ({skipped} records skipped: corrupt, "
                    f"undecodable, or smaller than {self.task.min_size(cfg, True)} px)"
                )
            pass_no += 1


def make_train_loader(plan: DataPlan, data_cfg: Any, rank: int = 0, world: int = 1,
                      seed: int = 0) -> DataLoader:
    """An infinite DataLoader of ``data_cfg.batch`` samples (drop_last) for one rank, over
    ``plan.train`` (``loader.dataset.shardset``)."""
    ds = TrainStream(plan.train, data_cfg, plan.train.storage_cfg, rank=rank, world=world, seed=seed)
    nw = int(data_cfg.loader_workers)
    return DataLoader(ds, batch_size=int(data_cfg.batch), num_workers=nw, drop_last=True,
                      persistent_workers=nw > 0, prefetch_factor=2 if nw > 0 else None)


# ----------------------------------------------------------------------------- validation


class ValStream:
    """Deterministic validation batches of size 1: ``{"input", "target", ["mask"], "key"}``.

    Reads the val shards in order, takes the first ``val_max_images`` records (by position,
    the same on every rank) and keeps record ``i`` iff ``i % world == rank``. Images are
    centre-cropped to ``val_crop`` (rounded down to the task's alignment, the SR scale),
    or used whole (cropped to a multiple of the scale for SR). Re-iterable; after a pass
    ``n_skipped`` holds the records of this rank that could not be used.
    """

    def __init__(self, shardset: ShardSet, data_cfg: Any, storage_cfg: Any = None,
                 rank: int = 0, world: int = 1, task: Optional[Task] = None):
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in [0, {world})")
        self.shardset = shardset
        self.data_cfg = data_cfg
        self.storage_cfg = storage_cfg
        self.rank, self.world = int(rank), int(world)
        self.task = task if task is not None else get_task(data_cfg.task)
        self.n_skipped = 0

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        cap = self.data_cfg.val_max_images
        index = 0
        self.n_skipped = 0
        for uri, expected in zip(self.shardset.shards, self.shardset.shard_counts):
            for item in iter_shard(uri, self.storage_cfg, expected):
                if cap is not None and index >= cap:
                    return
                if isinstance(item, Skipped):
                    n = item.count if cap is None else min(item.count, cap - index)
                    self.n_skipped += sum(1 for j in range(index, index + n) if j % self.world == self.rank)
                    index += item.count
                    continue
                j, index = index, index + 1
                if j % self.world != self.rank:
                    continue
                try:
                    key = item["__key__"]
                    sample = self.task(decode_record(item), self.data_cfg, key_rng(key), False)
                except SkipRecord:
                    self.n_skipped += 1
                    continue
                batch: Dict[str, Any] = {k: v.unsqueeze(0) for k, v in sample.items()}
                batch["key"] = [key]
                yield batch


def make_val_loader(plan: DataPlan, data_cfg: Any, rank: int = 0, world: int = 1) -> ValStream:
    """Validation batches for one rank over ``plan.val`` (re-iterable: make it once)."""
    if plan.val is None:
        raise ShardError("make_val_loader: the data plan was resolved without validation data")
    return ValStream(plan.val, data_cfg, plan.val.storage_cfg, rank, world)
