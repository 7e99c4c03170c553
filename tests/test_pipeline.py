import io
import itertools
import os
import shutil
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import random_image
from raygan.platform.core.counters import Counters
from raygan.datasets import pipeline as pl
from raygan.platform.plan import resolve_schedule
from raygan.datasets.shards import ShardError, ShardSetWriter, write_shards
from raygan.platform.core.config import DataConfig, StorageConfig
from raygan.platform.core.errors import StorageError, StorageUnavailable


torch.set_num_threads(1)

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"
TINY_WCDGAN = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
               "model.d_max_features=8", "model.d_fc=8", "model.d_pool=1",
               "train.perceptual_weights=random", "train.lpips_weights=off", "data.patch=16",
               "train.pretrain_steps=null"]


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _cfg(**kw):
    base = dict(task="jpeg", patch=32, batch=2, shuffle_buffer=4, loader_workers=0, augment=True)
    base.update(kw)
    return DataConfig(**base)


@pytest.fixture
def shard_root(image_folder, tmp_path):
    """12 images of 64x72: shard_size 2 -> several train shards."""
    dst = str(tmp_path / "shards")
    write_shards([image_folder], dst, shard_size=2, val_fraction=0.3, seed=0, parallel="none", progress=False)
    return dst


def test_shardset_resolution(shard_root, tmp_path):
    a = pl.ShardSet.open(shard_root, "train")
    b = pl.ShardSet(shard_root + "/train")
    c = pl.ShardSet(shard_root)  # root without split: train
    assert a.shards == b.shards == c.shards and a.count == b.count
    assert a.shards[0] == shard_root + "/train/shard-000000.tar"
    v = pl.ShardSet.open(shard_root, "val")
    assert v.shards == pl.ShardSet(shard_root + "/val").shards
    assert a.count + v.count == 12
    # no manifest: listing *.tar (counted by streaming)
    bare = tmp_path / "bare"
    shutil.copytree(shard_root + "/train", bare)
    listed = pl.ShardSet(str(bare))
    assert len(listed.shards) == len(a.shards) and listed.count == a.count
    with pytest.raises(ShardError, match="no split 'test'"):
        pl.ShardSet.open(shard_root, "test")
    with pytest.raises(ShardError, match="is the 'train' split"):
        pl.ShardSet.open(shard_root + "/train", "val")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ShardError, match=f"no shards found at {empty}"):
        pl.ShardSet(str(empty))


def test_empty_split_is_a_clear_error(image_folder, tmp_path):
    dst = str(tmp_path / "noval")
    write_shards([image_folder], dst, val_fraction=0.0, parallel="none", progress=False)
    with pytest.raises(ShardError, match=r"no shards found at .*noval \(split val\)"):
        pl.resolve_data(_cfg(train=dst))


def test_corrupt_records_are_skipped_and_counted(tmp_path):
    rng = np.random.default_rng(0)
    dst = str(tmp_path / "bad")
    with ShardSetWriter(dst, shard_size=10) as w:
        w.add("train", "bad", {"png": b"\x89PNG\r\n\x1a\n broken", "json": b"{}"})
        w.add("train", "small", {"png": _png(random_image(rng, 16, 16))})
        for i in range(4):
            w.add("train", f"good{i}", {"png": _png(random_image(rng, 40, 40))})
        w.close()
    # Shuffle buffer 1: sample j is yielded when sample j+1 is processed. Each pass reads
    # bad, small, good0..3, so yield 4k+1 (k = 0, 1, ...) happens right after a pass's two
    # skips: [2, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2] for 12 yields (4 passes started).
    # 2 of 6 records skipped: allowed here (data.max_skip_fraction=1.0, small ones skipped)
    cfg = _cfg(shuffle_buffer=1, small_images="skip", max_skip_fraction=1.0)
    ds = pl.TrainStream(pl.ShardSet(dst), cfg, rank=0, world=1, seed=0)
    out = list(itertools.islice(iter(ds), 12))
    assert all(s["key"].startswith("good") for s in out)
    assert [s["counters"]["skipped_records"] for s in out] == [2, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 2]
    # through a DataLoader the per-batch sum is exact too
    loader = torch.utils.data.DataLoader(ds, batch_size=4, drop_last=True)
    batches = list(itertools.islice(iter(loader), 3))
    assert [int(b["counters"]["skipped_records"].sum()) for b in batches] == [4, 2, 2]
    assert batches[0]["input"].shape == (4, 3, 32, 32)


def test_truncated_shard_counts_lost_records(shard_root, tmp_path):
    ss = pl.ShardSet.open(shard_root, "train")
    path = ss.shards[0]
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])  # cut in the middle of the second sample
    items = list(pl.iter_shard(path, expected=ss.shard_counts[0]))
    ok = [i for i in items if not isinstance(i, pl.Skipped)]
    lost = sum(i.count for i in items if isinstance(i, pl.Skipped))
    assert len(ok) + lost == ss.shard_counts[0] == 2 and lost >= 1
    with open(path, "wb") as f:
        f.write(b"this is not a tar file at all" * 40)
    items = list(pl.iter_shard(path))  # no manifest count: the shard counts as one
    assert len(items) == 1 and isinstance(items[0], pl.Skipped)
    # the training stream survives a broken shard (when allowed to skip that many records)
    ds = pl.TrainStream(ss, _cfg(max_skip_fraction=1.0), rank=0, world=1, seed=0)
    assert len(list(itertools.islice(iter(ds), 10))) == 10


def test_nothing_usable_raises_instead_of_hanging(shard_root):
    cfg = _cfg(patch=96, small_images="skip", max_skip_fraction=1.0)
    ds = pl.TrainStream(pl.ShardSet.open(shard_root, "train"), cfg, rank=0, world=1)
    with pytest.raises(RuntimeError, match="no usable training samples.*smaller than 96"):
        next(iter(ds))


