"""Storage outages on real parts: moto's S3 server over HTTP behind a fault-injecting TCP
proxy (tests/faultproxy.py). An outage is retried and named, never counted as bad data."""
import re
import threading
import time

import pytest
from faultproxy import FaultProxy

from raygan.platform.core.counters import PROCESS, Counters
from raygan.datasets import pipeline as pl
from raygan.datasets.shards import write_shards
from raygan.platform.core import storage
from raygan.platform.core.config import StorageConfig, load_config
from raygan.platform.core.errors import StorageUnavailable
from raygan.platform.trainer import run_loop

TINY = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2", "train.perceptual_weights=random",
        "train.lpips_weights=off", "loss.perceptual=0", "data.patch=24", "data.batch=2",
        "data.val_crop=32", "data.val_max_images=2", "data.shuffle_buffer=2", "data.loader_workers=0",
        "train.pretrain_steps=2", "train.log_every=5", "ray.workers=1"]


@pytest.fixture
def proxied_shards(s3_server, s3_bucket, s3_storage_cfg, image_folder):
    """Shards in moto's S3 (written directly) and a proxy in front of the server."""
    dst = f"s3://{s3_bucket}/shards"
    write_shards([image_folder], dst, shard_size=2, val_fraction=0.2, parallel="none", progress=False,
                 storage_cfg=s3_storage_cfg)
    proxy = FaultProxy("127.0.0.1", int(s3_server.rsplit(":", 1)[1])).start()
    yield dst, proxy
    proxy.stop()


def _cfg(proxy, dst, *extra):
    return load_config("wcdgan_cpu_demo.yaml", TINY + [
        f"data.train={dst}/train", f"data.val={dst}/val", f"storage.endpoint_url={proxy.url}",
        "storage.max_attempts=1", "storage.connect_timeout_s=1", "storage.read_timeout_s=2",
        "storage.retry_max_s=2", *extra])


def _cut_after(proxy, mode, start_s, length_s):
    def run():
        time.sleep(start_s)
        proxy.cut(mode)
        time.sleep(length_s)
        proxy.restore()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.slow
def test_training_survives_a_30s_cut_with_zero_skipped_records(proxied_shards, tmp_path, capfd):
    dst, proxy = proxied_shards
    # the fetch thread off: with data.prefetch_records it reads far enough ahead of a 40-step
    # run to finish training on records fetched before the cut, and only validation would wait
    cfg = _cfg(proxy, dst, "train.steps=40", "train.val_every=40", f"workdir={tmp_path}",
               "storage.outage_budget_s=120", "data.prefetch_records=0")
    plan = pl.resolve_data(cfg.data, cfg.storage, cfg.workdir)  # resolved before the cut

    class CutAtStep10:  # the run's logger: cuts the storage for 30 s once step 10 is logged
        cut = cut_at = None

        def metrics(self, values, step):
            if step >= 10 and self.cut is None:
                self.cut_at = time.monotonic()
                self.cut = _cut_after(proxy, "refuse", 0.0, 30.0)

        def image(self, *args):
            pass

    logger = CutAtStep10()
    metrics = run_loop(cfg, plan=plan, checkpoint_root=str(tmp_path / "ckpt"), logger=logger)
    finished = time.monotonic()  # before joining the cut's thread, which sleeps the 30 s itself
    assert logger.cut is not None
    # it waited the outage out instead of skipping: the run ended after the storage was back
    assert finished - logger.cut_at >= 30, f"the run ended {finished - logger.cut_at:.1f} s into a 30 s cut"
    logger.cut.join(10)
    assert metrics["step"] == 40
    assert metrics["skipped_records"] == 0  # the outage is not bad data
    assert metrics["storage_retries"] > 0 and metrics["storage_wait_s"] >= 20
    err = capfd.readouterr().err
    assert f"storage retry 1 for reading {dst}/train/" in err and proxy.url in err


@pytest.mark.parametrize("mode", ["refuse", "stall"])
def test_an_outage_longer_than_the_budget_names_the_endpoint(proxied_shards, tmp_path, mode):
    dst, proxy = proxied_shards
    cfg = _cfg(proxy, dst, "train.steps=40", f"workdir={tmp_path}", "storage.outage_budget_s=3")
    plan = pl.resolve_data(cfg.data, cfg.storage, cfg.workdir)
    proxy.cut(mode)
    started = time.time()
    with pytest.raises(StorageUnavailable, match=rf"storage unreachable for \d+ s: {proxy.url} \(reading {dst}/train/"):
        run_loop(cfg, plan=plan, checkpoint_root=str(tmp_path / "ckpt"))
    assert time.time() - started < 30  # bounded: the budget plus one timed-out try


