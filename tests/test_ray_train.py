"""End to end on real parts: a Ray head on 127.0.0.1, moto's S3 server over HTTP, and a real
``mlflow server`` (sqlite backend, S3 artifacts), driven through the job scripts."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import (BASELINE_LISTENERS, BIN, LOOPBACK, free_port, job_env, listening,
                      ray_head_on_loopback)

ROOT = Path(__file__).resolve().parent.parent
SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"

pytestmark = pytest.mark.slow

TINY = ["model.features=16", "model.blocks=1", "model.mixed_width=8", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2",
        "train.perceptual_weights=random", "train.lpips_weights=off", "data.patch=24",
        "data.batch=2", "data.val_crop=32", "data.val_max_images=2", "data.shuffle_buffer=8",
        "data.loader_workers=0", "train.pretrain_steps=2", "train.log_every=2"]


def summary_from(output: str) -> dict:
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{") and "ray_run_name" in line:
            return json.loads(line)
    raise AssertionError(f"no summary line in output:\n{output[-4000:]}")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    src = tmp_path_factory.mktemp("photos")
    for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
                 "color.png", "brick.png", "camera.png", "grass.png", "hubble_deep_field.jpg"):
        shutil.copy(SKIMAGE_DATA / name, src / name)
    return src


@pytest.fixture(scope="module")
def ray_head(s3_server):
    with ray_head_on_loopback(num_cpus=4) as head:
        yield head


def test_job_submit_s3_shards_checkpoints_and_mlflow_server(ray_head, mlflow_server, s3_server,
                                                             s3_bucket, photos, tmp_path):
    import boto3
    from mlflow import MlflowClient

    shards = f"s3://{s3_bucket}/shards"
    made = subprocess.run([sys.executable, "jobs/make_shards.py", "--src", str(photos), "--dst", shards,
                           "--endpoint-url", s3_server, "--val-fraction", "0.3", "--parallel", "none"],
                          cwd=ROOT, env=job_env(), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]

    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--working-dir", str(ROOT), "--", "python", "jobs/train_wcdgan.py",
           "--data", shards, "--storage", f"s3://{s3_bucket}/ray", "--endpoint-url", s3_server,
           "--workers", "2", "--steps", "6", "--experiment", "e2e-s3", "--name", "e2e-s3",
           "--workdir", str(tmp_path / "work"), f"mlflow.tracking_uri={mlflow_server['url']}", "train.val_every=3", *TINY]
    job = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=900)
    assert job.returncode == 0, (job.stdout + job.stderr)[-6000:]
    summary = summary_from(job.stdout)
    assert summary["steps"] == 6
    assert summary["best_checkpoint"].startswith(f"s3://{s3_bucket}/ray/e2e-s3/checkpoint_")
    assert summary["params_generator"] > 0 and summary["params_discriminator"] > 0
    for key in ("psnr", "ssim", "psnr_y", "ssim_y"):
        assert key in summary["val_model"] and key in summary["val_degraded_input"]

    s3 = boto3.client("s3", endpoint_url=s3_server)
    ray_keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="ray/")["Contents"]]
    assert any(k.endswith("generator.safetensors") and "checkpoint_00000006" in k for k in ray_keys)
    art = [o["Key"] for o in s3.list_objects_v2(Bucket=mlflow_server["bucket"], Prefix="mlflow/")["Contents"]]
    assert any("grid_step_00000006.png" in k for k in art), art
    assert any(k.endswith("generator.safetensors") for k in art), art

    client = MlflowClient(tracking_uri=mlflow_server["url"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert "val_psnr" in run.data.metrics and "skipped_records" in run.data.metrics
    assert run.data.params["train.perceptual_weights"] == "random"
    history = client.get_metric_history(run.info.run_id, "train_g_total")
    assert len(history) >= 2
    versions = client.search_model_versions(f"name='{summary['registered_model']}'")
    assert versions and versions[0].run_id == run.info.run_id


def _train_worker_pids(since: float, gcs: str):
    """Ray Train worker processes of the head at ``gcs`` started after ``since`` (this run's,
    not a finished run's, and never another Ray's on the same machine)."""
    raylets = {p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
               if "raylet" in " ".join(p.info["cmdline"] or []) and gcs in " ".join(p.info["cmdline"] or [])}
    pids = []
    for p in psutil.process_iter(["pid", "cmdline", "name", "create_time"]):
        text = " ".join(p.info["cmdline"] or []) + " " + (p.info["name"] or "")
        if "RayTrainWorker" not in text or p.info["create_time"] < since:
            continue
        try:
            ours = any(parent.pid in raylets for parent in p.parents())
        except psutil.Error:
            continue
        if ours:
            pids.append(p.info["pid"])
    return pids


def test_killed_worker_recovers_from_checkpoint_then_resume(ray_head, s3_server, s3_bucket, tmp_path):
    """Checkpoints in S3: a killed worker restarts from the latest one, and --resume goes on."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    env = job_env({"RAY_ADDRESS": ray_head["gcs"]})
    base = [sys.executable, "jobs/train_wcdgan.py", "--storage", f"s3://{s3_bucket}/ray",
            "--endpoint-url", s3_server, "--workdir", str(tmp_path / "work"), "--workers", "2",
            "--name", "killme", *TINY, "train.val_every=4", "data.patch=32"]

    def checkpoints_in_s3() -> int:
        listed = s3.list_objects_v2(Bucket=s3_bucket, Prefix="ray/killme/").get("Contents", [])
        return sum(o["Key"].endswith("/generator.safetensors") for o in listed)

    started = time.time()
    proc = subprocess.Popen(base + ["--steps", "32"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    killed = None
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        # Three checkpoints on disk: the first is surely registered with the controller
        # (each report is a barrier, but Train V2's controller registers reports as it polls,
        # and under load one CI run saw a restart from 0 when only two existed), so a
        # restart must resume from step >= 4.
        if checkpoints_in_s3() >= 3:
            pids = _train_worker_pids(started, ray_head["gcs"])
            if pids:
                killed = pids[-1]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.5)
    out, _ = proc.communicate(timeout=600)
    assert killed is not None, f"no training worker found to kill:\n{out[-4000:]}"
    assert proc.returncode == 0, out[-6000:]
    summary = summary_from(out)
    assert summary["steps"] == 32
    assert summary["resumed_from_step"] >= 4, (summary, out[-3000:])  # restarted from a checkpoint, not from 0

    again = subprocess.run(base + ["--resume", "killme", "--steps", "36"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    resumed = summary_from(again.stdout)
    assert resumed["steps"] == 36 and resumed["resumed_from_step"] == 32
    assert resumed["mlflow_run_id"] == summary["mlflow_run_id"]
    assert resumed["best_checkpoint"].startswith(f"s3://{s3_bucket}/ray/killme/checkpoint_")


def test_local_defaults_demo_path(tmp_path):
    """No cluster, no data, no MLflow server: local Ray, embedded shards, sqlite MLflow (the
    `make demo` path). While it runs, every new listener is on loopback; best-2 retention by
    validation PSNR keeps the 2 best checkpoints plus the latest."""
    proc = subprocess.Popen([sys.executable, "jobs/train_wcdgan.py", "--workdir", str(tmp_path / "w"),
                             "--workers", "2", "--steps", "4", *TINY, "train.val_every=1",
                             "ray.keep_checkpoints=2", "--name", "local-demo", "train.batch_threads=2",
                             "--score-sets", str(tmp_path / "w" / "demo_shards_v2"),
                             "mlflow.alias=champion"],
                            cwd=ROOT, env=job_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    seen = set()
    while proc.poll() is None:  # sample the local Ray's listeners while it lives
        seen |= listening()
        time.sleep(0.5)
    stdout = proc.stdout.read()
    assert proc.returncode == 0, stdout[-6000:]
    new = seen - BASELINE_LISTENERS
    assert len(new) >= 3, f"expected the local Ray (GCS, raylet, dashboard...) to listen: {new}"
    bad = sorted((ip, port) for ip, port in new if ip not in LOOPBACK)
    assert not bad, f"the local Ray path listens beyond loopback: {bad}"
    summary = summary_from(stdout)
    assert summary["mlflow_tracking_uri"].startswith("sqlite:///")
    assert (tmp_path / "w" / "mlflow.db").exists()
    grids = list((tmp_path / "w" / "mlartifacts").rglob("grid_step_00000004.png"))
    assert grids, "validation image grid not logged"
    assert Path(summary["best_checkpoint"]).is_dir()

    # retention: the kept checkpoints are the 2 best by the val_psnr the run reported, + the latest
    from mlflow import MlflowClient

    history = MlflowClient(summary["mlflow_tracking_uri"]).get_metric_history(summary["mlflow_run_id"], "val_psnr")
    psnr = {m.step: m.value for m in history}
    assert sorted(psnr) == [1, 2, 3, 4]
    best_two = sorted(psnr, key=lambda s: psnr[s], reverse=True)[:2]
    kept = sorted(int(p.name.split("_")[1]) for p in (tmp_path / "w" / "ray_results" / "local-demo").glob("checkpoint_*")
                  if p.is_dir())
    assert kept == sorted(set(best_two) | {4}), (kept, psnr)
    assert summary["best_checkpoint"].endswith(f"checkpoint_{best_two[0]:08d}")

    # the two whole validation photos, scored after training beside the degraded input
    whole = summary["whole_photos"]
    assert whole["images"] == 2 and whole["baseline"] == "input" and whole["protocol"] == "rgb"
    for key in ("psnr", "psnr_y"):
        assert whole[f"gain_{key}"] == pytest.approx(whole["model"][key] - whole["input"][key])
    assert 20 < whole["input"]["psnr"] < 40 and summary["train_wall_s"] > 0
    # and per set (one set here: its gains are the whole gains)
    (one_set,) = whole["per_set"].values()
    assert one_set["images"] == 2
    assert one_set["gain_psnr_y"] == pytest.approx(whole["gain_psnr_y"])
    assert one_set["gain_psnr"] == pytest.approx(whole["gain_psnr"])
    # every core is used: the workers share the machine's CPUs, one torch thread per CPU
    params = MlflowClient(summary["mlflow_tracking_uri"]).get_run(summary["mlflow_run_id"]).data.params
    cpus = max(1, (os.cpu_count() or 1) // 2)
    assert (float(params["resolved_cpus_per_worker"]), int(params["resolved_threads_per_worker"])) == (cpus, cpus)
    assert f"2 worker(s) x {cpus} torch thread(s)" in stdout
    # DDP workers step their batch whole, whatever train.batch_threads asks (a split batch's
    # two backward passes would each start DDP's all-reduce)
    assert params["train.batch_threads"] == "2" and params["resolved_batch_threads"] == "1"
    assert "batch split over" not in stdout
    # mlflow.alias (the demo preset's champion): the registered version carries it
    champion = MlflowClient(summary["mlflow_tracking_uri"]).get_model_version_by_alias(
        summary["registered_model"], "champion")
    assert summary["registered_alias"] == "champion"
    assert str(champion.version) == str(summary["registered_version"]) and champion.run_id == summary["mlflow_run_id"]


def test_nothing_listens_beyond_loopback(ray_head, mlflow_server, s3_server):
    """Against the listeners before any test server started (conftest.BASELINE_LISTENERS)."""
    new = listening() - BASELINE_LISTENERS
    s3_port = int(s3_server.rsplit(":", 1)[1])
    mlflow_port = int(mlflow_server["url"].rsplit(":", 1)[1])
    gcs_port = int(ray_head["gcs"].rsplit(":", 1)[1])
    ports = {port for _, port in new}
    assert {s3_port, mlflow_port, gcs_port} <= ports, (new, s3_port, mlflow_port, gcs_port)
    bad = sorted((ip, port) for ip, port in new if ip not in LOOPBACK)
    assert not bad, f"listening beyond loopback: {bad}"


FAMILY_JOBS = {
    "dagan": ("dagan_cpu.yaml", ["model.features=8", "model.modules=1", "model.d_features=8",
                                 "data.patch=32", "data.val_crop=32"]),
    "dequantizer": ("dequantizer_cpu.yaml", ["data.patch=32", "data.val_crop=32", "model.res_blocks=1",
                                             "train.ddp_compression=bf16"]),
    "facesr": ("facesr_cnn_cpu.yaml", ["model.nf=8", "model.n_blocks=1", "model.prior_nf=8",
                                       "model.prior_depth=2"]),
    "pan": ("pan_edges_cpu.yaml", []),
}


@pytest.mark.parametrize("family", sorted(FAMILY_JOBS))
def test_every_family_job_through_ray_job_submit(family, ray_head, tmp_path, demo_shards):
    """The other four families' thin jobs run under `ray job submit` exactly like WCDGAN, on 2
    DDP workers (the dequantizer's gradients all-reduced in bf16), and the registered
    generator loads back and restores an image of its task's size. (tests/test_families_ray.py
    trains the other presets of each family in process.)"""
    import torch

    from raygan.platform.restorer import load_generator

    config, extra = FAMILY_JOBS[family]
    data = demo_shards
    if family == "facesr":
        from raygan.datasets.faces import make_synthetic_celebamask, write_face_shards

        make_synthetic_celebamask(str(tmp_path / "celeba"), 6, image_size=128, mask_size=128)
        data = str(tmp_path / "faces")
        write_face_shards(str(tmp_path / "celeba"), data, val_last=2, parallel="none", progress=False)
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--working-dir", str(ROOT), "--", "python", f"jobs/train_{family}.py",
           "--config", f"models/configs/{config}", "--data", data, "--workdir", str(tmp_path / "work"),
           "--storage", str(tmp_path / "ray"), "--workers", "2", "--steps", "2",
           "train.val_every=2", "train.pretrain_steps=1", "data.batch=2", "data.loader_workers=0",
           "data.val_max_images=2", "train.perceptual_weights=random", "train.lpips_weights=off", *extra]
    job = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, (job.stdout + job.stderr)[-6000:]
    summary = summary_from(job.stdout)
    assert summary["steps"] == 2 and summary["registered_model"].startswith(f"raygan-{family}")
    assert Path(summary["best_checkpoint"]).is_dir()
    model, config = load_generator(f"models:/{summary['registered_model']}/{summary['registered_version']}",
                                   summary["mlflow_tracking_uri"])
    assert config["family"] == family
    if family == "dequantizer":
        assert config["train"]["ddp_compression"] == "bf16"
    scale = config["data"]["scale"] if config["data"]["task"] in ("sr", "face_sr") else 1
    size = config["data"]["patch"] // scale
    with torch.no_grad():
        y = model(torch.rand(1, config["data"]["channels"], size, size))
    assert y.shape == (1, config["data"]["channels"], size * scale, size * scale)


def test_submitted_job_outputs_outlive_the_job(ray_head, tmp_path, demo_shards):
    """No --workdir, --storage or MLFLOW_TRACKING_URI: a submitted job trains into $RAYGAN_HOME
    (~/.raygan when unset), not into Ray's temporary working-dir copy, and says where."""
    home = (tmp_path / "home").resolve()
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--working-dir", str(ROOT), "--runtime-env-json", json.dumps({"env_vars": {"RAYGAN_HOME": str(home)}}),
           "--", "python", "jobs/train_wcdgan.py", "--data", demo_shards, "--workers", "1",
           "--steps", "2", "--name", "outlives", "train.val_every=2", *TINY, "train.batch_threads=2", "data.batch=4"]
    job = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, (job.stdout + job.stderr)[-6000:]
    summary = summary_from(job.stdout)
    assert f"raygan: submitted Ray job; workdir {home} (the default" in job.stdout
    # a lone worker with the head's 4 CPUs splits each step's batch over 2 threads
    assert "1 worker(s) x 4 torch thread(s), each step's batch split over 2 threads" in job.stdout
    assert f"raygan: checkpoints -> {home / 'ray_results' / 'outlives'}, MLflow -> sqlite:///{home / 'mlflow.db'}" in job.stdout
    best = Path(summary["best_checkpoint"])
    assert best.parent == home / "ray_results" / "outlives" and (best / "generator.safetensors").is_file()
    assert summary["mlflow_tracking_uri"] == f"sqlite:///{home / 'mlflow.db'}"
    assert (home / "mlflow.db").is_file() and (home / "runs" / "latest-wcdgan.txt").read_text() == "outlives"


def test_submitted_job_refuses_storage_inside_its_temporary_copy(ray_head, tmp_path, demo_shards):
    """A relative --storage in a submitted job would land in the temporary copy: refused before
    anything is created, with one line naming the ways out."""
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--working-dir", str(ROOT), "--", "python", "jobs/train_wcdgan.py", "--data", demo_shards,
           "--workdir", str(tmp_path / "w"), "--storage", "ray_results", "--steps", "2", *TINY]
    job = subprocess.run(cmd, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=300)
    out = job.stdout + job.stderr
    assert job.returncode != 0 and "exit code 2" in out, out[-6000:]
    assert "error: --storage ray_results is inside Ray's temporary copy of --working-dir (" in out
    assert "runtime_resources" in out and "MLFLOW_TRACKING_URI" in out
    assert not (tmp_path / "w").exists()