def test_too_many_skipped_records_stop_the_run_with_the_reason(shard_root, tmp_path):
    train = pl.ShardSet.open(shard_root, "train")
    # every 64x72 image is below a 96 patch: resized by default, so nothing is skipped
    ds = pl.TrainStream(train, _cfg(patch=96), rank=0, world=1)
    assert next(iter(ds))["target"].shape == (3, 96, 96)
    # under skip, the whole corpus would go: the run stops and says what, why and the options
    ds = pl.TrainStream(train, _cfg(patch=96, small_images="skip"), rank=0, world=1)
    with pytest.raises(pl.TooManySkipped, match=r"skipped \d+ of the \d+ training records") as err:
        next(iter(ds))
    msg = str(err.value)
    assert "100%" in msg and "data.max_skip_fraction=0.05" in msg and "data.small_images" in msg
    assert "smaller than the patch" in msg and "is 64x72, smaller than 96px" in msg
    # one bad record in 40 (2.5 %) is under the 5 % default: the stream goes on
    rng = np.random.default_rng(0)
    dst = str(tmp_path / "few_bad")
    with ShardSetWriter(dst, shard_size=100) as w:
        w.add("train", "bad", {"png": b"not an image"})
        for i in range(39):
            w.add("train", f"good{i:02d}", {"png": _png(random_image(rng, 40, 40))})
        w.close()
    ds = pl.TrainStream(pl.ShardSet(dst), _cfg(shuffle_buffer=1), rank=0, world=1)
    assert len(list(itertools.islice(iter(ds), 100))) == 100
    # ... and a lower threshold stops it at the end of the first pass
    ds = pl.TrainStream(pl.ShardSet(dst), _cfg(shuffle_buffer=1, max_skip_fraction=0.02), rank=0, world=1)
    with pytest.raises(pl.TooManySkipped, match=r"skipped 1 of the 40 .*1 x undecodable"):
        list(itertools.islice(iter(ds), 100))


@pytest.mark.parametrize("shard_size", [2, 100])  # shard-level split / sample-level split
def test_rank_split_is_disjoint_with_equal_batches(image_folder, tmp_path, shard_size):
    dst = str(tmp_path / "s")
    m = write_shards([image_folder], dst, shard_size=shard_size, val_fraction=0.0, parallel="none",
                     progress=False)
    n = m["splits"]["train"]["count"]
    cfg = _cfg(train=dst, batch=2, shuffle_buffer=2)
    steps = pl.steps_per_epoch(n, cfg.batch, 2)
    assert steps == 3
    seen = []
    for rank in range(2):
        it = iter(pl.make_train_loader(pl.resolve_data(cfg, with_val=False), cfg, rank=rank, world=2, seed=0))
        batches = [next(it) for _ in range(steps * 3)]  # 3 epochs, same count on every rank
        assert all(b["target"].shape == (2, 3, 32, 32) for b in batches)
        seen.append({k for b in batches for k in b["key"]})
    assert not seen[0] & seen[1]  # disjoint for the whole run
    assert len(seen[0] | seen[1]) == n  # and together they cover the set


def test_loader_workers_split_inside_a_rank(shard_root):
    """2 ranks x 2 DataLoader worker processes = 4 disjoint global workers."""
    n = pl.ShardSet(shard_root).count
    seen = []
    for rank in range(2):
        cfg = _cfg(train=shard_root, loader_workers=2, batch=1, shuffle_buffer=1)
        loader = pl.make_train_loader(pl.resolve_data(cfg), cfg, rank=rank, world=2, seed=0)
        seen.append({b["key"][0] for b in itertools.islice(iter(loader), 4 * n)})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == n


@pytest.mark.parametrize("world,loader_workers", [(2, 1), (3, 1), (2, 2)])
def test_shards_that_do_not_divide_the_workers_are_all_read_once(tmp_path, monkeypatch, world, loader_workers):
    """5 shards over ranks x DataLoader workers that do not divide 5 (2, 3 or 4 global
    workers): every shard, the leftover ones included, is read by exactly one worker, and
    a worker reads only whole shards of its own."""
    rng = np.random.default_rng(0)
    dst = str(tmp_path / "five")
    with ShardSetWriter(dst, shard_size=2) as w:
        for i in range(10):
            w.add("train", f"k{i}", {"png": _png(random_image(rng, 40, 40))})
        w.close()
    ss = pl.ShardSet(dst)
    assert len(ss.shards) == 5 and ss.count == 10
    shard_of = {}  # record key -> its shard
    for uri in ss.shards:
        for item in pl.iter_shard(uri):
            shard_of[item["__key__"]] = uri
    assert len(shard_of) == 10
    readers = {}  # shard -> the (rank, loader worker)s that read it
    for rank in range(world):
        for wid in range(loader_workers):
            # what torch's DataLoader tells a worker process, in process
            info = SimpleNamespace(num_workers=loader_workers, id=wid)
            monkeypatch.setattr(pl, "get_worker_info", lambda info=info: info)
            ds = pl.TrainStream(ss, _cfg(shuffle_buffer=1), rank=rank, world=world, seed=0)
            keys = {s["key"] for s in itertools.islice(iter(ds), 20)}  # >= 3 passes of 3 shards
            shards = {shard_of[k] for k in keys}
            # whole shards only: every record of each shard it touched
            assert keys == {k for k, uri in shard_of.items() if uri in shards}, (rank, wid)
            for uri in shards:
                readers.setdefault(uri, []).append((rank, wid))
    unread = sorted(set(ss.shards) - set(readers))
    assert not unread, f"shards never read: {unread}"
    assert all(len(r) == 1 for r in readers.values()), readers


def test_tiny_set_feeds_more_workers_than_samples(tmp_path):
    rng = np.random.default_rng(0)
    dst = str(tmp_path / "tiny")
    with ShardSetWriter(dst) as w:
        for i in range(3):
            w.add("train", f"k{i}", {"png": _png(random_image(rng, 40, 40))})
        w.close()
    for rank in range(4):  # 3 samples, 4 ranks: every rank still gets data
        ds = pl.TrainStream(pl.ShardSet(dst), _cfg(), rank=rank, world=4, seed=0)
        assert len(list(itertools.islice(iter(ds), 2))) == 2