def test_a_break_mid_shard_resumes_at_the_record_by_a_ranged_read(proxied_shards, s3_bucket):
    """The proxy resets the connection while the shard's body streams, inside its last
    record: the reader re-opens the S3 object from the byte where that record starts (a
    Range request, seen at the proxy), and yields every record once."""
    import io
    import tarfile

    dst, proxy = proxied_shards
    cfg = StorageConfig(endpoint_url=proxy.url, max_attempts=1, retry_max_s=0.2)
    shard = pl.ShardSet.open(dst, "train", cfg).shards[0]
    expected = [s["__key__"] for s in pl.iter_shard(shard, cfg)]
    whole = storage.read_bytes(shard, cfg)
    with tarfile.open(fileobj=io.BytesIO(whole)) as tar:
        members = tar.getmembers()
    last = members[-1].name.split(".")[0]
    resume = min(m.offset for m in members if m.name.split(".")[0] == last)
    get = f"GET /{s3_bucket}/{shard.split('/', 3)[3]} ".encode()
    proxy.requests.clear()
    proxy.break_response(get, members[-1].offset_data + 10)  # 10 bytes into the last file
    stats = Counters()
    got = [s["__key__"] for s in pl.iter_shard(shard, cfg, counters=stats)]
    assert proxy.broke.is_set(), f"no GET of the shard broke: {proxy.requests}"
    assert got == expected and stats["storage_retries"] == 1
    gets = [r for r in proxy.requests if r.startswith(get)]
    ranges = [re.search(rb"(?im)^range:[ \t]*(\S+)", r) for r in gets]
    assert [m.group(1).decode() if m else None for m in ranges] == [None, f"bytes={resume}-"], gets
    assert resume > 0 and storage.open_stream(shard, cfg, resume).read() == whole[resume:]


