"""Bring your own shards: sets written by webdataset.ShardWriter (img2dataset's layout) and
by plain `tar` of photos train as they are, read through the webdataset library over the
storage layer; sets without our manifest are indexed once, beside the shards."""
import io
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest
from PIL import Image

from conftest import random_image
from raygan.platform.core.counters import Counters
from raygan.datasets import pipeline as pl
from raygan.datasets import reader
from raygan.platform.core import storage
from raygan.platform.core.config import DataConfig, load_config
from raygan.platform.core.errors import ShardError, StorageError


def _cfg(**kw):
    base = dict(task="jpeg", patch=32, batch=2, shuffle_buffer=4, loader_workers=0, augment=True)
    base.update(kw)
    return DataConfig(**base)


def _encoded(arr, fmt, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def wds_folder(tmp_path):
    """7 samples in img2dataset's layout (jpg + json + txt, keys 000000000..), 3 per shard,
    written by webdataset.ShardWriter: 3 .tar files and no manifest of ours."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    folder = tmp_path / "wds"
    folder.mkdir()
    sizes = [(48 + 8 * (i % 3), 40 + 4 * i) for i in range(7)]  # (w, h)
    with wds.ShardWriter(str(folder / "%05d.tar"), maxcount=3, verbose=0) as sink:
        for i, (w, h) in enumerate(sizes):
            sink.write({"__key__": f"{i:09d}", "jpg": _encoded(random_image(rng, h, w), "JPEG", quality=90),
                        "json": json.dumps({"url": f"https://example.com/{i}.jpg", "width": w,
                                            "height": h}).encode(),
                        "txt": f"caption {i}".encode()})
    return folder, sizes


def test_shardwriter_shards_are_indexed_once_and_train(wds_folder, capfd):
    folder, sizes = wds_folder
    assert sorted(os.listdir(folder)) == ["00000.tar", "00001.tar", "00002.tar"]
    cfg = _cfg(train=str(folder))
    plan = pl.resolve_data(cfg)
    assert plan.train.shard_counts == [3, 3, 1] and plan.train.count == 7
    hist = {}
    for w, h in sizes:
        hist[(w, h)] = hist.get((w, h), 0) + 1
    assert plan.train.image_sizes == sorted((w, h, n) for (w, h), n in hist.items())
    index = json.loads((folder / "manifest.json").read_text())  # written beside the shards
    assert index["indexed"] and [s["name"] for s in index["splits"]["."]["shards"]] == \
        ["00000.tar", "00001.tar", "00002.tar"]
    assert "indexing its 3 shard(s)" in capfd.readouterr().err
    # the next use reads the index: nothing is streamed again
    again = pl.ShardSet(str(folder))
    assert again.shard_counts == [3, 3, 1] and "indexing" not in capfd.readouterr().err
    # a new shard makes the index stale: listed and counted again
    (folder / "00003.tar").write_bytes((folder / "00002.tar").read_bytes())
    assert pl.ShardSet(str(folder)).shard_counts == [3, 3, 1, 1]
    assert "indexing its 4 shard(s)" in capfd.readouterr().err
    # samples: the jpg is the target (RGB, the size written), json/txt ride along
    loader = pl.make_train_loader(plan, cfg)
    batch = next(iter(loader))
    assert batch["input"].shape == (2, 3, 32, 32) and int(batch["counters"]["skipped_records"].sum()) == 0
    # no val split next to foreign shards: validation reads the same folder, as before
    assert plan.val.shards == plan.train.shards
    val = list(pl.make_val_loader(plan, _cfg(train=str(folder), val_crop=32)))
    assert len(val) == 7 and val[0]["target"].shape == (1, 3, 32, 32)


def test_shardwriter_shards_train_a_model(wds_folder, tmp_path):
    """Two steps of a real (tiny) WCDGAN run on the ShardWriter set, without Ray."""
    from raygan.platform.trainer import run_loop

    folder, _ = wds_folder
    cfg = load_config("wcdgan_cpu_demo.yaml", [
        "model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2", "train.perceptual_weights=random",
        "train.lpips_weights=off", "loss.perceptual=0", "data.patch=24", "data.batch=2",
        "data.val_crop=32", "data.val_max_images=2", "data.shuffle_buffer=2", "data.loader_workers=0",
        "train.pretrain_steps=1", "train.steps=2", "train.val_every=2", "ray.workers=1",
        f"data.train={folder}", f"workdir={tmp_path / 'w'}"])
    metrics = run_loop(cfg, checkpoint_root=str(tmp_path / "ckpt"))
    assert metrics["step"] == 2 and metrics["skipped_records"] == 0
    assert np.isfinite(metrics["val_psnr"])


@pytest.fixture
def tarred_photos(tmp_path):
    """Photos packed by the `tar` command, as users have them: upper-case extensions, webp,
    a dotted file name, a sub-folder, a grayscale and a 16-bit PNG, and a README."""
    rng = np.random.default_rng(1)
    src = tmp_path / "photos"
    (src / "trip").mkdir(parents=True)
    Image.fromarray(random_image(rng, 40, 56)).save(src / "IMG_0001.JPG", "JPEG")
    Image.fromarray(random_image(rng, 44, 52)).save(src / "trip" / "beach.webp", "WEBP")
    Image.fromarray(random_image(rng, 36, 60)).save(src / "scan.v2.png")
    Image.fromarray(random_image(rng, 48, 48, channels=1)).save(src / "gray.png")
    deep = (random_image(rng, 40, 40, channels=1).astype(np.uint16) * 257)
    Image.fromarray(deep).save(src / "deep.png")  # mode I;16
    (src / "README").write_text("photos of the trip")
    out = tmp_path / "shards"
    out.mkdir()
    subprocess.run(["tar", "cf", str(out / "part-a.tar"), "-C", str(src), "IMG_0001.JPG", "trip", "README"],
                   check=True)
    subprocess.run(["tar", "czf", str(out / "part-b.tar.gz"), "-C", str(src), "scan.v2.png", "gray.png",
                    "deep.png"], check=True)
    return out


def test_plain_tar_and_tar_gz_of_photos(tarred_photos):
    ss = pl.ShardSet(str(tarred_photos))
    assert [s.rsplit("/", 1)[1] for s in ss.shards] == ["part-a.tar", "part-b.tar.gz"]
    assert ss.shard_counts == [2, 3] and ss.count == 5
    records = {}
    for shard in ss.shards:
        for item in pl.iter_shard(shard):
            rec = pl.decode_record(item)
            records[rec["key"]] = rec["target"]
    assert sorted(records) == ["IMG_0001", "deep", "gray", "scan", "trip/beach"]
    assert records["IMG_0001"].shape == (40, 56, 3) and records["trip/beach"].shape == (44, 52, 3)
    assert records["scan"].shape == (36, 60, 3)  # scan.v2.png: key "scan", field "v2.png"
    assert records["gray"].shape == (48, 48, 3)
    # 16-bit scaled to 8 bits (not clipped at 255) as the shard jobs and the endpoint do
    assert 0 < records["deep"].mean() < 250
    assert sorted(ss.image_sizes) == [(40, 40, 1), (48, 48, 1), (52, 44, 1), (56, 40, 1), (60, 36, 1)]


def test_exif_orientation_is_applied_to_targets_and_sizes(tmp_path):
    arr = random_image(np.random.default_rng(2), 40, 64)  # stored 64 wide, shown 40 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 on display
    shard = tmp_path / "s" / "rot.tar"
    shard.parent.mkdir()
    data = _encoded(arr, "JPEG", exif=exif.tobytes())
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("phone.jpg")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    ss = pl.ShardSet(str(shard.parent))
    assert ss.image_sizes == [(40, 64, 1)]
    [item] = list(pl.iter_shard(ss.shards[0]))
    assert pl.decode_record(item)["target"].shape == (64, 40, 3)


def test_single_shard_and_brace_pattern(wds_folder):
    folder, _ = wds_folder
    one = pl.ShardSet(str(folder / "00001.tar"))
    assert one.count == 3 and len(one) == 1
    pattern = pl.ShardSet(str(folder / "{00000..00002}.tar"))
    assert pattern.shard_counts == [3, 3, 1]
    with pytest.raises(ShardError, match=r"00003.tar does not exist \(nor 6 more of"):
        pl.ShardSet(str(folder / "{00000..00009}.tar"))


def test_nothing_usable_says_what_the_shards_hold(tmp_path):
    folder = tmp_path / "captions"
    folder.mkdir()
    with tarfile.open(folder / "0.tar", "w") as tar:
        for i in range(3):
            for ext, data in (("txt", b"a caption"), ("json", b"{}")):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"no usable samples in the 1 shard\(s\) at .*captions: 3 samples "
                                         r"read, none with a decodable image.*found were: json \(3\), txt \(3\)"):
        pl.ShardSet(str(folder))
    assert not (folder / "manifest.json").exists()


def test_a_folder_of_photos_is_not_a_shard_set(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(random_image(np.random.default_rng(3), 40, 40)).save(folder / "a.png")
    with pytest.raises(ShardError, match=r"no shards found at .*photos: expected manifest.json or shard "
                                         r"files .*1 image file\(s\).*raygan shards folder --src"):
        pl.ShardSet(str(folder))


def test_an_unwritable_location_is_indexed_in_memory(wds_folder, monkeypatch, capfd):
    folder, _ = wds_folder

    def refuse(uri, data, storage_cfg=None):
        raise StorageError(f"cannot write {uri}: [Errno 13] Permission denied")

    monkeypatch.setattr(storage, "write_bytes", refuse)
    assert pl.ShardSet(str(folder)).count == 7
    assert "cannot write the index beside the shards" in capfd.readouterr().err
    assert not (folder / "manifest.json").exists()


def test_another_tools_manifest_is_left_alone(wds_folder, capfd):
    folder, _ = wds_folder
    (folder / "manifest.json").write_text('{"tool": "someone else", "files": 3}')
    assert pl.ShardSet(str(folder)).count == 7
    assert "another tool's manifest.json is there" in capfd.readouterr().err
    assert json.loads((folder / "manifest.json").read_text()) == {"tool": "someone else", "files": 3}


# ----------------------------------------------------------------------------- why a part is ours


def _tar_bytes(n=4, size=2000):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(n):
            for ext in ("png", "json"):
                data = bytes([i]) * (size if ext == "png" else 10)
                info = tarfile.TarInfo(f"s{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_webdataset_member_iterator_has_no_offsets_so_plain_tars_keep_ours():
    """webdataset's tar_file_iterator gives a member's name and bytes only: not where its
    header is, which a ranged resume must know. Our member reader gives exactly tarfile's
    header offsets, and a read from one of them yields the remaining samples."""
    from webdataset.tariterators import tar_file_iterator

    data = _tar_bytes()
    assert {tuple(sorted(f)) for f in tar_file_iterator(io.BytesIO(data))} == {("data", "fname")}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        starts = {m.name.split(".")[0]: m.offset for m in tar.getmembers() if m.name.endswith(".png")}
    got = list(reader._tar_samples(io.BytesIO(data), "mem"))
    assert [s["__key__"] for s, _ in got] == ["s0", "s1", "s2", "s3"]
    assert [r for _, r in got] == [starts["s1"], starts["s2"], starts["s3"], None]
    rest = list(reader._tar_samples(io.BytesIO(data[starts["s2"]:]), "mem", start=starts["s2"]))
    assert [s["__key__"] for s, _ in rest] == ["s2", "s3"] and rest[0][1] == starts["s3"]


def test_a_gzip_stream_cannot_be_entered_mid_way():
    """Why a .tar.gz is re-read from byte 0 after a break: from a sample's offset in the
    compressed file there is no gzip stream (nor from anywhere but its start)."""
    import gzip

    gz = gzip.compress(_tar_bytes())
    assert [s["__key__"] for s, _ in reader._tar_samples(io.BytesIO(gz), "mem", gzipped=True)] == \
        ["s0", "s1", "s2", "s3"]
    for cut in (len(gz) // 3, len(gz) // 2):
        with pytest.raises((tarfile.TarError, OSError, EOFError)):
            list(reader._tar_samples(io.BytesIO(gz[cut:]), "mem", gzipped=True))


class _Breaking(io.BytesIO):
    """A stream that resets the connection after ``limit`` bytes."""

    def __init__(self, data, limit):
        super().__init__(data)
        self.limit = limit

    def read(self, n=-1):
        if self.tell() >= self.limit:
            raise ConnectionResetError(104, "Connection reset by peer")
        n = self.limit - self.tell() if n is None or n < 0 else min(n, self.limit - self.tell())
        return super().read(n)


@pytest.mark.parametrize("name", ["set.tar", "set.tar.gz"])
def test_a_break_mid_shard_yields_every_sample_once(tmp_path, monkeypatch, name):
    """A reset inside the third sample's second member (the second sample was yielded when
    the third one's first member was read): a .tar re-opens at the third sample's header (a
    ranged read), a .tar.gz at byte 0, skipping what it had yielded; each sample once."""
    import gzip

    data = _tar_bytes(n=6, size=20000)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    s2, cut = members["s2.png"].offset, members["s2.json"].offset_data + 5
    if name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=1)
        cut = len(data) // 2
    path = tmp_path / name
    path.write_bytes(data)
    opened = []

    def open_stream(uri, storage_cfg=None, start=0):
        opened.append(start)
        body = data[start:]
        return _Breaking(body, cut) if len(opened) == 1 else io.BytesIO(body)

    monkeypatch.setattr(storage, "open_stream", open_stream)
    monkeypatch.setattr(storage.OutageClock, "BASE_S", 0.01)
    stats = Counters()
    keys = [s["__key__"] for s in pl.iter_shard(str(path), counters=stats)]
    assert keys == [f"s{i}" for i in range(6)] and stats["storage_retries"] == 1
    assert opened == ([0, 0] if name.endswith(".gz") else [0, s2])


# ------------------------------------------------------------------ the fetch thread


def test_prefetched_keeps_order_and_runs_ahead_in_another_thread():
    import threading

    producers = []

    def items():
        for i in range(50):
            producers.append(threading.current_thread().name)
            yield i

    got = list(reader.prefetched(items(), depth=4))
    assert got == list(range(50))
    assert set(producers) == {"raygan-shard-prefetch"}
    # depth 0: in line, on the caller's thread
    producers.clear()
    assert list(reader.prefetched(items(), depth=0)) == list(range(50))
    assert set(producers) == {threading.current_thread().name}


def test_prefetched_raises_the_producers_error_where_the_next_item_would_be():
    def items():
        yield 1
        yield 2
        raise StorageError("storage gone after two records")

    it = reader.prefetched(items(), depth=8)
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(StorageError, match="gone after two"):
        next(it)


def test_closing_prefetched_stops_the_thread_and_closes_the_source():
    import threading
    import time

    closed = []

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(threading.current_thread().name)

    it = reader.prefetched(items(), depth=2)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    deadline = time.monotonic() + 5
    while not closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert closed == ["raygan-shard-prefetch"]
    assert not any(t.name == "raygan-shard-prefetch" for t in threading.enumerate())


def test_training_stream_is_the_same_with_and_without_the_fetch_thread(wds_folder):
    shardset = pl.ShardSet(str(wds_folder[0]))
    keys = {}
    for depth in (0, 3):
        stream = iter(pl.TrainStream(shardset, _cfg(prefetch_records=depth), None, seed=5))
        keys[depth] = [next(stream)["key"] for _ in range(20)]
    assert keys[0] == keys[3]


def test_prefetch_records_must_not_be_negative():
    from raygan.platform.core.errors import ConfigError

    with pytest.raises(ConfigError, match="data.prefetch_records: must be >= 0"):
        load_config("wcdgan_cpu_demo.yaml", ["data.prefetch_records=-1"])
