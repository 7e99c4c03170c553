"""Two Ray nodes on this one machine, as a real cluster would have them.

The head runs on 127.0.0.3 and a worker node on 127.0.0.2, each a separate `ray start` with its
own raylet and its own temp dir, token auth on, multi-node mode
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``; a head on 127.0.0.1 would be replaced by the host's
address). One CPU per node, so a 2-worker run can only fit with one worker on each.

What it pins (issue 18):
- a submitted job runs the *submitted* raygan on the driver and on the workers of both nodes,
  whatever raygan the nodes have installed (the test's installed raygan lacks a marker the
  submitted copy has), and says which code each rank runs;
- with shipping off, the installed raygan differs from the submitted one, and the run refuses
  before training with one line naming the node;
- ``ray.placement=spread`` puts the 2 DDP ranks on different nodes, and they end with the
  same weights; checkpoints go to S3 (moto over HTTP) and the run to an `mlflow server`.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import BIN, free_port, job_env

from raygan.platform import submitted_code

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HEAD, WORKER = "127.0.0.3", "127.0.0.2"
TINY = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2",
        "train.perceptual_weights=random", "train.lpips_weights=off", "data.patch=24",
        "data.batch=2", "data.val_crop=32", "data.val_max_images=2", "data.shuffle_buffer=8",
        "data.loader_workers=0", "train.pretrain_steps=2", "train.log_every=2",
        "ray.cpus_per_worker=1", "ray.threads_per_worker=1"]


def cluster_env(extra=None) -> dict:
    return job_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", **(extra or {})})


def alive_nodes(gcs: str) -> int:
    probe = ("import ray, json; ray.init(address=%r, logging_level='ERROR'); "
             "print(json.dumps(sum(1 for n in ray.nodes() if n['Alive'])))" % gcs)
    out = subprocess.run([str(BIN / "python"), "-c", probe], env=cluster_env(), capture_output=True,
                         text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else -1


@pytest.fixture(scope="module")
def two_nodes():
    gcs_port, dash_port = free_port(), free_port()
    # short temp dirs: Ray's socket paths live under them (a unix socket path has ~107 bytes)
    head_tmp = tempfile.mkdtemp(prefix="rgh", dir="/tmp")
    node_tmp = tempfile.mkdtemp(prefix="rgw", dir="/tmp")
    env = cluster_env()
    gcs = f"{HEAD}:{gcs_port}"
    try:
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--node-ip-address={HEAD}",
                        f"--port={gcs_port}", f"--dashboard-host={HEAD}", f"--dashboard-port={dash_port}",
                        "--num-cpus=1", f"--temp-dir={head_tmp}", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([str(BIN / "ray"), "start", f"--address={gcs}", f"--node-ip-address={WORKER}",
                        "--num-cpus=1", f"--temp-dir={node_tmp}", "--disable-usage-stats"],
                       env=env, check=True, capture_output=True, timeout=180)
        deadline = time.time() + 60
        while alive_nodes(gcs) != 2:
            assert time.time() < deadline, "the second node did not join"
            time.sleep(2)
        yield {"gcs": gcs, "dashboard": f"http://{HEAD}:{dash_port}"}
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=180)
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(node_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def submitted_checkout(tmp_path_factory):
    """A copy of this checkout whose WCDGAN module prints a marker when it is imported: the
    raygan installed in the test environment does not have it."""
    dst = tmp_path_factory.mktemp("submitted") / "checkout"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".raygan", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    marker = f"RAYGAN-SUBMITTED-{uuid.uuid4().hex[:8]}"
    with open(dst / "models" / "wcdgan.py", "a") as f:
        f.write(f"\nprint({marker!r}, 'pid', __import__('os').getpid(), flush=True)\n")
    return {"path": dst, "marker": marker, "code": submitted_code.fingerprint(dst)}


def submit(cluster, checkout, tmp_path, *args, timeout=600):
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"],
           "--working-dir", str(checkout), "--", "python", "jobs/train_wcdgan.py", *args]
    deadline = time.time() + 90
    while True:
        job = subprocess.run(cmd, cwd=tmp_path, env=cluster_env(), capture_output=True, text=True,
                             timeout=timeout)
        # a new head's job agent takes a while to register; the submission is refused until then
        if "No available agent to submit job" not in job.stderr or time.time() > deadline:
            return job
        time.sleep(3)


def test_submitted_code_runs_on_every_node_spread_ddp_ends_equal(
        two_nodes, submitted_checkout, demo_shards, s3_server, s3_bucket, mlflow_server, tmp_path):
    installed = submitted_code.fingerprint(submitted_code.package_root())
    assert installed != submitted_checkout["code"]  # the cluster's raygan lacks the change
    job = submit(two_nodes, submitted_checkout["path"], tmp_path,
                 "--data", demo_shards, "--storage", f"s3://{s3_bucket}/ray", "--endpoint-url", s3_server,
                 "--workers", "2", "--steps", "4", "--name", "two-nodes", "--workdir", str(tmp_path / "work"),
                 f"mlflow.tracking_uri={mlflow_server['url']}", "ray.placement=spread",
                 "train.val_every=4", *TINY)
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-6000:]
    code = submitted_checkout["code"]
    # before training: every node imports the submitted code, shipped as py_modules
    assert re.search(rf"raygan: code {code} from .* \(shipped as py_modules\); 2 node\(s\) import it: "
                     rf"{re.escape(WORKER)}, {re.escape(HEAD)}", out), out[-6000:]
    ranks = dict(re.findall(rf"raygan: rank (\d) on node ([\d.]+) runs code {code} from ", out))
    assert ranks.keys() == {"0", "1"} and set(ranks.values()) == {HEAD, WORKER}, out[-6000:]
    assert not re.search(r"runs code (?!%s)" % code, out)
    # the marker: printed by the driver and by the worker processes (not only on one node)
    assert out.count(submitted_checkout["marker"]) >= 3, out[-6000:]
    digests = dict(re.findall(r"raygan: rank (\d) ends at step 4 with weights ([0-9a-f]{12})", out))
    assert digests.keys() == {"0", "1"} and len(set(digests.values())) == 1, digests
    summary = next(json.loads(line) for line in reversed(job.stdout.splitlines())
                   if line.startswith("{") and "ray_run_name" in line)
    assert summary["steps"] == 4 and summary["best_checkpoint"].startswith(f"s3://{s3_bucket}/ray/two-nodes/")
    assert summary["mlflow_tracking_uri"] == mlflow_server["url"]


def test_a_node_with_other_code_is_refused_before_training(two_nodes, submitted_checkout, demo_shards,
                                                           tmp_path):
    job = submit(two_nodes, submitted_checkout["path"], tmp_path,
                 "--data", demo_shards, "--storage", str(tmp_path / "ray"), "--workers", "2", "--steps", "2",
                 "--workdir", str(tmp_path / "work"), "ray.shared_storage=true", "ray.ship_code=false", *TINY)
    out = job.stdout + job.stderr
    assert job.returncode != 0
    line = next((ln for ln in out.splitlines() if "would run raygan" in ln), "")
    assert line.startswith("error: node ") and submitted_checkout["code"] in line, out[-4000:]
    assert submitted_code.fingerprint(submitted_code.package_root()) in line
    assert "rank 0 on node" not in out  # refused before any worker trained
