import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO_ROOT, random_image, write_image
from raygan.datasets import shards as sh
from raygan.platform.core import storage as st

JOB = os.path.join(REPO_ROOT, "jobs", "make_shards.py")


def _run_job(*args, timeout=240):
    return subprocess.run([sys.executable, JOB, "--no-progress", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO_ROOT)


def _u(seed, relpath):
    """The documented split hash: sha256("<seed>:<relpath>"), first 8 bytes big-endian, / 2**64."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{relpath}".encode()).digest()[:8], "big") / 2.0 ** 64


def _samples(tar_path_or_bytes):
    import webdataset as wds

    url = tar_path_or_bytes
    return list(wds.WebDataset([url], shardshuffle=False))


@pytest.fixture
def mixed_folder(image_folder):
    """image_folder plus a grayscale and an RGBA image, a corrupt file, a too-small image
    and a non-image file."""
    rng = np.random.default_rng(5)
    write_image(os.path.join(image_folder, "gray.png"), random_image(rng, 40, 50, channels=1))
    rgba = np.concatenate([random_image(rng, 40, 40), np.full((40, 40, 1), 255, np.uint8)], axis=2)
    write_image(os.path.join(image_folder, "rgba.png"), rgba)
    with open(os.path.join(image_folder, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_image(os.path.join(image_folder, "a", "tiny.png"), random_image(rng, 16, 64))
    with open(os.path.join(image_folder, "README.txt"), "w") as f:
        f.write("not an image")
    return image_folder


def test_write_shards_local_manifest_and_contents(mixed_folder, tmp_path):
    dst = str(tmp_path / "out")
    m = sh.write_shards([mixed_folder], dst, shard_size=4, val_fraction=0.25, seed=0, min_size=32,
                        parallel="none", progress=False)
    assert m["format"] == "raygan-shards/1"
    assert (m["val_fraction"], m["seed"], m["min_size"]) == (0.25, 0, 32)
    assert m["sources"] == [{"uri": mixed_folder, "role": "split", "files": 16}]
    skipped = {os.path.basename(s["path"]): s["reason"] for s in m["skipped"]}
    assert set(skipped) == {"broken.jpg", "tiny.png"}
    assert skipped["broken.jpg"].startswith("cannot decode")
    assert skipped["tiny.png"] == "too small: 64x16 < min_size 32"
    total = m["splits"]["train"]["count"] + m["splits"]["val"]["count"]
    assert total == 14 and m["splits"]["val"]["count"] == 4
    keys = {}
    for split, info in m["splits"].items():
        assert [e["name"] for e in info["shards"]] == [sh.shard_name(i) for i in range(len(info["shards"]))]
        assert sum(e["count"] for e in info["shards"]) == info["count"]
        for entry in info["shards"]:
            path = os.path.join(dst, split, entry["name"])
            data = open(path, "rb").read()
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
            assert len(data) == entry["bytes"] and entry["count"] <= 4
            samples = _samples(path)
            assert len(samples) == entry["count"]
            for s in samples:
                keys[s["__key__"]] = (split, s)
    assert json.loads(open(os.path.join(dst, "manifest.json")).read()) == m
    # keys are sanitized relative paths including the source folder name, unique
    assert "images/a/img01" in keys and "images/gray" in keys and len(keys) == 14
    for key, (split, s) in keys.items():
        meta = json.loads(s["json"])
        img = Image.open(io.BytesIO(s["png"]))
        assert img.format == "PNG" and img.mode == "RGB"
        assert (meta["width"], meta["height"]) == img.size
        rel = os.path.relpath(meta["source"], os.path.dirname(mixed_folder))
        assert sh.sanitize_key(rel) == key
        assert split == ("val" if _u(0, rel) < 0.25 else "train"), rel
        if meta["source"].endswith(".png"):  # lossless: identical pixels
            src = np.asarray(Image.open(meta["source"]).convert("RGB"))
            assert np.array_equal(np.asarray(img), src)
    gray = np.asarray(Image.open(io.BytesIO(keys["images/gray"][1]["png"])))
    assert gray.shape[2] == 3 and np.array_equal(gray[..., 0], gray[..., 2])


def test_split_is_deterministic_and_seeded(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "many"
    for i in range(40):
        write_image(str(src / f"{i:03d}.png"), random_image(rng, 33, 33))
    kw = dict(shard_size=16, val_fraction=0.3, min_size=32, parallel="none", progress=False)
    a = sh.write_shards([str(src)], str(tmp_path / "a"), seed=1, **kw)
    b = sh.write_shards([str(src)], str(tmp_path / "b"), seed=1, **kw)
    c = sh.write_shards([str(src)], str(tmp_path / "c"), seed=2, **kw)
    assert a == b  # byte-identical shards: same sha256s
    assert a["splits"] != c["splits"]
    names = lambda m, s: {x["__key__"] for x in _samples_of(tmp_path / m, s)}  # noqa: E731
    for m, seed in (("a", 1), ("c", 2)):  # exactly the files the documented hash puts in val
        assert names(m, "val") == {f"many/{i:03d}" for i in range(40) if _u(seed, f"many/{i:03d}.png") < 0.3}
    assert (a["splits"]["val"]["count"], c["splits"]["val"]["count"]) == (11, 12)
    assert names("a", "val") | names("a", "train") == names("c", "val") | names("c", "train")


def _samples_of(root, split):
    out = []
    for f in sorted(os.listdir(os.path.join(root, split))):
        out.extend(_samples(os.path.join(root, split, f)))
    return out


def test_val_fraction_zero_and_val_src(image_folder, tmp_path):
    rng = np.random.default_rng(1)
    set5 = tmp_path / "Set5"
    for name in ("baby", "bird"):
        write_image(str(set5 / f"{name}.png"), random_image(rng, 48, 48))
    m = sh.write_shards([image_folder], str(tmp_path / "out"), val_fraction=0.0, parallel="none",
                        progress=False, val_sources=[str(set5)], min_size=32)
    assert m["splits"]["train"]["count"] == 12
    assert m["splits"]["val"]["count"] == 2
    assert [s["__key__"] for s in _samples_of(tmp_path / "out", "val")] == ["Set5/baby", "Set5/bird"]
    m = sh.write_shards([image_folder], str(tmp_path / "out2"), val_fraction=0.0, parallel="none", progress=False)
    assert m["splits"]["val"] == {"count": 0, "shards": []}


def test_empty_and_bad_inputs(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    (bad / "notes.txt").write_text("hi")
    with pytest.raises(sh.ShardError, match="no usable images .*1 skipped"):
        sh.write_shards([str(bad)], str(tmp_path / "o1"), parallel="none", progress=False)
    assert not os.path.exists(tmp_path / "o1" / "manifest.json")
    (bad / "x.png").unlink()
    with pytest.raises(sh.ShardError, match="no image files"):
        sh.write_shards([str(bad)], str(tmp_path / "o2"), parallel="none", progress=False)
    with pytest.raises(sh.ShardError, match="does not exist"):
        sh.write_shards([str(tmp_path / "missing")], str(tmp_path / "o3"), parallel="none", progress=False)
    with pytest.raises(st.StorageError, match="unsupported URI scheme 'gs'"):
        sh.write_shards([str(bad)], "gs://bucket/x", parallel="none", progress=False)


def test_generic_writer_extra_fields(tmp_path):
    dst = str(tmp_path / "w")
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, "PNG")
    parsing = io.BytesIO()
    np.save(parsing, np.zeros((11, 8, 8), np.uint8))
    with sh.ShardSetWriter(dst, shard_size=2) as w:
        for i in range(3):
            w.add("train", f"faces/{i}", {"png": png.getvalue(), "input.png": png.getvalue(),
                                          "parsing.npy": parsing.getvalue()})
        with pytest.raises(sh.ShardError, match="duplicate sample key 'faces/0'"):
            w.add("train", "faces/0", {"png": b"x"})
        with pytest.raises(sh.ShardError, match="invalid sample key"):
            w.add("train", "a.b", {"png": b"x"})
        m = w.close({"task": "face_sr"})
    assert m["task"] == "face_sr" and m["splits"]["train"]["count"] == 3
    assert len(m["splits"]["train"]["shards"]) == 2
    s = _samples(os.path.join(dst, "train", "shard-000000.tar"))[0]
    assert s["__key__"] == "faces/0" and {"png", "input.png", "parsing.npy"} <= set(s)


def test_make_shards_job_local_ray_matches_sequential(mixed_folder, tmp_path):
    """The real job with Ray tasks gives byte-identical shards to the in-process encoder."""
    ref = sh.write_shards([mixed_folder], str(tmp_path / "ref"), shard_size=5, val_fraction=0.2,
                          seed=3, min_size=32, parallel="none", progress=False)
    out = str(tmp_path / "job")
    r = _run_job("--src", mixed_folder, "--dst", out, "--shard-size", "5", "--val-fraction", "0.2",
                 "--seed", "3", "--min-size", "32", "--parallel", "ray")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary == {"dst": out, "train": ref["splits"]["train"]["count"],
                       "val": ref["splits"]["val"]["count"],
                       "train_shards": len(ref["splits"]["train"]["shards"]),
                       "val_shards": len(ref["splits"]["val"]["shards"]), "skipped": 2}
    got = json.loads(open(os.path.join(out, "manifest.json")).read())
    assert got == ref


def test_make_shards_job_to_s3(image_folder, s3_bucket, s3_server, tmp_path, s3_storage_cfg):
    dst = f"s3://{s3_bucket}/shards/v1"
    r = _run_job("--src", image_folder, "--dst", dst, "--shard-size", "5", "--val-fraction", "0.25",
                 "--endpoint-url", s3_server, "--parallel", "none")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["train"] + summary["val"] == 12
    m = json.loads(st.read_bytes(f"{dst}/manifest.json", storage_cfg=s3_storage_cfg))
    for split, info in m["splits"].items():
        for entry in info["shards"]:
            data = st.read_bytes(f"{dst}/{split}/{entry['name']}", storage_cfg=s3_storage_cfg)
            assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert st.list_files(dst, ".tar", storage_cfg=s3_storage_cfg) == sorted(
        f"{dst}/{s}/{e['name']}" for s, i in m["splits"].items() for e in i["shards"])


def test_make_shards_job_errors_are_one_line(image_folder, tmp_path, s3_server):
    cases = [
        (["--src", image_folder, "--dst", "gs://x/y"], "unsupported URI scheme 'gs'"),
        (["--src", str(tmp_path / "nope"), "--dst", str(tmp_path / "o")], "does not exist"),
        (["--src", image_folder, "--dst", "s3://raygan-missing-bucket/x", "--endpoint-url", s3_server],
         "'raygan-missing-bucket' does not exist"),
        (["--src", image_folder, "--dst", str(tmp_path / "o"), "--val-fraction", "1.5"], "--val-fraction"),
    ]
    for args, msg in cases:
        r = _run_job(*args, "--parallel", "none")
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and "Traceback" not in r.stderr
        assert r.stdout == ""


def test_storage_parallel_auto_threshold(monkeypatch, image_folder, tmp_path):
    """auto picks the in-process encoder below the threshold (no Ray start for small sets)."""
    called = []
    monkeypatch.setattr(sh, "_encode_ray", lambda *a: called.append(1) or sh._encode_sequential(*a))
    sh.write_shards([image_folder], str(tmp_path / "o"), parallel="auto", progress=False)
    assert not called
    monkeypatch.setattr(sh, "RAY_AUTO_THRESHOLD", 5)
    sh.write_shards([image_folder], str(tmp_path / "o2"), parallel="auto", progress=False)
    assert called
    shutil.rmtree(tmp_path / "o2")


def test_manifest_records_each_splits_image_sizes(mixed_folder, tmp_path):
    """write_shards: a [w, h, n] histogram per split, from the samples' json sizes."""
    m = sh.write_shards([mixed_folder], str(tmp_path / "s"), val_fraction=0.3, seed=0,
                        min_size=32, parallel="none", progress=False)
    for split, entry in m["splits"].items():
        sizes = entry["image_sizes"]
        assert sum(n for _, _, n in sizes) == entry["count"]
        assert sizes == sorted(sizes)
    every = {(w, h): 0 for w, h in [(72, 64), (50, 40), (40, 40)]}
    for entry in m["splits"].values():
        for w, h, n in entry["image_sizes"]:
            every[(w, h)] += n
    assert every == {(72, 64): 12, (50, 40): 1, (40, 40): 1}  # 12 photos, the gray, the RGBA
    # the generic writer: size= or the json field; a split with an unknown size gets none
    with sh.ShardSetWriter(str(tmp_path / "w"), shard_size=2) as w:
        w.add("train", "a", {"png": b"x", "json": json.dumps({"width": 178, "height": 218}).encode()})
        w.add("train", "b", {"png": b"x"}, size=(178, 218))
        w.add("train", "c", {"png": b"x"}, size=(2040, 1356))
        w.add("val", "d", {"png": b"x"})  # no size
        out = w.close()
    assert out["splits"]["train"]["image_sizes"] == [[178, 218, 2], [2040, 1356, 1]]
    assert "image_sizes" not in out["splits"]["val"]
    on_disk = json.loads(open(tmp_path / "w" / "manifest.json").read())
    assert on_disk["splits"]["train"]["image_sizes"] == [[178, 218, 2], [2040, 1356, 1]]