def test_val_is_deterministic_and_split_by_rank(shard_root):
    cfg = _cfg(task="inpaint", train=shard_root, val_max_images=3)
    full = list(pl.make_val_loader(pl.resolve_data(cfg), cfg, rank=0, world=1))
    again = list(pl.make_val_loader(pl.resolve_data(cfg), cfg, rank=0, world=1))
    assert len(full) == 3
    for a, b in zip(full, again):
        assert a["key"] == b["key"]
        for k in ("input", "target", "mask"):
            assert torch.equal(a[k], b[k])
        assert a["target"].shape == (1, 3, 64, 72)
    parts = [list(pl.make_val_loader(pl.resolve_data(cfg), cfg, rank=r, world=2)) for r in range(2)]
    assert [b["key"] for b in parts[0]] == [full[0]["key"], full[2]["key"]]
    assert [b["key"] for b in parts[1]] == [full[1]["key"]]
    assert torch.equal(parts[1][0]["mask"], full[1]["mask"])
    # SR: centre crop rounded down to the scale; whole images cropped to a multiple of it
    sr_cfg = _cfg(task="sr", scale=4, train=shard_root, val_crop=50)
    sr = list(pl.make_val_loader(pl.resolve_data(sr_cfg), sr_cfg))
    assert sr[0]["target"].shape == (1, 3, 48, 48) and sr[0]["input"].shape == (1, 3, 12, 12)
    sr_cfg = _cfg(task="sr", scale=5, train=shard_root, val=shard_root + "/val")
    sr = list(pl.make_val_loader(pl.resolve_data(sr_cfg), sr_cfg))
    assert sr[0]["target"].shape == (1, 3, 60, 70) and sr[0]["input"].shape == (1, 3, 12, 14)


def test_pipeline_reads_s3(image_folder, s3_bucket, s3_storage_cfg):
    dst = f"s3://{s3_bucket}/sets/a"
    write_shards([image_folder], dst, shard_size=3, val_fraction=0.3, parallel="none", progress=False,
                 storage_cfg=s3_storage_cfg)
    cfg = _cfg(task="sr", scale=2, train=dst + "/train", patch=32)
    loader = pl.make_train_loader(pl.resolve_data(cfg, s3_storage_cfg), cfg, rank=0, world=1, seed=0)
    b = next(iter(loader))
    assert b["input"].shape == (2, 3, 16, 16) and b["target"].shape == (2, 3, 32, 32)
    val = list(pl.make_val_loader(pl.resolve_data(cfg, s3_storage_cfg), cfg))
    assert len(val) == pl.ShardSet.open(dst, "val", s3_storage_cfg).count > 0
    # a shard that vanished from S3 is a clear error, never counted as bad records
    with pytest.raises(StorageError, match="shard-999999.tar is missing"):
        list(pl.iter_shard(f"{dst}/train/shard-999999.tar", s3_storage_cfg, expected=3))


