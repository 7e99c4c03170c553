"""Shared test fixtures: a real S3 (moto server on 127.0.0.1), buckets, image folders."""

import os

import raygan  # noqa: E402,F401  (its ENV_DEFAULTS apply before Ray or MLflow load)
# The tests are an entry point: register the built-in families and data tasks.
import raygan.datasets.tasks  # noqa: E402,F401
import raygan.models  # noqa: E402,F401

import logging  # noqa: E402
import secrets  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def listening() -> set:
    """(ip, port) of every listening TCP socket on this machine."""
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("inet") if c.status == "LISTEN"}


#: taken when pytest loads this file, before any test server (S3, Ray, MLflow) starts
BASELINE_LISTENERS = listening()
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- Ray

BIN = Path(sys.executable).parent
# Ray 2.60 heads require token auth: one token per test session, from the environment only.
RAY_TOKEN = secrets.token_hex(32)


def job_env(extra=None) -> dict:
    """The environment of a job script or Ray CLI run by a test (token auth, loopback)."""
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0",
               MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(extra or {})
    return env


@contextmanager
def ray_head_on_loopback(num_cpus: int):
    """A Ray head (`ray start --head`) on 127.0.0.1 with ``num_cpus``; stopped on exit."""
    gcs, dash = free_port(), free_port()
    env = job_env()
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                    f"--num-cpus={num_cpus}", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
    try:
        yield {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}"}
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


# What a cluster's CPUs are held by, printed when a test waits for them in vain.
_IDLE_PROBE = """
import json, ray
from ray.util.state import list_actors, list_placement_groups
ray.init(address=%r, logging_level="ERROR")
total, free = ray.cluster_resources().get("CPU", 0), ray.available_resources().get("CPU", 0)
actors = list_actors(filters=[("state", "!=", "DEAD")], detail=True)
held = [f"actor {a.class_name} {a.state}" for a in actors]
held += [f"placement group {p.placement_group_id[:8]} {p.state}"
         for p in list_placement_groups(filters=[("state", "!=", "REMOVED")])]
by_jobs = [a.class_name for a in actors if not a.is_detached]
print("cluster cpus:", json.dumps({"total": total, "free": free, "held": held, "held_by_jobs": by_jobs}))
"""


def probe_cluster(code: str, marker: str, env: dict):
    """Run ``code`` in a fresh driver: ``(what follows marker on its last line starting with it,
    or None when the probe failed; the end of its stderr)``. Ray's own warnings share stdout."""
    import re

    out = subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    found = re.findall(rf"^{re.escape(marker)}(.*)$", out.stdout, re.M)
    return (found[-1] if out.returncode == 0 and found else None), out.stderr[-2000:]


def wait_cluster_idle(gcs: str, timeout: float = 240, orphans_reclaimed: bool = False) -> dict:
    """Wait until every CPU of the cluster at ``gcs`` is free again (a killed driver's actors
    and placement groups are released by Ray asynchronously); fails naming what holds them.
    ``orphans_reclaimed``: only until no non-detached actor is left (placement groups of ended
    jobs are the next attached driver's to remove)."""
    import json

    deadline, last = time.time() + timeout, {}
    while True:
        found, err = probe_cluster(_IDLE_PROBE % gcs, "cluster cpus: ", job_env())
        last = json.loads(found) if found is not None else {"probe failed": err}
        if found is not None and last["free"] >= last["total"]:
            return last
        if found is not None and orphans_reclaimed and not last["held_by_jobs"]:
            return last
        assert time.time() < deadline, f"the cluster's CPUs were not released in {timeout:g} s: {last}"
        time.sleep(3)


