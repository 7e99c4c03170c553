"""Evaluation tables: models and baselines, numbers checked against scikit-image."""
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from raygan.platform.evaluation import EvaluationError, data_config, evaluate

ROOT = Path(__file__).resolve().parent.parent
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
SHARED_VAL = ROOT.parent / "shared" / "data" / "val"


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory):
    d = tmp_path_factory.mktemp("set")
    for name in ("astronaut.png", "chelsea.png", "coffee.png"):
        im = Image.open(SKIMAGE_DATA / name).convert("RGB")
        im.crop((0, 0, 96, 80)).save(d / name)
    return d


def _jpeg(arr, q):
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def test_input_baseline_matches_scikit_image(photo_set):
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    res = evaluate(["input"], [str(photo_set)], data_config("jpeg", ["quality=10"]), progress=False,
                   lpips_weights="off")
    row = res["rows"][0]
    ref = {"psnr": [], "ssim": [], "psnr_y": [], "ssim_y": []}
    for p in sorted(photo_set.glob("*.png")):
        t = np.asarray(Image.open(p).convert("RGB"))
        d = _jpeg(t, 10)
        ref["psnr"].append(peak_signal_noise_ratio(t, d, data_range=255))
        ref["ssim"].append(structural_similarity(t, d, gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False, data_range=255, channel_axis=2))
        ty, dy = rgb2ycbcr(t)[..., 0], rgb2ycbcr(d)[..., 0]
        ref["psnr_y"].append(peak_signal_noise_ratio(ty, dy, data_range=255))
        ref["ssim_y"].append(structural_similarity(ty, dy, gaussian_weights=True, sigma=1.5,
                                                   use_sample_covariance=False, data_range=255))
    for k, v in ref.items():
        assert row[k] == pytest.approx(np.mean(v), abs=2e-3), k
    assert row["images"] == 3 and np.isnan(row["lpips"])
    assert "BT.601" in res["markdown"] and "| input |" in res["markdown"]


def test_bitdepth_baselines_rank_as_expected(photo_set):
    res = evaluate(["zp", "mig", "br"], [str(photo_set)], data_config("bitdepth", ["bits=4", "expand=zp"]),
                   progress=False, lpips_weights="off")
    by = {r["model"]: r["psnr"] for r in res["rows"]}
    assert by["mig"] > by["zp"] + 1 and by["br"] > by["zp"] + 1


def test_y_protocol_scores_the_y_image(photo_set):
    res = evaluate(["input"], [str(photo_set)], data_config("jpeg", ["quality=10"]), protocol="y",
                   progress=False, lpips_weights="off")
    row = res["rows"][0]
    assert row["psnr"] == pytest.approx(row["psnr_y"], abs=0.2)  # Y vs Y*255 conventions
    assert "Y (BT.601" in res["header"]


def _tiny_checkpoint(tmp_path):
    from raygan.platform.checkpoint import save_checkpoint
    from raygan.platform.config import load_config, to_dict
    from raygan.platform.engine import GANEngine

    cfg = load_config(ROOT / "jobs/configs/wcdgan.yaml",
                      ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
                       "model.d_max_features=8", "model.d_fc=8", "model.d_pool=1",
                       "train.perceptual_weights=random", "model.global_residual=true"])
    eng = GANEngine(cfg)
    return save_checkpoint(tmp_path / "ck", eng, {"family": "wcdgan", "step": 0, "config": to_dict(cfg)})


def test_checkpoint_model_and_job_with_mlflow(photo_set, tmp_path):
    ck = _tiny_checkpoint(tmp_path)
    out = subprocess.run([sys.executable, "jobs/evaluate.py", "--model", str(ck), "input",
                          "--sets", str(photo_set), "--out", str(tmp_path / "eval"), "--no-progress",
                          "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "--lpips-weights", "off"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    rows = list(csv.DictReader(open(tmp_path / "eval" / "table.csv")))
    assert [r["model"] for r in rows] == [str(ck), "input"]
    assert (tmp_path / "eval" / f"grid_{photo_set.name}.png").exists()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert any(k.endswith(".input.psnr") for k in run.data.metrics)


def test_channel_mismatch_and_bad_task_are_clear(photo_set, tmp_path):
    ck = _tiny_checkpoint(tmp_path)
    with pytest.raises(EvaluationError, match="protocol"):
        evaluate([str(ck)], [str(photo_set)], data_config("jpeg"), protocol="y", progress=False,
                 lpips_weights="off")
    out = subprocess.run([sys.executable, "jobs/evaluate.py", "--model", "input", "--task", "nosuch",
                          "--sets", str(photo_set), "--no-mlflow"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "nosuch" in out.stderr.strip().splitlines()[-1]
    for model, sets in (("input", str(tmp_path / "missing")), (str(tmp_path / "nockpt"), str(photo_set))):
        (tmp_path / "nockpt").mkdir(exist_ok=True)
        out = subprocess.run([sys.executable, "jobs/evaluate.py", "--model", model, "--task", "jpeg",
                              "--sets", sets, "--no-mlflow"], cwd=ROOT, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.skipif(not SHARED_VAL.is_dir(), reason="../shared/data/val is absent")
def test_shared_set5_input_baseline():
    res = evaluate(["input"], [str(SHARED_VAL / "set5")], data_config("jpeg", ["quality=10"]),
                   progress=False, lpips_weights="off")
    assert res["rows"][0]["images"] == 5
    assert 20 < res["rows"][0]["psnr"] < 35
