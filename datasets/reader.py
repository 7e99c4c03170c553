"""Reading shards: the ``webdataset`` library over raygan's storage stream.

A shard is a ``.tar`` (or ``.tar.gz`` / ``.tgz``) of members ``<key>.<ext>``; consecutive
members with the same key form one sample (the WebDataset convention, whatever wrote the
shard: raygan's ShardSetWriter, ``webdataset.ShardWriter``, img2dataset, or ``tar`` of a
folder of photos). What comes from where:

* the bytes: :func:`raygan.platform.core.storage.open_stream` (local file or the S3 body,
  ranged), re-opened by :func:`iter_shard` after an outage;
* tar member -> sample grouping, the key rule and lower-cased extensions
  (``IMG_1.JPG`` -> ``jpg``): ``webdataset.tariterators.group_by_keys``;
* ``.tar.gz`` / ``.tgz`` members: ``webdataset.tariterators.tar_file_iterator`` (``r|*``);
* ``.tar`` members: a tarfile stream reader of our own, kept for one reason:
  ``tar_file_iterator`` yields ``{"fname", "data"}`` only, not where a member's header starts,
  and the ranged resume needs exactly that offset (tests/test_reader.py shows both). A gzip
  stream has no such offsets at all (a range read from the middle of it is not gzip), so a
  ``.tar.gz`` broken mid-stream is re-read from its first byte and the samples already
  yielded are skipped.

Shard sets without raygan's ``manifest.json`` are listed and *indexed* on first use
(:func:`index_folder`): every shard is streamed once to count its samples and the target
image sizes (what ``train.epoch_unit: patches`` needs), and the index is written beside
the shards as ``manifest.json`` (``"indexed"`` set, one split ``"."``: the shards in that
folder) when the location is writable, so the next run starts at once.
"""

from __future__ import annotations

import io
import json
import os
import queue
import sys
import tarfile
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from raygan.datasets.shards import FORMAT, MANIFEST_NAME, read_manifest
from raygan.platform.core import storage
from raygan.platform.core.counters import Counters
from raygan.platform.core.errors import ShardError, StorageError

__all__ = ["Skipped", "iter_shard", "prefetched", "SHARD_SUFFIXES", "IMAGE_FIELDS", "is_shard_file",
           "list_shards", "index_folder", "indexed_split", "target_field", "own_manifest"]

#: what a shard file may be called (a .tar.gz is read whole; see the module docstring)
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: member extensions decoded as images (lower case: webdataset lower-cases them)
IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "ppm", "pgm")
#: the split name of an index written beside a folder of foreign shards
INDEX_SPLIT = "."


@dataclass
class Skipped:
    """Marker yielded by :func:`iter_shard` for ``count`` records that could not be read."""

    count: int
    reason: str


def is_shard_file(uri: str) -> bool:
    return uri.lower().endswith(SHARD_SUFFIXES)


def _gzipped(uri: str) -> bool:
    return uri.lower().endswith((".tar.gz", ".tgz"))


# ----------------------------------------------------------------------------- samples


def _tar_members(stream, start: int, url: str, at: Dict[str, Optional[int]]) -> Iterator[Dict[str, Any]]:
    """The regular members of an uncompressed tar stream as webdataset file samples
    (``{"fname", "data", "__url__"}``); ``at["offset"]`` is the shard offset of the header
    of the member last yielded (None once the stream is exhausted)."""
    # 1 MiB reads: tarfile's default 10 KiB blocks cost a Python call each on a socket.
    with tarfile.open(fileobj=stream, mode="r|", bufsize=1 << 20) as tar:
        for member in tar:
            if not member.isfile():
                continue
            at["offset"] = start + member.offset
            f = tar.extractfile(member)
            yield {"fname": member.name, "data": f.read() if f is not None else b"", "__url__": url}
    at["offset"] = None


def _keep_going(exc: BaseException) -> bool:
    """webdataset handler for a sample's own problems (a duplicate member): drop the member;
    anything else propagates (a handler returning False would end the shard silently)."""
    if isinstance(exc, ValueError):
        return True
    raise exc


