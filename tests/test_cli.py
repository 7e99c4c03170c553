"""Bad input through the real job entry point: one clear line, exit status 2, no Ray started."""
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port  # nothing listens on it once returned

ROOT = Path(__file__).resolve().parent.parent
RANDOM_VGG = ["train.perceptual_weights=random"]


def run_job(*args, timeout=120):
    import os

    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1")
    t0 = time.time()
    out = subprocess.run([sys.executable, "jobs/train_wcdgan.py", *RANDOM_VGG, *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout, env=env)
    return out, time.time() - t0


def assert_clear_error(out, *needles):
    assert out.returncode == 2, out.stdout + out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    for n in needles:
        assert n in last, last


def test_unknown_config_key(tmp_path):
    out, _ = run_job("--workdir", str(tmp_path), "data.qualty=5")
    assert_clear_error(out, "data.qualty")


def test_config_of_another_family(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base: " + str(ROOT / "models/configs/wcdgan.yaml") + "\nfamily: nosuch\n")
    out, _ = run_job("--config", str(cfg), "--workdir", str(tmp_path))
    assert_clear_error(out, "family")


def test_unsupported_uri_scheme(tmp_path):
    out, _ = run_job("--workdir", str(tmp_path), "--data", "gs://bucket/shards")
    assert_clear_error(out, "gs://")


def test_empty_shard_set(tmp_path):
    (tmp_path / "empty").mkdir()
    out, _ = run_job("--workdir", str(tmp_path), "--data", str(tmp_path / "empty"))
    assert_clear_error(out, str(tmp_path / "empty"))


def test_unreachable_s3_endpoint_fails_bounded(tmp_path):
    port = free_port()
    out, took = run_job("--workdir", str(tmp_path), "--data", "s3://bucket/shards",
                        "--endpoint-url", f"http://127.0.0.1:{port}", "storage.max_attempts=2",
                        "storage.connect_timeout_s=1")
    assert_clear_error(out, f"127.0.0.1:{port}")
    assert took < 60


def test_resume_without_an_earlier_run(tmp_path):
    out, _ = run_job("--workdir", str(tmp_path), "--resume")
    assert_clear_error(out, "resume")


def test_missing_perceptual_weights_name_the_file(tmp_path, monkeypatch):
    import os

    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch"))
    out = subprocess.run([sys.executable, "jobs/train_wcdgan.py", "--workdir", str(tmp_path),
                          "train.perceptual_weights=auto"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=env)
    assert_clear_error(out, "vgg19-dcbbe1a2.pth")
