"""Paired ingest (pix2pix A|B, two folders) and the paired task's identical crops."""
import hashlib
import inspect
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raygan.datasets.degradations import get_task
from raygan.datasets.paired import split_ab, write_paired_shards
from raygan.datasets.pipeline import ShardSet, decode_record, iter_shard
from raygan.platform.core.config import DataConfig

ROOT = Path(__file__).resolve().parent.parent


def read_all(dst, split):
    recs = []
    for uri in ShardSet.open(str(dst), split).shards:
        recs += [decode_record(r) for r in iter_shard(uri)]
    return {r["key"]: r for r in recs}


def pair(seed, h=40, w=48):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return a, b


def key_seed(split, i):
    """A seed per (split, index) that is the same in every process: crc32 of the key, not
    ``hash()``, whose value for strings changes with PYTHONHASHSEED."""
    return zlib.crc32(f"{split}/{i}".encode())


def test_ab_pairs_with_split_folders_and_direction(tmp_path):
    src = tmp_path / "facades"
    truth = {}
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        (src / split).mkdir(parents=True)
        for i in range(n):
            a, b = pair(key_seed(split, i))
            Image.fromarray(np.concatenate([a, b], 1)).save(src / split / f"{i}.png")
            truth[f"{split}/{i}"] = (a, b)
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(src / "train" / "odd.png")
    m = write_paired_shards(str(tmp_path / "ab"), pairs=str(src), progress=False)
    assert (m["splits"]["train"]["count"], m["splits"]["val"]["count"]) == (3, 2)  # test/ unused
    assert [s["reason"] for s in m["skipped"]] == ["an A|B pair needs an even width, got 9x8"]
    recs = {**read_all(tmp_path / "ab", "train"), **read_all(tmp_path / "ab", "val")}
    for key, (a, b) in truth.items():
        if key.startswith("test"):
            continue
        assert np.array_equal(recs[key]["input"], a) and np.array_equal(recs[key]["target"], b)
    m = write_paired_shards(str(tmp_path / "ba"), pairs=str(src), direction="BtoA", progress=False)
    r = read_all(tmp_path / "ba", "train")["train/0"]
    assert np.array_equal(r["input"], truth["train/0"][1]) and np.array_equal(r["target"], truth["train/0"][0])
    assert m["direction"] == "BtoA"


def test_two_folders_pair_by_stem(tmp_path):
    ins, tgs = tmp_path / "in", tmp_path / "tg"
    (ins / "sub").mkdir(parents=True)
    (tgs / "sub").mkdir(parents=True)
    truth = {}
    for i in range(5):
        a, b = pair(i)
        Image.fromarray(a).save(ins / "sub" / f"x{i}.png")
        Image.fromarray(b).save(tgs / "sub" / f"x{i}.bmp")  # other extension, same stem
        truth[f"sub/x{i}"] = (a, b)
    Image.fromarray(pair(9)[0]).save(ins / "lonely.png")
    Image.fromarray(pair(9)[0][:20]).save(ins / "sub" / "bad.png")
    Image.fromarray(pair(9)[1]).save(tgs / "sub" / "bad.png")
    m = write_paired_shards(str(tmp_path / "o"), inputs=str(ins), targets=str(tgs),
                            val_fraction=0.4, seed=3, progress=False)
    reasons = sorted(s["reason"] for s in m["skipped"])
    assert reasons[0].startswith("input 48x20 and target 48x40 differ") and "no matching" in reasons[1]
    recs = {**read_all(tmp_path / "o", "train"), **read_all(tmp_path / "o", "val")}
    assert set(recs) == set(truth)
    for key, (a, b) in truth.items():
        assert np.array_equal(recs[key]["input"], a) and np.array_equal(recs[key]["target"], b)
    with pytest.raises(ValueError, match="either pairs"):
        write_paired_shards(str(tmp_path / "x"), pairs=str(ins), inputs=str(ins), targets=str(tgs))


def _pairs_digest():
    """sha256 of every pair test_ab_pairs_with_split_folders_and_direction draws."""
    h = hashlib.sha256()
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(n):
            for arr in pair(key_seed(split, i)):
                h.update(arr.tobytes())
    return h.hexdigest()


def test_test_data_does_not_depend_on_the_hash_seed():
    """The pairs are identical in processes with different PYTHONHASHSEED (no ``hash()``)."""
    src = "\n".join(["import hashlib, zlib", "import numpy as np"]
                    + [inspect.getsource(f) for f in (pair, key_seed, _pairs_digest)]
                    + ["print(_pairs_digest())"])
    digests = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        r = subprocess.run([sys.executable, "-c", src], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        digests.add(r.stdout.strip())
    assert digests == {_pairs_digest()}


def test_paired_task_crops_and_flips_both_identically():
    rng = np.random.default_rng(0)
    tgt = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    rec = {"key": "k", "target": tgt, "input": 255 - tgt}
    task = get_task("paired")
    cfg = DataConfig(task="paired", patch=32, augment=True)
    for seed in range(6):
        s = task(rec, cfg, np.random.default_rng(seed), True)
        assert s["input"].shape == s["target"].shape == (3, 32, 32)
        assert np.allclose(s["input"].numpy(), 1 - s["target"].numpy(), atol=1e-6)
    y = task(rec, DataConfig(task="paired", patch=32, channels=1), np.random.default_rng(0), True)
    assert y["input"].shape == y["target"].shape == (1, 32, 32)
    # no rotations: a crop is always found upright (maybe mirrored) in the source
    s = task(rec, cfg, np.random.default_rng(1), True)
    t = np.round(s["target"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    hits = [np.array_equal(src[r:r + 32, c:c + 32], t) for src in (tgt, tgt[:, ::-1])
            for r in range(19) for c in range(29)]
    assert any(hits)
    assert split_ab(np.zeros((4, 10, 3), np.uint8))[0].shape == (4, 5, 3)


def test_job_script(tmp_path):
    src = tmp_path / "p"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.concatenate(pair(i), 1)).save(src / f"{i}.png")
    r = subprocess.run([sys.executable, "jobs/make_paired_shards.py", "--pairs", str(src),
                        "--dst", str(tmp_path / "o"), "--val-fraction", "0", "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["train"] == 3
    r = subprocess.run([sys.executable, "jobs/make_paired_shards.py", "--pairs", str(tmp_path / "nope"),
                        "--dst", str(tmp_path / "o2")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "does not exist" in r.stderr