def _tar_samples(stream, url: str, start: int = 0,
                 gzipped: bool = False) -> Iterator[Tuple[Dict[str, Any], Optional[int]]]:
    """``(sample, resume_offset)`` of a shard stream, grouped by ``webdataset``.

    ``resume_offset``: where a reader cut off after this sample re-opens the shard (the
    header of the next sample's first member; ``start`` is where ``stream`` begins), None
    after the last sample and always for a gzipped shard. ``group_by_keys`` yields a sample
    when it pulls the first member of the next one, so the member last pulled is the one
    the next sample starts with."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    if gzipped:
        def files():
            for f in tar_file_iterator(stream):
                f["__url__"] = url
                yield f

        for sample in group_by_keys(files(), handler=_keep_going):
            yield sample, None
        return
    at: Dict[str, Optional[int]] = {"offset": None}
    for sample in group_by_keys(_tar_members(stream, start, url, at), handler=_keep_going):
        yield sample, at["offset"]


def iter_shard(uri: str, storage_cfg: Any = None, expected: Optional[int] = None,
               counters: Optional[Counters] = None) -> Iterator[Union[Dict[str, Any], Skipped]]:
    """Raw samples (``{"__key__": ..., "png": bytes, ...}``) of one shard, or Skipped markers.

    Three kinds of failure, told apart:

    * the storage is unreachable, resets, times out, throttles or answers 5xx: retried with
      backoff and jitter for up to ``storage.outage_budget_s`` (then StorageUnavailable,
      naming the endpoint and the cause), re-opening the shard at the record where it
      stopped (a ranged read; a ``.tar.gz`` is re-read from its start, the samples already
      yielded skipped); ``counters`` (default: the process's) counts the retries and the
      time waited;
    * the shard is missing: StorageError (the data plan named it: a setup problem);
    * the tar is corrupt: the shard ends there and the records it lost are Skipped
      (exactly, when the manifest gives the shard's count).
    """
    clock = storage.OutageClock(storage_cfg, f"reading {uri}", counters, uri)
    gzipped = _gzipped(uri)
    done = 0
    offset = 0  # where the first sample not yet yielded starts (a .tar.gz: always 0)
    while True:
        stream = None
        try:
            stream = storage.open_stream(uri, storage_cfg=storage_cfg, start=offset)
            again = done if gzipped else 0  # samples to pass over: yielded before the break
            for sample, resume_at in _tar_samples(stream, uri, offset, gzipped):
                clock.ok()
                if again:
                    again -= 1
                    continue
                done += 1
                yield sample
                if resume_at is not None:
                    offset = resume_at
            break
        except StorageError as exc:
            if exc.missing:
                raise StorageError(f"shard {uri} is missing (listed in its shard set): {exc}",
                                   missing=True) from None
            if not exc.transient:
                raise
            clock.failed(exc)
        except (tarfile.TarError, EOFError, zlib.error) as exc:
            cause = exc.__context__ or exc.__cause__
            if storage.is_transient(cause):  # the connection broke under tarfile
                clock.failed(cause)
                continue
            if expected is None:
                yield Skipped(1, f"corrupt shard {uri}: {exc}")
            break
        except Exception as exc:
            if not storage.is_transient(exc):
                raise
            clock.failed(exc)
        finally:
            if stream is not None:
                try:
                    stream.close()
                except Exception:
                    pass
    if expected is not None and done < expected:
        yield Skipped(expected - done, f"{uri}: {expected - done} of {expected} records unreadable")


def prefetched(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items``, produced ``depth`` ahead by a background thread (``depth`` 0: as they are).

    Fetching a shard over HTTP and parsing its tar are mostly waiting and GIL-free reads;
    on the loader's one core they would otherwise sit between decodes, which release the GIL
    too. Order is kept, and an exception raised by ``items`` is raised here, where the next
    item would have been. Closing this generator (or dropping it) stops the thread."""
    if depth <= 0:
        yield from items
        return
    slots: "queue.Queue[Tuple[str, Any]]" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: Tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
            return
        finally:  # an open shard stream is closed in this thread, which owns the generator
            close = getattr(items, "close", None)
            if close is not None:
                close()
        put(("end", None))

    thread = threading.Thread(target=produce, name="raygan-shard-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def target_field(sample: Dict[str, Any]) -> Optional[str]:
    """The field holding a sample's target image: the first image field without a stem
    (``png``, ``jpg``, ...), else its only image field (``photo.v2.jpg`` is key ``photo``,
    field ``v2.jpg``, in the webdataset rule), else None."""
    images = [k for k in sample if not k.startswith("__") and k.rpartition(".")[2] in IMAGE_FIELDS]
    plain = [k for k in images if "." not in k]
    if plain:
        return plain[0]
    return images[0] if len(images) == 1 else None


# ----------------------------------------------------------------------------- listing


def list_shards(folder: str, storage_cfg: Any = None) -> List[str]:
    """The shard files directly in ``folder`` (not in its sub-folders), sorted."""
    prefix = folder.rstrip("/") + "/"
    return [u for u in storage.list_files(folder, storage_cfg=storage_cfg)
            if is_shard_file(u) and "/" not in u[len(prefix):]]


def own_manifest(uri: str, storage_cfg: Any = None) -> Tuple[Optional[Dict[str, Any]], bool]:
    """``(raygan manifest at uri or None, whether another tool's manifest.json is there)``.
    A manifest.json that is valid JSON but not raygan's is another tool's: left alone."""
    try:
        return read_manifest(uri, storage_cfg), False
    except ShardError as exc:
        if "is not a" in str(exc):
            return None, True
        raise


def indexed_split(manifest: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The split entry of an index written by :func:`index_folder` (None for a manifest of
    raygan's shard jobs, or none)."""
    if manifest is None or not manifest.get("indexed"):
        return None
    return manifest["splits"].get(INDEX_SPLIT)


def _local_size(uri: str) -> Optional[int]:
    if not storage.is_local(uri):
        return None
    try:
        return os.path.getsize(storage.local_path(uri))
    except OSError:
        return None


def _index_matches(entry: Dict[str, Any], folder: str, shards: List[str]) -> bool:
    prefix = folder.rstrip("/") + "/"
    listed = [(s["name"], s.get("bytes")) for s in entry["shards"]]
    found = [(u[len(prefix):], _local_size(u)) for u in shards]
    if [n for n, _ in listed] != [n for n, _ in found]:
        return False
    return all(a is None or b is None or a == b for (_, a), (_, b) in zip(listed, found))


def _image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) as the pipeline decodes it (EXIF orientation applied), from the header."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # noqa: BLE001 -- malformed EXIF: the pipeline ignores it too
                orientation = 1
    except Exception:  # noqa: BLE001 -- undecodable: the pipeline skips it
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _scan(shards: List[str], folder: str, storage_cfg: Any) -> Dict[str, Any]:
    """Stream every shard once: per shard its samples; the target sizes; what was seen."""
    prefix = folder.rstrip("/") + "/"
    entries, sizes = [], {}
    seen: Dict[str, int] = {}
    usable = 0
    for uri in shards:
        count = 0
        for item in iter_shard(uri, storage_cfg):
            if isinstance(item, Skipped):
                print(f"raygan: {item.reason}", file=sys.stderr)
                continue
            count += 1
            for k in item:
                if not k.startswith("__"):
                    seen[k] = seen.get(k, 0) + 1
            field = target_field(item)
            wh = _image_size(item[field]) if field else None
            if wh is not None:
                usable += 1
                sizes[wh] = sizes.get(wh, 0) + 1
        name = uri[len(prefix):] if uri.startswith(prefix) else uri
        entries.append({"name": name, "count": count, "bytes": _local_size(uri)})
    return {"shards": entries, "count": sum(e["count"] for e in entries), "usable": usable,
            "image_sizes": [[w, h, n] for (w, h), n in sorted(sizes.items())], "fields": seen}


def index_folder(folder: str, shards: List[str], storage_cfg: Any = None,
                 write: bool = True) -> Dict[str, Any]:
    """The index of the foreign shards ``shards`` directly in ``folder``: the one written
    there earlier when it still matches the listing (names, and sizes of local files), else
    a new one (every shard streamed once), written to ``folder/manifest.json`` when
    ``write`` and the location allows. Returns the split entry ``{"count", "shards":
    [{"name", "count", "bytes"}], "image_sizes"}``. A set in which no sample has an image
    member is a :class:`ShardError` saying what the shards hold instead."""
    manifest, foreign = own_manifest(folder, storage_cfg)
    entry = indexed_split(manifest)
    if entry is not None and _index_matches(entry, folder, shards):
        return entry
    print(f"raygan: {folder} has no raygan manifest.json: indexing its {len(shards)} shard(s) "
          "(samples and image sizes; once)", file=sys.stderr, flush=True)
    scan = _scan(shards, folder, storage_cfg)
    if not scan["usable"]:
        common = sorted(scan["fields"].items(), key=lambda kv: (-kv[1], kv[0]))[:8]
        fields = ", ".join(f"{k} ({n})" for k, n in common)
        raise ShardError(
            f"no usable samples in the {len(shards)} shard(s) at {folder}: {scan['count']} samples "
            f"read, none with a decodable image member (.{', .'.join(IMAGE_FIELDS[:4])}, ...)"
            + (f"; the members found were: {fields}" if fields else "; the shards hold no members")
            + ". A sample is the tar members <key>.<ext> sharing a key (the WebDataset layout).")
    entry = {"count": scan["count"], "shards": scan["shards"]}
    if scan["usable"] == scan["count"]:  # sizes of every sample: epochs of patches can be counted
        entry["image_sizes"] = scan["image_sizes"]
    if write and foreign:
        print(f"raygan: not writing the index to {storage.join(folder, MANIFEST_NAME)}: another "
              "tool's manifest.json is there (the shards are indexed again on every use)", file=sys.stderr)
    elif write:
        doc = {"format": FORMAT, "indexed": {"by": "raygan", "note": "listed and sized on first "
                                             "use; rewritten when the shards change"},
               "splits": {INDEX_SPLIT: entry}}
        where = storage.join(folder, MANIFEST_NAME)
        try:
            storage.write_bytes(where, json.dumps(doc, indent=1).encode(), storage_cfg=storage_cfg)
            print(f"raygan: wrote the index {where} ({entry['count']} samples)", file=sys.stderr)
        except StorageError as exc:
            print(f"raygan: cannot write the index beside the shards ({exc}); they are indexed "
                  "again on every use", file=sys.stderr)
    return entry