def test_demo_shards_build_offline(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    from raygan.datasets.samples import ensure_demo_shards

    uri = ensure_demo_shards(str(tmp_path))
    from raygan.datasets.samples import DEMO_DIRNAME

    assert uri == str(tmp_path / DEMO_DIRNAME)
    mtime = os.path.getmtime(os.path.join(uri, "manifest.json"))
    assert ensure_demo_shards(str(tmp_path)) == uri  # idempotent: not rebuilt
    assert os.path.getmtime(os.path.join(uri, "manifest.json")) == mtime
    val = pl.ShardSet.open(uri, "val")
    train = pl.ShardSet.open(uri, "train")
    assert val.count >= 2 and train.count >= 8 and len(train.shards) >= 2
    # data.train unset -> the demo shards in the workdir
    demo_cfg = _cfg(patch=48, val_crop=64)
    plan = pl.resolve_data(demo_cfg, None, workdir=str(tmp_path))
    assert plan.train.uri == uri and demo_cfg.train is None  # the demo shards; the config only read
    loader = pl.make_train_loader(plan, demo_cfg)
    assert next(iter(loader))["target"].shape == (2, 3, 48, 48)
    assert len(list(pl.make_val_loader(plan, demo_cfg))) == val.count


def test_stream_errors_are_retried_without_duplicates(shard_root, monkeypatch, capsys):
    """A connection dropped mid-shard re-opens the shard at the record where it stopped
    (a ranged read), logs the retry with its cause, and counts it apart from bad records."""
    ss = pl.ShardSet.open(shard_root, "train")
    path, expected = ss.shards[0], ss.shard_counts[0]
    import tarfile

    with tarfile.open(path) as tar:  # fail inside the last member: after a sample was yielded
        fail_at = tar.getmembers()[-1].offset_data + 10
    real_open = pl.storage.open_stream
    opened = []

    class Flaky(io.RawIOBase):
        def __init__(self, f, fail_at):
            self.f, self.left = f, fail_at

        def readable(self):
            return True

        def read(self, n=-1):
            if self.left is not None and self.left <= 0:
                raise ConnectionError("connection reset by peer")
            data = self.f.read(n if self.left is None or n < 0 else min(n, self.left))
            if self.left is not None:
                self.left -= len(data)
            return data

        def close(self):
            self.f.close()
            super().close()

    def flaky_open(uri, storage_cfg=None, start=0):
        opened.append(start)
        return Flaky(real_open(uri, storage_cfg, start), fail_at if len(opened) == 1 else None)

    monkeypatch.setattr(pl.storage, "open_stream", flaky_open)
    stats = Counters()
    items = list(pl.iter_shard(path, expected=expected, counters=stats))
    with tarfile.open(path) as tar:  # resumed at the header of the last sample's first member
        last_key = tar.getmembers()[-1].name.split(".")[0]
        resume = min(m.offset for m in tar.getmembers() if m.name.split(".")[0] == last_key)
    assert opened == [0, resume]
    assert not [i for i in items if isinstance(i, pl.Skipped)]
    assert len({i["__key__"] for i in items}) == len(items) == expected
    assert stats["storage_retries"] == 1 and stats["storage_wait_s"] > 0
    assert "storage retry 1 for reading" in capsys.readouterr().err
    # bounded: a shard that always fails retries for storage.outage_budget_s, then names it
    monkeypatch.setattr(pl.storage, "open_stream",
                        lambda uri, storage_cfg=None, start=0: Flaky(real_open(uri, storage_cfg, start), 100))
    budget = StorageConfig(outage_budget_s=0.5, retry_max_s=0.1)
    with pytest.raises(StorageUnavailable, match=r"storage unreachable for \d+ s: local storage \(reading .*connection reset by peer"):
        list(pl.iter_shard(path, budget, expected=expected))


def _sized_shards(tmp_path, sizes, name="sized"):
    """A shard set whose manifest records ``sizes`` ([(w, h, n)]) for its train split."""
    dst = str(tmp_path / name)
    with ShardSetWriter(dst, shard_size=1000) as w:
        i = 0
        for width, height, n in sizes:
            for _ in range(n):
                w.add("train", f"k{i:05d}", {"png": b"x"}, size=(width, height))
                i += 1
        w.close()
    return pl.ShardSet.open(dst, "train")


def test_patch_epochs_count_patches_from_the_manifest_sizes(tmp_path):
    from raygan.platform.core.config import load_config

    # (floor((H - p) / s) + 1) * (floor((W - p) / s) + 1), p = 80, s = 75
    assert pl.patches_per_image(2040, 1356, 80, 75) == 18 * 27 == 486
    assert pl.patches_per_image(80, 80, 80, 75) == 1
    assert pl.patches_per_image(155, 154, 80, 75) == 2 * 1
    assert pl.patches_per_image(178, 218, 256, 256) == 1  # smaller than the patch: one (resized)
    ss = _sized_shards(tmp_path, [(2040, 1356, 3), (2040, 1536, 1), (1356, 2040, 1)])
    # 3 * 486 + (floor(1456/75)+1 = 20) * 27 + 486 (portrait: the same grid transposed)
    expected = 3 * 486 + 20 * 27 + 486
    cfg = load_config(CONFIGS / "wcdgan.yaml", ["train.pretrain_steps=null"])
    assert (cfg.train.epoch_unit, cfg.train.epoch_patch, cfg.train.epoch_stride) == ("patches", 80, 75)
    assert pl.epoch_samples(ss, cfg.train, cfg.data) == expected == 2484
    sched = resolve_schedule(cfg, 1, ss)
    assert sched.steps_per_epoch == expected // 16 == 155
    assert sched.pretrain_steps == 4 * 155  # WCDGAN: 4 epochs of patches
    from raygan.platform.engine import GANEngine
    tiny = load_config(CONFIGS / "wcdgan.yaml", TINY_WCDGAN)
    assert GANEngine(tiny, schedule=resolve_schedule(tiny, 1, ss)).pretrain_steps == 4 * 155
    assert resolve_schedule(cfg, 2, ss).steps_per_epoch == expected // 32
    # DIV2K-like: 800 images of 2040x1356 give ~389k patches, ~97k iterations for 4 epochs
    div2k = _sized_shards(tmp_path, [(2040, 1356, 800)], "div2k")
    assert pl.epoch_samples(div2k, cfg.train, cfg.data) == 800 * 486
    assert resolve_schedule(cfg, 1, div2k).pretrain_steps == 4 * (800 * 486 // 16) == 97200
    # epoch_unit images: the image count; stride defaults to the patch (no overlap)
    images = load_config(CONFIGS / "wcdgan.yaml", ["train.pretrain_steps=null", "train.epoch_unit=images"])
    assert pl.epoch_samples(ss, images.train, images.data) == 5
    tiled = load_config(CONFIGS / "wcdgan.yaml", ["train.epoch_stride=null", "train.epoch_patch=null"])
    assert pl.epoch_samples(ss, tiled.train, tiled.data) == 3 * 16 * 25 + 19 * 25 + 25 * 16


def test_epochs_resolve_total_steps_and_lr_steps_from_the_data(tmp_path):
    from raygan.platform.core.config import load_config

    ss = _sized_shards(tmp_path, [(2040, 1356, 800)])  # DIV2K's 800 training images
    cfg = load_config(CONFIGS / "dagan.yaml")
    assert (cfg.train.epochs, cfg.optim.lr_step_epochs, cfg.optim.lr_gamma) == (80, 10, 0.1)
    # DAGAN counts 64x64 patches at stride 64: 651 per image, 32,550 iterations an epoch
    sched = resolve_schedule(cfg, 1, ss)
    assert (sched.steps_per_epoch, sched.steps, sched.lr_step) == (32550, 2604000, 325500)
    assert cfg.train.steps != 2604000 and cfg.optim.lr_step != 325500  # the config is only read
    sched = resolve_schedule(cfg, 2, ss)
    assert (sched.steps_per_epoch, sched.steps, sched.lr_step) == (16275, 1302000, 162750)
    # in images (one crop per image), the same keys give 50 iterations an epoch
    images = load_config(CONFIGS / "dagan.yaml", ["train.epoch_unit=images"])
    assert resolve_schedule(images, 1, ss).steps == 4000
    # iterations given last win: the CPU preset and --steps keep their step counts
    cpu = load_config(CONFIGS / "dagan_cpu.yaml")
    assert cpu.train.epochs is None and cpu.optim.lr_step_epochs is None
    sched = resolve_schedule(cpu, 2, None)  # nothing epoch-valued: no data needed
    assert (sched.steps, sched.lr_step, sched.steps_per_epoch) == (cpu.train.steps, cpu.optim.lr_step, 0)
    assert load_config(CONFIGS / "dagan.yaml", ["train.steps=300"]).train.epochs is None
    # DequantizerNet: 50 epochs of 8,000 images at batch 16 = 25,000 iterations
    deq = load_config(CONFIGS / "dequantizer.yaml")
    assert resolve_schedule(deq, 1, _sized_shards(tmp_path, [(96, 96, 8000)], "deq")).steps == 25000


def test_patch_epochs_without_manifest_sizes_name_the_fix(tmp_path):
    import json as _json
    from raygan.platform.core.config import load_config

    ss = _sized_shards(tmp_path, [(100, 100, 4)])
    path = tmp_path / "sized" / "manifest.json"
    m = _json.loads(path.read_text())
    del m["splits"]["train"]["image_sizes"]  # a manifest written before sizes were recorded
    path.write_text(_json.dumps(m))
    old = pl.ShardSet.open(str(tmp_path / "sized"), "train")
    assert old.image_sizes is None and ss.image_sizes == [(100, 100, 4)]
    cfg = load_config(CONFIGS / "wcdgan.yaml", ["train.pretrain_steps=null"])
    with pytest.raises(ShardError, match="re-run jobs/make_shards.py.*train.epoch_unit=images"):
        resolve_schedule(cfg, 1, old)
    # explicit iterations need no sizes
    cfg = load_config(CONFIGS / "wcdgan.yaml", ["train.pretrain_steps=40"])
    assert resolve_schedule(cfg, 1, old).steps_per_epoch == 0


def test_crops_per_record_cuts_several_patches_from_each_decoded_record(image_folder, tmp_path, monkeypatch):
    """data.crops_per_record=k: each record is decoded once and cut into k independently
    cropped samples (decoding a whole photo per small patch wasted a loader's time); an
    epoch of train.epoch_unit=images counts each record k times."""
    dst = str(tmp_path / "crops")
    write_shards([image_folder], dst, val_fraction=0.0, parallel="none", progress=False)
    decoded = []
    real = pl.decode_record
    monkeypatch.setattr(pl, "decode_record", lambda item: decoded.append(item["__key__"]) or real(item))
    cfg = _cfg(crops_per_record=3, shuffle_buffer=1)
    ds = pl.TrainStream(pl.ShardSet(dst), cfg, rank=0, world=1, seed=0)
    out = list(itertools.islice(iter(ds), 9))
    keys = [s["key"] for s in out]
    assert len(decoded) == 4 and len(set(keys[:6])) == 2  # 3 samples per decoded record
    first = [s["target"] for s in out if s["key"] == keys[0]]
    assert len(first) == 3 and not torch.equal(first[0], first[1])  # different crops
    n = pl.ShardSet(dst).count
    from raygan.platform.core.config import TrainConfig

    assert pl.epoch_samples(pl.ShardSet(dst), TrainConfig(epoch_unit="images"), cfg) == 3 * n


def test_val_skips_are_counted_by_the_rank_that_owns_the_record(tmp_path):
    """Validation keeps record i on rank i % world; undecodable records and records lost in a
    cut shard are counted by their owner rank only, and never beyond val_max_images."""
    rng = np.random.default_rng(0)
    dst = str(tmp_path / "val")
    good = lambda: {"png": _png(random_image(rng, 40, 40))}  # noqa: E731
    with ShardSetWriter(dst, shard_size=6) as w:
        w.add("train", "t0", good())
        for key, fields in [("v0", good()), ("v1", {"png": b"\x89PNG\r\n\x1a\n broken"}), ("v2", good()),
                            ("v3", {"png": b"not an image at all"}), ("v4", good()), ("v5", good())]:
            w.add("val", key, fields)
        w.close()
    cfg = _cfg(train=dst, val_crop=32)

    def run(rank, world, cap):
        cfg.val_max_images = cap
        stream = pl.make_val_loader(pl.resolve_data(cfg), cfg, rank=rank, world=world)
        keys = [b["key"][0] for b in stream]
        assert [b["key"][0] for b in stream] == keys  # re-iterable, and the count restarts
        return keys, stream.n_skipped

    assert run(0, 1, None) == (["v0", "v2", "v4", "v5"], 2)
    assert run(0, 2, None) == (["v0", "v2", "v4"], 0)
    assert run(1, 2, None) == (["v5"], 2)          # v1 and v3 undecodable
    assert run(1, 2, 3) == ([], 1)                 # v3 is beyond the first 3 records
    assert run(0, 3, 5) == (["v0"], 1)             # v3 is rank 0's of 3
    # a shard cut after its first records: the lost ones are Skipped, owned by their ranks
    shard = pl.ShardSet.open(dst, "val").shards[0]
    data = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(data[: len(data) // 3])
    keys0, lost0 = run(0, 2, None)
    keys1, lost1 = run(1, 2, None)
    assert len(keys0) + len(keys1) + lost0 + lost1 == 6 and lost0 >= 1 and lost1 >= 1
    keys, lost = run(0, 1, 4)
    assert len(keys) + lost == 4  # the cap bounds the lost count too


def test_schedule_edges_one_step_at_least_and_the_defaults_of_older_configs(tmp_path):
    from raygan.platform.core.config import load_config

    assert pl.steps_per_epoch(3, 2, 2) == 1 and pl.steps_per_epoch(9, 2, 2) == 2  # never 0
    assert pl.patches_per_image(3, 2, 1, 1) == 6  # 1-px patches at stride 1: every pixel
    for bad in [(4, 4, 0, 1), (4, 4, 1, 0)]:
        with pytest.raises(ValueError, match="must be >= 1"):
            pl.patches_per_image(*bad)
    ss = _sized_shards(tmp_path, [(100, 100, 4)])
    # a train/data section without epoch_unit or crops_per_record (an older config): images, 1 crop
    assert pl.epoch_samples(ss, SimpleNamespace(), SimpleNamespace()) == 4
    cfg = load_config(CONFIGS / "wcdgan.yaml", ["train.pretrain_steps=null", "train.epoch_unit=images",
                                                "train.pretrain_epochs=1", "data.batch=2"])
    assert cfg.train.epochs is None and cfg.optim.lr_step_epochs is None
    assert resolve_schedule(cfg, 1, ss).steps_per_epoch == 2  # one pretraining epoch alone needs the data
    cfg.data.crops_per_record = 2
    assert resolve_schedule(cfg, 1, ss).steps_per_epoch == 4
    cfg.train.epochs, cfg.optim.lr_step_epochs = 0.01, 0.01
    sched = resolve_schedule(cfg, 1, ss)
    assert (sched.steps, sched.lr_step) == (1, 1)  # a fraction of a step is one
    with pytest.raises(ValueError, match="epoch_unit"):
        pl.epoch_samples(ss, SimpleNamespace(epoch_unit="minutes"), SimpleNamespace())
    with pytest.raises(ValueError, match="need the training ShardSet"):
        resolve_schedule(cfg, 1, None)


def test_patch_epochs_name_a_shard_set_without_a_manifest():
    train = SimpleNamespace(epoch_unit="patches", epoch_patch=None, epoch_stride=None)
    sizes_unknown = dict(split="train", image_sizes=None, count=2)
    with pytest.raises(ShardError, match=r"but s3://b/old \(no manifest.json\) records none for split 'train'"):
        pl.epoch_samples(SimpleNamespace(uri="s3://b/old", manifest=None, **sizes_unknown), train,
                         SimpleNamespace(patch=32))
    with pytest.raises(ShardError, match=r"but s3://b/shards records none"):
        pl.epoch_samples(SimpleNamespace(uri="s3://b/shards", manifest={}, **sizes_unknown), train,
                         SimpleNamespace(patch=32))


# ----------------------------------------------------------------------------- the shard split, record by record


class _Draw:
    """A stand-in task (no image work): one draw of the RNG the stream hands it per record."""

    def __call__(self, record, cfg, rng, train):
        return {"draw": torch.tensor(rng.random(), dtype=torch.float64)}

    def min_size(self, cfg, train):
        return 1


_DOT = None


def _records(tmp_path, keys, shard_size, name="recs", split="train"):
    """A shard set of ``keys`` in order, ``shard_size`` a shard; keys starting with "bad" hold
    bytes that are no image (undecodable)."""
    global _DOT
    _DOT = _DOT or _png(np.zeros((2, 2, 3), np.uint8))
    dst = str(tmp_path / name)
    with ShardSetWriter(dst, shard_size=shard_size) as w:
        for k in keys:
            w.add(split, k, {"png": b"not an image" if k.startswith("bad") else _DOT})
        w.close()
    return dst


def _cut_after(shard, n):
    """Cut a tar shard after its first ``n`` records, as an interrupted upload leaves it."""
    import tarfile

    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    keys = list(dict.fromkeys(m.name.split(".")[0] for m in members))
    cut = min(m.offset for m in members if m.name.split(".")[0] == keys[n])
    with open(shard, "r+b") as f:
        f.truncate(cut)


def _stream(ss, rank=0, world=1, seed=0, **cfg):
    return pl.TrainStream(ss, _cfg(**{"shuffle_buffer": 1, "max_skip_fraction": 1.0, **cfg}), rank=rank,
                          world=world, seed=seed, task=_Draw())


def test_sample_level_split_gives_record_i_to_worker_i_mod_total_every_pass(tmp_path):
    """One shard of 7 records over 3 workers (7 does not divide): worker g reads records
    g, g + 3, ... in shard order, the same ones every pass, and the workers' shares are
    disjoint and cover the set. (Shuffle buffer 1: samples come out in reading order.)"""
    keys = [f"k{i}" for i in range(7)]
    ss = pl.ShardSet(_records(tmp_path, keys, 100))
    shares = []
    for g in range(3):
        mine = keys[g::3]
        out = [s["key"] for s in itertools.islice(iter(_stream(ss, rank=g, world=3)), 3 * len(mine))]
        assert out == mine * 3, g
        shares.append(set(mine))
    assert set().union(*shares) == set(keys) and sum(map(len, shares)) == 7


def test_sample_level_split_counts_each_workers_own_lost_and_undecodable_records(tmp_path):
    """Shard 0 holds a0..a6 but was cut after a4 (a5, a6 lost), a2 is undecodable; shard 1
    holds b0..b3. Over 3 workers, record position i (a0..a6 = 0..6, b0..b3 = 7..10) is
    worker i % 3's: the records after the cut keep their owners, and each worker's samples
    report only the skips of records it owns."""
    keys = ["a0", "a1", "bad_a2", "a3", "a4", "a5", "a6", "b0", "b1", "b2", "b3"]
    dst = _records(tmp_path, keys, 7)
    ss = pl.ShardSet(dst)
    assert ss.shard_counts == [7, 4]
    _cut_after(ss.shards[0], 5)
    good = {0: ["a0", "a3", "b2"], 1: ["a1", "a4", "b0", "b3"], 2: ["b1"]}
    # n_skipped summed over 3 passes' samples: worker 0 lost a6 each pass; worker 2 lost
    # bad_a2 and a5 each pass, and 4 passes' worth came before its 3rd sample was handed out
    skipped = {0: 3, 1: 0, 2: 8}
    for g in range(3):
        out = list(itertools.islice(iter(_stream(ss, rank=g, world=3)), 3 * len(good[g])))
        assert [s["key"] for s in out] == good[g] * 3, g
        assert sum(s["counters"]["skipped_records"] for s in out) == skipped[g], (g, [s["counters"]["skipped_records"] for s in out])
    out = list(itertools.islice(iter(_stream(ss, rank=2, world=3)), 3))
    assert [s["counters"]["skipped_records"] for s in out] == [4, 2, 2]  # the first sample waited a pass in the buffer


def test_tiny_sets_run_the_record_counter_on_across_passes(tmp_path):
    """Fewer records than workers: position i of the endless stream of passes goes to worker
    i % total, so every worker gets records, and a worker that waits total - 1 empty passes
    between its records (1 record, 8 workers) is not taken for one with no usable data."""
    keys = ["k0", "k1", "k2"]
    ss = pl.ShardSet(_records(tmp_path, keys, 100))
    for g in range(4):
        out = [s["key"] for s in itertools.islice(iter(_stream(ss, rank=g, world=4)), 3)]
        assert out == [keys[(g + 4 * k) % 3] for k in range(3)], g
    one = pl.ShardSet(_records(tmp_path, ["k0"], 100, name="one"))
    for g in (0, 7):
        assert [s["key"] for s in itertools.islice(iter(_stream(one, rank=g, world=8)), 2)] == ["k0", "k0"]


def test_records_a_manifest_does_not_count_still_go_to_one_worker(tmp_path):
    """A manifest listing 4 records for a shard that holds 5 (one appended after it was
    written), read by 4 workers: the fifth record has one owner, the same every pass, and
    the others keep theirs."""
    import json as _json

    keys = [f"k{i}" for i in range(5)]
    dst = _records(tmp_path, keys, 100)
    path = Path(dst) / "manifest.json"
    m = _json.loads(path.read_text())
    m["splits"]["train"]["shards"][0]["count"] = m["splits"]["train"]["count"] = 4
    path.write_text(_json.dumps(m))
    ss = pl.ShardSet(dst)
    assert ss.shard_counts == [4]
    for g, mine in enumerate([["k0", "k4"], ["k1"], ["k2"], ["k3"]]):
        out = [s["key"] for s in itertools.islice(iter(_stream(ss, rank=g, world=4)), 3 * len(mine))]
        assert out == mine * 3, g


def test_shard_level_split_reads_own_shards_in_a_seeded_order_per_pass(tmp_path):
    """8 one-record shards over 2 workers: worker g owns shards g, g + 2, ...; pass p reads
    them in the order np.random.default_rng([seed + p, g]).permutation (docstring), so a
    rerun with the seed sees the same samples, the same crops included, and every pass
    is reshuffled."""
    keys = [f"k{i}" for i in range(8)]
    ss = pl.ShardSet(_records(tmp_path, keys, 1))
    assert len(ss.shards) == 8
    for seed in (0, 5):
        for g in range(2):
            mine = keys[g::2]
            want = [mine[i] for p in range(4) for i in np.random.default_rng([seed + p, g]).permutation(4)]
            out = list(itertools.islice(iter(_stream(ss, rank=g, world=2, seed=seed)), 16))
            assert [s["key"] for s in out] == want, (seed, g)
            passes = [tuple(want[4 * p:4 * p + 4]) for p in range(4)]
            assert len(set(passes)) > 1  # reshuffled
            again = list(itertools.islice(iter(_stream(ss, rank=g, world=2, seed=seed)), 16))
            assert [float(s["draw"]) for s in again] == [float(s["draw"]) for s in out]
    other = [float(s["draw"]) for s in itertools.islice(iter(_stream(ss, rank=0, world=2, seed=1)), 16)]
    assert other != [float(s["draw"]) for s in itertools.islice(iter(_stream(ss, rank=0, world=2, seed=0)), 16)]


def test_as_many_shards_as_workers_gives_each_worker_one_whole_shard(tmp_path):
    keys = [f"k{i}" for i in range(8)]
    ss = pl.ShardSet(_records(tmp_path, keys, 2))
    assert len(ss.shards) == 4
    for g in range(4):
        out = {s["key"] for s in itertools.islice(iter(_stream(ss, rank=g, world=4)), 6)}
        assert out == {keys[2 * g], keys[2 * g + 1]}, g


def test_shard_counts_unknown_still_split_by_whole_shards(tmp_path):
    """A shard set handed over without record counts (None): no per-pass share to cap the
    shuffle buffer with, and the workers still read their own whole shards."""
    keys = [f"k{i}" for i in range(8)]
    known = pl.ShardSet(_records(tmp_path, keys, 2))
    ss = pl.ShardSet.from_dict({**known.to_dict(), "shard_counts": [None] * 4})
    for g in range(2):
        out = {s["key"] for s in itertools.islice(iter(_stream(ss, rank=g, world=2, shuffle_buffer=3)), 12)}
        assert out == {keys[i] for s in (g, g + 2) for i in (2 * s, 2 * s + 1)}, g


@pytest.mark.parametrize("n,shard_size,world,crops,buffer,decoded", [
    (7, 100, 2, 3, 100, 5),  # sample split: share ceil(7 / 2) = 4 records, 12 samples
    (7, 100, 2, 1, 100, 5),
    (8, 1, 2, 1, 100, 5),    # shard split: 4 one-record shards
    (8, 1, 2, 2, 100, 5),
    (8, 1, 2, 1, 2, 3),      # a buffer smaller than the share stays as set
])
def test_shuffle_buffer_is_capped_at_one_pass_of_the_workers_share(tmp_path, monkeypatch, n, shard_size,
                                                                 world, crops, buffer, decoded):
    """data.shuffle_buffer larger than what a worker reads in a pass (times the crops cut
    from each record): the first sample comes out as soon as one pass filled the buffer, not
    after shuffle_buffer samples; counted in records decoded before the first sample."""
    ss = pl.ShardSet(_records(tmp_path, [f"k{i}" for i in range(n)], shard_size))
    calls = []
    real = pl.decode_record
    monkeypatch.setattr(pl, "decode_record", lambda item: calls.append(1) or real(item))
    next(iter(_stream(ss, rank=0, world=world, shuffle_buffer=buffer, crops_per_record=crops)))
    assert len(calls) == decoded


def test_a_data_section_without_the_newer_keys_reads_one_crop_and_never_stops_on_skips(tmp_path):
    """An older data config without crops_per_record or max_skip_fraction: one sample per
    record, and undecodable records are skipped without a limit."""
    ss = pl.ShardSet(_records(tmp_path, ["k0", "bad1", "k2"], 100))
    old = SimpleNamespace(shuffle_buffer=1, task="jpeg")
    ds = pl.TrainStream(ss, old, rank=0, world=1, seed=0, task=_Draw())
    assert [s["key"] for s in itertools.islice(iter(ds), 8)] == ["k0", "k2"] * 4


def test_too_many_skipped_names_the_data_and_the_worker_mid_pass_or_at_its_end(tmp_path):
    """The skip limit is checked every 200 records read and at the end of each pass; the error
    says which data and which worker, and counts every lost record of a cut shard."""
    def run(dst, cut=None):
        ss = pl.ShardSet(dst)
        if cut is not None:
            _cut_after(ss.shards[0], cut)
        ds = _stream(ss, max_skip_fraction=0.2)
        with pytest.raises(pl.TooManySkipped) as err:
            list(itertools.islice(iter(ds), 50))
        return str(err.value).replace(dst, "<data>")

    # a shard of 8 cut after 5 records: 3 of 8 lost, found at the end of the pass
    msg = run(_records(tmp_path, [f"k{i}" for i in range(8)], 100, name="eight"), cut=5)
    assert msg.startswith("training data <data>, worker 0 of 1: skipped 3 of the 8 training records")
    assert "3 x unreadable records" in msg
    # a shard of 210 cut after 5: 205 lost at once, stopped there
    msg = run(_records(tmp_path, [f"k{i:03d}" for i in range(210)], 1000, name="cut"), cut=5)
    assert msg.startswith("training data <data>, worker 0 of 1: skipped 205 of the 210 training records")
    # 200 undecodable records first: stopped at the 200th, before the pass ends
    msg = run(_records(tmp_path, [f"bad{i:03d}" for i in range(200)] + ["k0"], 1000, name="undecodable"))
    assert msg.startswith("training data <data>, worker 0 of 1: skipped 200 of the 200 training records")


def _second_open_fails(monkeypatch):
    """Storage whose second open fails once (a retry, at the longest jitter); returns the list
    of URIs opened so far."""
    real_open = pl.storage.open_stream
    opened = []

    def flaky_open(uri, storage_cfg=None, start=0):
        opened.append(uri)
        if len(opened) == 2:
            raise ConnectionError("connection reset by peer")
        return real_open(uri, storage_cfg, start)

    monkeypatch.setattr(pl.storage, "open_stream", flaky_open)
    monkeypatch.setattr(pl.storage.random, "uniform", lambda a, b: b)  # the longest jitter
    return opened


def _stream_whose_second_open_fails(tmp_path, monkeypatch, **cfg):
    """Two shards of 3 records; opening the second fails once (a retry, the longest jitter of
    0.01 s). Returns the stream and the list of URIs opened so far."""
    ss = pl.ShardSet(_records(tmp_path, [f"k{i}" for i in range(6)], 3))
    opened = _second_open_fails(monkeypatch)
    ds = pl.TrainStream(ss, _cfg(shuffle_buffer=1, **cfg), StorageConfig(retry_max_s=0.01), task=_Draw())
    return ds, opened


def test_validation_storage_retries_count_in_the_process_counters(tmp_path, monkeypatch):
    """Validation reads in the training process: a retried open while reading the val shards
    is counted in counters.PROCESS, which each report adds to the stream's counters."""
    from raygan.platform.core import counters

    ss = pl.ShardSet(_records(tmp_path, [f"v{i}" for i in range(4)], 2, split="val"), split="val")
    opened = _second_open_fails(monkeypatch)
    before = counters.PROCESS.copy()
    stream = pl.ValStream(ss, _cfg(val_crop=None, val_max_images=None), StorageConfig(retry_max_s=0.01),
                          task=_Draw())
    assert len(list(stream)) == 4 and opened[1] == opened[2]  # the retried shard, opened again
    gained = counters.PROCESS.since(before)
    assert (gained["storage_retries"], gained["storage_wait_s"]) == (1, pytest.approx(0.01))


def test_storage_retries_are_reported_once_on_the_next_sample(tmp_path, monkeypatch):
    """A storage retry while opening the second shard: the sample handed out next carries
    storage_retries=1 and the seconds waited in its counters; every other sample reports none."""
    ds, opened = _stream_whose_second_open_fails(tmp_path, monkeypatch)
    out = list(itertools.islice(iter(ds), 10))
    retries = [s["counters"]["storage_retries"] for s in out]
    waits = [s["counters"]["storage_wait_s"] for s in out]
    assert retries == [0, 0, 1] + [0] * 7 and waits == [0.0, 0.0, pytest.approx(0.01)] + [0.0] * 7
    assert opened[1] == opened[2]  # the same shard, opened again


@pytest.mark.parametrize("good_passes", [0, 1])
def test_unusable_data_stops_after_the_same_run_of_empty_passes(tmp_path, monkeypatch, good_passes):
    """Data unusable from the start, or from the second pass on (replaced by a broken copy):
    one worker gives up after 4 passes in a row without a sample, and says so."""
    ss = pl.ShardSet(_records(tmp_path, ["k0"], 100))
    calls = []
    real = pl.decode_record

    def decode(item):
        calls.append(1)
        if len(calls) > good_passes:
            raise pl.SkipRecord("record k0: cannot decode (broken)")
        return real(item)

    monkeypatch.setattr(pl, "decode_record", decode)
    with pytest.raises(RuntimeError, match=r"no usable training samples .* worker 0 of 1 after 4 passes"):
        next(iter(_stream(ss)))
    assert len(calls) == good_passes + 4


def test_val_records_after_a_cut_shard_keep_their_rank_and_the_lost_ones_count_once(tmp_path):
    """val: v0..v3 in shard 0 (cut after v1), v4..v7 in shard 1 (cut after v6), 3 ranks:
    record position i is rank i % 3's, lost records too; each record's degradation is drawn
    from its key (the same on every pass, different between records)."""
    dst = _records(tmp_path, [f"v{i}" for i in range(8)], 4, split="val")
    ss = pl.ShardSet.open(dst, "val")
    _cut_after(ss.shards[0], 2)
    _cut_after(ss.shards[1], 3)
    want = {0: (["v0", "v6"], 1), 1: (["v1", "v4"], 1), 2: (["v5"], 1)}
    draws = {}
    for rank in range(3):
        stream = pl.ValStream(ss, _cfg(), rank=rank, world=3, task=_Draw())
        batches = list(stream)
        assert ([b["key"][0] for b in batches], stream.n_skipped) == want[rank], rank
        draws.update({b["key"][0]: b["draw"].item() for b in batches})
        assert [b["draw"].item() for b in stream] == [draws[b["key"][0]] for b in batches]
    assert len(set(draws.values())) == 5


def test_a_retry_is_reported_with_its_record_however_far_the_fetch_thread_ran_ahead(tmp_path, monkeypatch):
    """As above, with the consumer pausing after the first sample so that the fetch thread has
    read past the retried open: the retry still comes out with the third sample, not earlier."""
    ds, opened = _stream_whose_second_open_fails(tmp_path, monkeypatch, prefetch_records=16)
    stream = iter(ds)
    out = [next(stream)]
    deadline = time.monotonic() + 5
    while len(opened) < 3 and time.monotonic() < deadline:  # the thread re-opened the shard
        time.sleep(0.01)
    assert len(opened) >= 3
    out += [next(stream) for _ in range(9)]
    assert [s["counters"]["storage_retries"] for s in out] == [0, 0, 1] + [0] * 7
