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


# ----------------------------------------------------------------------------- one line per error


def test_a_file_raygan_cannot_find_is_one_line_through_the_raygan_command(tmp_path):
    """`raygan train` (python -m raygan) reports raygan's own FileNotFoundError in one line
    naming the file, status 2, as the job script does."""
    out = subprocess.run([sys.executable, "-m", "raygan", "train", "wcdgan", "--workdir", str(tmp_path),
                          "--check", f"train.perceptual_weights={tmp_path / 'vgg.pth'}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert_clear_error(out, str(tmp_path / "vgg.pth"), "does not exist")


def _train_raising(monkeypatch, capsys, tmp_path, fail):
    """train_main with a run_training that calls ``fail()``: (status, stderr lines)."""
    from raygan.platform import cli

    monkeypatch.setattr(cli, "run_training", lambda cfg, resume=None: fail())
    status = cli.train_main("wcdgan", ["--workdir", str(tmp_path), *RANDOM_VGG])
    return status, capsys.readouterr().err.strip().splitlines()


def test_a_library_file_error_names_its_type_file_and_frame(monkeypatch, capsys, tmp_path):
    import shutil

    status, err = _train_raising(monkeypatch, capsys, tmp_path,
                                 lambda: shutil.copyfile(tmp_path / "missing.bin", tmp_path / "b"))
    assert status == 1 and len(err) == 1, err
    line = err[0]
    assert line.startswith("error: FileNotFoundError: [Errno 2] No such file or directory")
    assert f"file: {tmp_path / 'missing.bin'}" in line
    assert "raised in shutil (" in line and "copyfile)" in line  # the frame it came from
    assert "called from raygan.platform.cli line" in line and "RAYGAN_TRACEBACK=1" in line


def test_a_removed_working_directory_is_named(monkeypatch, capsys, tmp_path):
    """The two-node case: a library asks for the working directory after Ray removed it."""
    import os

    gone = tmp_path / "job_working_dir"
    gone.mkdir()
    here = os.getcwd()
    try:
        os.chdir(gone)
        gone.rmdir()
        status, err = _train_raising(monkeypatch, capsys, tmp_path, lambda: os.path.abspath("mlruns"))
    finally:
        os.chdir(here)
    assert status == 1 and len(err) == 1, err
    assert "FileNotFoundError" in err[0] and "the error names no file" in err[0]
    assert "raised in posixpath (" in err[0] and "the current working directory no longer exists" in err[0]


def test_a_library_value_error_keeps_its_traceback_on_request(monkeypatch, capsys, tmp_path):
    import json

    monkeypatch.setenv("RAYGAN_TRACEBACK", "1")
    status, err = _train_raising(monkeypatch, capsys, tmp_path, lambda: json.loads("{"))
    assert status == 1
    assert err[0] == "Traceback (most recent call last):" and any("json/decoder.py" in e for e in err)
    assert err[-1].startswith("error: JSONDecodeError: Expecting property name") and "raised in json.decoder (" in err[-1]


def test_raygans_own_value_error_stays_its_message(monkeypatch, capsys, tmp_path):
    from raygan.datasets.pipeline import patches_per_image

    status, err = _train_raising(monkeypatch, capsys, tmp_path, lambda: patches_per_image(64, 64, 0, 8))
    assert (status, err) == (2, ["error: patch and stride must be >= 1, got 0, 8"])


# trainer.fit() wraps what a training worker raised in WorkerGroupError (rank -> the error,
# its frames lost on the way back; Ray's message holds the worker's traceback as text) and
# what Train's controller raised in ControllerError: the job reports the cause, not the wrapper
WORKER_TRACEBACK = ('Traceback (most recent call last):\n  File "/w/raygan/datasets/pipeline.py", line 9, '
                    'in __iter__\n  File "/venv/lib/tarfile.py", line 1720, in open\nFileNotFoundError: x')


def test_a_workers_own_error_is_its_message_with_the_rank(monkeypatch, capsys, tmp_path):
    from ray.train import WorkerGroupError
    from raygan.platform.core.errors import TooManySkipped

    failures = {1: TooManySkipped("skipped 18 of the 18 training records (18 x unreadable shard)"),
                0: TooManySkipped("skipped 17 of the 18 training records")}

    def fail():
        raise WorkerGroupError(WORKER_TRACEBACK, failures)

    status, err = _train_raising(monkeypatch, capsys, tmp_path, fail)
    assert (status, err) == (2, ["error: rank 0: skipped 17 of the 18 training records"])


def test_a_library_error_in_a_worker_names_type_file_rank_and_frame(monkeypatch, capsys, tmp_path):
    from ray.train import WorkerGroupError

    def fail():
        raise WorkerGroupError(WORKER_TRACEBACK, {0: FileNotFoundError(2, "No such file or directory",
                                                                       "/data/shard-3.tar")})

    status, err = _train_raising(monkeypatch, capsys, tmp_path, fail)
    assert status == 1 and len(err) == 1, err
    assert err[0].startswith("error: rank 0: FileNotFoundError: [Errno 2] No such file or directory")
    assert "file: /data/shard-3.tar" in err[0]
    assert "raised at /venv/lib/tarfile.py:1720 (open)" in err[0]  # the worker's last frame
    monkeypatch.setenv("RAYGAN_TRACEBACK", "1")  # the worker's traceback text on request
    status, err = _train_raising(monkeypatch, capsys, tmp_path, fail)
    assert 'File "/w/raygan/datasets/pipeline.py", line 9' in "\n".join(err) and err[-1].startswith("error: rank 0:")


def test_a_controller_storage_outage_is_one_line(monkeypatch, capsys, tmp_path):
    from ray.train import ControllerError
    from raygan.platform.core.storage import StorageUnavailable

    def fail():
        raise ControllerError(StorageUnavailable("storage unreachable for 301 s: http://127.0.0.1:9 (put)"))

    status, err = _train_raising(monkeypatch, capsys, tmp_path, fail)
    assert (status, err) == (2, ["error: Ray Train's controller: storage unreachable for 301 s: "
                                 "http://127.0.0.1:9 (put)"])


def test_an_unexpected_worker_error_keeps_its_traceback(monkeypatch, capsys, tmp_path):
    from ray.train import WorkerGroupError

    def fail():
        raise WorkerGroupError(WORKER_TRACEBACK, {0: RuntimeError("CUDA error: an illegal memory access")})

    with pytest.raises(WorkerGroupError):  # a bug to report: the whole traceback, not one line
        _train_raising(monkeypatch, capsys, tmp_path, fail)