def _train_wcdgan(endpoint, bucket, shards, workdir, name, *extra):
    """A 1-worker, 8-step WCDGAN job (local Ray) with checkpoints every 2 steps in
    s3://bucket/ray/<name> through ``endpoint``."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import job_env

    return subprocess.run(
        [sys.executable, "jobs/train_wcdgan.py", "--data", shards, "--storage", f"s3://{bucket}/ray",
         "--endpoint-url", endpoint, "--workdir", str(workdir), "--workers", "1", "--steps", "8",
         "--name", name, *TINY, "train.val_every=2", "storage.max_attempts=1",
         "ray.keep_checkpoints=8", *extra],
        cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=400,
        # Ray's controller records a report (the run state a resume starts from) when it
        # next polls the workers: poll often, so a checkpoint is on record sooner
        env=job_env({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}))


def _checkpoint_loads(s3_server, bucket, name, step) -> bool:
    from raygan.platform.checkpoint import load_weights, read_meta
    from raygan.platform.tracking import fetch_checkpoint

    local = fetch_checkpoint(f"s3://{bucket}/ray/{name}/checkpoint_{step:08d}", None,
                             StorageConfig(endpoint_url=s3_server))
    return read_meta(local)["step"] == step and "generator" in load_weights(local)


@pytest.mark.slow
def test_a_checkpoint_upload_cut_mid_write_is_retried_in_place(s3_server, s3_bucket, demo_shards, tmp_path):
    """Ray Train checkpoints in S3 through the proxy; the connection is cut for 6 s as
    checkpoint 4 starts uploading. The upload is retried (and logged) until the storage is
    back; the run never restarts, and every checkpoint it kept is complete and loads."""
    import json

    proxy = FaultProxy("127.0.0.1", int(s3_server.rsplit(":", 1)[1])).start()
    proxy.cut_when(b"checkpoint_00000004/", "refuse", 6.0)
    try:
        out = _train_wcdgan(proxy.url, s3_bucket, demo_shards, tmp_path / "w", "cut",
                            "storage.outage_budget_s=60", "storage.retry_max_s=2",
                            "storage.connect_timeout_s=2")
    finally:
        proxy.stop()
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    assert proxy.triggered.is_set(), "the cut never fired"
    assert re.search(r"storage retry 1 for \w+ \S*checkpoint_00000004", log), log[-6000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 8 and summary["skipped_records"] == 0
    assert summary["resumed_from_step"] == 0, "the upload should have been retried in place"
    assert summary["storage_retries"] >= 1 and summary["storage_wait_s"] > 0
    assert all(_checkpoint_loads(s3_server, s3_bucket, "cut", step) for step in (2, 4, 6, 8))


def test_an_upload_over_the_budget_leaves_nothing_half_written(s3_server, s3_bucket):
    """Ray's storage layer (storage.ray_storage) through the proxy: an object written before
    the cut stays intact; a write during a cut longer than the budget fails naming the outage
    and leaves no object behind (uploads happen whole, on close); after the cut it works."""
    import boto3

    proxy = FaultProxy("127.0.0.1", int(s3_server.rsplit(":", 1)[1])).start()
    try:
        cfg = StorageConfig(endpoint_url=proxy.url, outage_budget_s=2, retry_max_s=0.5, connect_timeout_s=1)
        path, fs = storage.ray_storage(f"s3://{s3_bucket}/ray", cfg)
        with fs.open_output_stream(f"{path}/checkpoint_00000002/generator.safetensors") as f:
            f.write(b"complete")
        proxy.cut("refuse")
        started = time.time()
        with pytest.raises(Exception, match=rf"storage unreachable for \d+ s: {proxy.url} \(uploading checkpoint_00000004/generator"):
            with fs.open_output_stream(f"{path}/checkpoint_00000004/generator.safetensors") as f:
                f.write(b"x" * 100_000)
        assert time.time() - started < 30
        proxy.restore()
        s3 = boto3.client("s3", endpoint_url=s3_server)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="ray/").get("Contents", [])]
        assert keys == ["ray/checkpoint_00000002/generator.safetensors"]
        with fs.open_input_stream(f"{path}/checkpoint_00000002/generator.safetensors") as f:
            assert f.read() == b"complete"
    finally:
        proxy.stop()


def test_an_mlflow_artifact_upload_waits_out_a_cut(s3_server, s3_bucket, tmp_path, monkeypatch, capfd):
    """MLflow artifacts in S3 through the proxy: a log call during a 5 s cut is retried
    (MLflow's own S3 client set to one attempt) and lands whole once the storage is back."""
    import boto3
    from mlflow import MlflowClient

    from raygan.platform.tracking import RunLogger

    proxy = FaultProxy("127.0.0.1", int(s3_server.rsplit(":", 1)[1])).start()
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    try:
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        client = MlflowClient(uri)
        exp = client.create_experiment("faults", artifact_location=f"s3://{s3_bucket}/mlflow")
        run = client.create_run(exp)
        before = PROCESS.copy()  # the logger's retries count in the process's counters
        logger = RunLogger(uri, run.info.run_id, StorageConfig(outage_budget_s=60, retry_max_s=1))
        proxy.cut("refuse")
        threading.Timer(5.0, proxy.restore).start()
        started = time.time()
        logger.text('{"done": true}', "summary.json")
        assert time.time() - started >= 4 and PROCESS.since(before)["storage_retries"] >= 1
        assert "storage retry 1 for uploading summary.json at MLflow sqlite" in capfd.readouterr().err
        key = f"mlflow/{run.info.run_id}/artifacts/summary.json"
        body = boto3.client("s3", endpoint_url=s3_server).get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        assert body == b'{"done": true}'
    finally:
        proxy.stop()


@pytest.mark.slow
def test_a_checkpoint_upload_cut_over_the_budget_then_resume(s3_server, s3_bucket, demo_shards, tmp_path):
    """The cut outlasts the budget: the run stops naming the outage (no restarts allowed
    here, so the outcome does not depend on timing), checkpoint 2 still loads, and --resume
    finishes the run from it, whether or not Ray's run record lists it."""
    import json

    def train(endpoint, *extra):
        return _train_wcdgan(endpoint, s3_bucket, demo_shards, tmp_path / "w", "over",
                             "storage.outage_budget_s=2", "storage.retry_max_s=0.5",
                             "storage.connect_timeout_s=1", "ray.max_failures=0", *extra)

    proxy = FaultProxy("127.0.0.1", int(s3_server.rsplit(":", 1)[1])).start()
    proxy.cut_when(b"checkpoint_00000004/", "refuse", 60.0)
    try:
        out = train(proxy.url)
    finally:
        proxy.stop()
    log = out.stdout + out.stderr
    (tmp_path / "train.log").write_text(log)
    assert proxy.triggered.is_set(), "the cut never fired"
    assert out.returncode != 0
    # the first storage call of the upload that runs out of budget is named (Ray checks a
    # marker file, creates the folder, then copies the files)
    assert re.search(rf"StorageUnavailable: storage unreachable for \d+ s: {proxy.url} \(\w+ ", log), log[-6000:]
    assert _checkpoint_loads(s3_server, s3_bucket, "over", 2)
    # Ray's own run record may not list checkpoint 2 (its controller writes it when it next
    # polls the workers, and the outage can come first, as seen in CI): drop it, so the
    # resume has to find the folder itself
    import boto3

    boto3.client("s3", endpoint_url=s3_server).delete_object(
        Bucket=s3_bucket, Key="ray/over/checkpoint_manager_snapshot.json")
    again = train(s3_server, "--resume", "over")
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 8, (again.stdout + again.stderr)[-6000:]
    assert summary["resumed_from_step"] == 2, (again.stdout + again.stderr)[-6000:]
    assert "resuming from checkpoint_00000002 in s3://" in again.stdout + again.stderr