@pytest.fixture(scope="module")
def mlflow_server(s3_server, tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (sqlite store, artifacts in moto S3)."""
    import boto3

    bucket = "mlflow-artifacts"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    port = free_port()
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    env = job_env({"MLFLOW_S3_ENDPOINT_URL": s3_server})
    proc = subprocess.Popen([str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}",
                             "--artifacts-destination", f"s3://{bucket}/mlflow", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError("mlflow server did not start")
            time.sleep(1)
    yield {"url": url, "bucket": bucket}
    proc.terminate()
    proc.wait(30)


# ----------------------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto S3 server on 127.0.0.1; sets fake AWS credentials/region in
    os.environ for the session (subprocesses inherit them)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no per-request log lines
    mp = pytest.MonkeyPatch()
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    mp.delenv("AWS_PROFILE", raising=False)
    mp.delenv("AWS_ENDPOINT_URL", raising=False)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        mp.undo()


@pytest.fixture
def s3_storage_cfg(s3_server):
    """A StorageConfig pointing at the moto server, with small timeouts."""
    from raygan.platform.core.config import StorageConfig

    return StorageConfig(endpoint_url=s3_server, max_attempts=2, connect_timeout_s=2.0,
                         read_timeout_s=20.0)


@pytest.fixture
def s3_bucket(s3_server, s3_storage_cfg):
    """Name of a fresh, empty bucket on the moto server."""
    from raygan.platform.core.storage import s3_client

    name = f"raygan-test-{uuid.uuid4().hex[:12]}"
    s3_client(s3_storage_cfg).create_bucket(Bucket=name)
    return name


# ----------------------------------------------------------------------------- images


def write_image(path, arr) -> str:
    """Save a uint8 array (HxW, HxWx3 or HxWx4) with PIL, creating parent folders."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)
    return str(path)


def random_image(rng, h, w, channels=3):
    """Smooth-ish random uint8 image (noise + gradient; JPEG-compressible)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = (yy * 255.0 / max(1, h - 1) + xx * 255.0 / max(1, w - 1)) / 2
    shape = (h, w) if channels == 1 else (h, w, channels)
    noise = rng.normal(0, 40, size=shape)
    img = (base if channels == 1 else base[..., None]) + noise
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """A folder of 12 small RGB PNG/JPEG images (64x72) in two subfolders; returns its path."""
    rng = np.random.default_rng(1234)
    root = tmp_path / "images"
    for i in range(12):
        sub = "a" if i % 2 else "b"
        ext = "png" if i % 3 else "jpg"
        write_image(str(root / sub / f"img{i:02d}.{ext}"), random_image(rng, 64, 72))
    return str(root)


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory):
    """The embedded demo shard set, built once per session; returns its local path."""
    from raygan.datasets.samples import ensure_demo_shards

    return ensure_demo_shards(str(tmp_path_factory.mktemp("demo")))


class ConstD(torch.nn.Module):
    """A 'discriminator' with a fixed logit, for exact loss values."""

    def __init__(self, value: float):
        super().__init__()
        self.value = value

    def forward(self, x):
        return torch.full((x.shape[0], 1), self.value)


def fit_content(family, generator, batch, steps: int = 40, lr: float = 1e-3):
    """Adam on ``family.content_loss`` alone: (first loss, last loss, last logs)."""
    opt = torch.optim.Adam(generator.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        loss, logs = family.content_loss(family.generator_forward(generator, batch), batch)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, loss.item(), logs


def tiny_family(cls, task: str, tiny: dict, model=None, loss=None, channels: int = 3, patch: int = 16):
    """A family built directly (no YAML) with small model settings and a random VGG19."""
    from raygan.platform.core.config import DataConfig

    fam = cls(cls.ModelConfig(**{**tiny, **(model or {})}), cls.LossConfig(**(loss or {})),
              DataConfig(task=task, patch=patch, channels=channels))
    fam.perceptual_weights = "random"
    return fam


#: input sizes every generator must take: even and odd, one and three channels
ANY_SIZE = [pytest.mark.parametrize("channels", [3, 1]),
            pytest.mark.parametrize("size", [(16, 16), (13, 17)])]


def any_size(test):
    for mark in reversed(ANY_SIZE):
        test = mark(test)
    return test


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME: the hub cache that weights="auto" reads (torch.hub.get_dir()
    follows it), for tests that place or miss weight files."""
    import torch

    home = tmp_path / "torch_home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert torch.hub.get_dir() == str(home / "hub")
    return home
