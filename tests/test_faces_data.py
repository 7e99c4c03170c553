"""CelebAMask-HQ ingester and the face_sr task, on generated faces in the exact layout."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raygan.datasets.degradations import get_task
from raygan.datasets.faces import (FLIP_PERM, IMG_DIR, MASK_DIR, PARTS, decode_parsing,
                                   encode_parsing, find_faces, make_synthetic_celebamask,
                                   write_face_shards)
from raygan.datasets.pipeline import ShardSet, decode_record, iter_shard
from raygan.platform.core.config import DataConfig

ROOT = Path(__file__).resolve().parent.parent


def read_all(dst, split):
    recs = []
    for uri in ShardSet.open(str(dst), split).shards:
        recs += [decode_record(r) for r in iter_shard(uri)]
    return recs


def test_parts_table():
    assert PARTS == ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
                     "mouth", "u_lip", "l_lip")
    maps = (np.random.default_rng(0).random((7, 5, 11)) > 0.5).astype(np.uint8)
    blob = encode_parsing(maps)
    assert blob[:6] == b"\x93NUMPY"  # a plain .npy, never a pickle
    assert np.array_equal(decode_parsing(blob), maps)


def test_ingest_round_trips_maps_exactly(tmp_path):
    src = tmp_path / "CelebAMask-HQ"
    # 256 px images and 512 px masks, drawn at 128 and enlarged: ingesting at 128 must
    # give the drawn maps back bit for bit
    drawn = make_synthetic_celebamask(str(src), 6, image_size=256, mask_size=512, seed=1)
    assert (src / IMG_DIR / "0.jpg").is_file()
    assert (src / MASK_DIR / "0" / "00000_l_eye.png").is_file()
    assert not (src / MASK_DIR / "0" / "00002_r_ear.png").exists()  # hidden part
    (src / IMG_DIR / "notes.txt").write_text("ignored")
    manifest = write_face_shards(str(src), str(tmp_path / "shards"), val_last=2, parallel="none",
                                 progress=False, shard_size=4)
    assert manifest["splits"]["train"]["count"] == 4 and manifest["splits"]["val"]["count"] == 2
    assert manifest["parts"] == list(PARTS) and not manifest["skipped"]
    recs = read_all(tmp_path / "shards", "train") + read_all(tmp_path / "shards", "val")
    assert sorted(r["key"] for r in read_all(tmp_path / "shards", "val")) == \
        ["celebamaskhq/00004", "celebamaskhq/00005"]
    assert len(recs) == 6
    for r in recs:
        i = int(r["key"].split("/")[-1])
        assert r["target"].shape == (128, 128, 3) and r["target"].dtype == np.uint8
        assert r["parsing"].shape == (128, 128, 2)  # bit-packed
        maps = decode_parsing(r["parsing"])
        assert np.array_equal(maps, drawn[i]), i
        assert r["meta"]["index"] == i
        if i % 3 == 2:
            assert not maps[..., PARTS.index("r_ear")].any()
            assert "r_ear" not in r["meta"]["parts"]
        # the face pixels follow the maps (the skin region is skin-coloured)
        skin = maps[..., 0].astype(bool)
        assert r["target"][skin].mean(0)[0] > 150


def test_face_sr_task_crops_and_flips_face_and_maps_together(tmp_path):
    src = tmp_path / "src"
    make_synthetic_celebamask(str(src), 1, image_size=128, mask_size=128, seed=2)
    write_face_shards(str(src), str(tmp_path / "s"), val_fraction=0.0, parallel="none", progress=False)
    rec = read_all(tmp_path / "s", "train")[0]
    full = decode_parsing(rec["parsing"])
    task = get_task("face_sr")
    cfg = DataConfig(task="face_sr", scale=8, patch=64, augment=True)
    flips = 0
    for seed in range(12):
        s = task(rec, cfg, np.random.default_rng(seed), True)
        assert s["input"].shape == (3, 8, 8) and s["target"].shape == (3, 64, 64)
        assert s["parsing"].shape == (11, 64, 64)
        tgt = np.round(s["target"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        par = s["parsing"].permute(1, 2, 0).numpy().astype(np.uint8)
        # locate the crop in the full face (unflipped or mirrored), check the maps match it
        found = False
        for flip in (False, True):
            img = rec["target"][:, ::-1] if flip else rec["target"]
            maps = full[:, ::-1][..., list(FLIP_PERM)] if flip else full
            for top in range(0, 65, 8):
                for left in range(0, 65, 8):
                    if np.array_equal(img[top:top + 64, left:left + 64], tgt):
                        assert np.array_equal(maps[top:top + 64, left:left + 64], par)
                        found, flips = True, flips + flip
        assert found
    assert 0 < flips < 12  # both branches seen
    # validation: whole face, 16x16 input, deterministic
    v = task(rec, DataConfig(task="face_sr", scale=8, patch=128), np.random.default_rng(0), False)
    assert v["input"].shape == (3, 16, 16) and v["parsing"].shape == (11, 128, 128)
    assert np.array_equal(v["parsing"].permute(1, 2, 0).numpy().astype(np.uint8), full)


def test_missing_layout_and_job_script(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="CelebAMask-HQ layout"):
        find_faces(str(tmp_path / "empty"))
    r = subprocess.run([sys.executable, "jobs/make_face_shards.py", "--src", str(tmp_path / "empty"),
                        "--dst", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "CelebAMask-HQ layout" in r.stderr
    r = subprocess.run([sys.executable, "jobs/make_face_shards.py", "--synthetic", "5", "--size", "64",
                        "--val-last", "1", "--dst", str(tmp_path / "demo"), "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert (summary["train"], summary["val"], summary["size"]) == (4, 1, 64)
