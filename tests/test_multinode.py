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
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import BASELINE_LISTENERS, BIN, LOOPBACK, free_port, job_env, probe_cluster

from raygan.platform.core import submitted_code

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HEAD, WORKER = "127.0.0.3", "127.0.0.2"
TINY = ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
        "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2",
        "train.perceptual_weights=random", "train.lpips_weights=off", "data.patch=24",
        "data.batch=2", "data.val_crop=32", "data.val_max_images=2", "data.shuffle_buffer=8",
        "data.loader_workers=0", "train.pretrain_steps=2", "train.log_every=2",
        "ray.cpus_per_worker=1", "ray.threads_per_worker=1"]


#: the processes Ray 2.60 binds to all interfaces in multi-node mode, with no option to bind
#: them to the node's address (README, Security); every other listener must be on the node's
#: address or loopback
RAY_ALL_INTERFACES = {"gcs_server", "raylet", "dashboard", "dashboard agent", "autoscaler monitor",
                      "core worker"}
NODE_ADDRESSES = {HEAD, WORKER, *LOOPBACK}


def process_kind(pid, parents: bool = True) -> str:
    try:
        proc = psutil.Process(pid)
        name, cmd = proc.name(), " ".join(proc.cmdline())
        ancestors = proc.parents() if parents else []
    except (psutil.Error, OSError):
        return "?"
    for needle, kind in (("gcs_server", "gcs_server"), ("raylet", "raylet"),
                         ("ray/dashboard/dashboard.py", "dashboard"), ("DashboardAgent", "dashboard agent"),
                         ("ray/dashboard/agent.py", "dashboard agent"),
                         ("autoscaler/_private/monitor.py", "autoscaler monitor")):
        if needle in name or needle in cmd:
            return kind
    # every Ray worker process (tasks, actors, the job's driver) runs a core-worker gRPC server
    if name.startswith("ray::") or "jobs/train_" in cmd or "jobs/sweep" in cmd:
        return "core worker" if "Agent" not in name else name
    for parent in ancestors:  # e.g. the dashboard's module subprocesses
        kind = process_kind(parent.pid, parents=False)
        if kind in RAY_ALL_INTERFACES:
            return kind
    return f"{name} ({cmd[:120]})"


def in_cluster(pid, temp_dirs) -> bool:
    """Whether a process belongs to the cluster: it, or a process it descends from (the raylet
    for workers and the job's driver), names one of the nodes' temp dirs on its command line."""
    try:
        proc = psutil.Process(pid)
        chain = [proc, *proc.parents()]
        return any(d in " ".join(p.cmdline()) for p in chain for d in temp_dirs)
    except (psutil.Error, OSError):
        return False


class ListenerSampler(threading.Thread):
    """Every new TCP listener (address, port, process kind) of the cluster's processes seen
    while it runs (not the test's own process, nor what earlier tests left running)."""

    def __init__(self, temp_dirs):
        super().__init__(daemon=True)
        self.seen, self.stop = set(), threading.Event()
        self.train_workers = set()  # (address, port) of Ray Train worker processes
        self.temp_dirs = list(temp_dirs)

    def run(self):
        while not self.stop.is_set():
            for c in psutil.net_connections("inet"):
                if c.status == "LISTEN" and (c.laddr.ip, c.laddr.port) not in BASELINE_LISTENERS \
                        and c.pid != os.getpid() and in_cluster(c.pid, self.temp_dirs):
                    kind = process_kind(c.pid)
                    if kind == "?":  # gone before it could be named: seen again if it lives
                        continue
                    self.seen.add((c.laddr.ip, c.laddr.port, kind))
                    try:
                        if "RayTrainWorker" in psutil.Process(c.pid).name():
                            self.train_workers.add((c.laddr.ip, c.laddr.port))
                    except psutil.Error:
                        pass
            self.stop.wait(0.5)


#: the endpoints' bearer token: in every node's environment from its start, as a cluster's
#: nodes get it from a Secret (it never travels in Ray's runtime env)
SERVE_TOKEN = uuid.uuid4().hex


def cluster_env(extra=None) -> dict:
    # RAY_DEDUP_LOGS=0: Ray folds log lines that differ only in numbers ("rank 0 on node
    # 127.0.0.3" / "rank 1 on node 127.0.0.2") into one; the tests read every rank's line
    return job_env({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAYGAN_SERVE_TOKEN": SERVE_TOKEN,
                    "RAY_DEDUP_LOGS": "0", **(extra or {})})


def alive_nodes(gcs: str) -> int:
    probe = ("import ray, json; ray.init(address=%r, logging_level='ERROR'); "
             "print('alive nodes:', sum(1 for n in ray.nodes() if n['Alive']))" % gcs)
    # Ray's own warnings share stdout ("raylet has lagging heartbeats ..." after a lost node)
    found, _ = probe_cluster(probe, "alive nodes: ", cluster_env())
    return int(found) if found is not None else -1


class TwoNodes:
    """The cluster: ``gcs``, ``dashboard``; the worker node can be killed (every process of
    it) and replaced by a new one on the same address."""

    def __init__(self):
        self.gcs_port, self.dash_port = free_port(), free_port()
        self.gcs, self.dashboard = f"{HEAD}:{self.gcs_port}", f"http://{HEAD}:{self.dash_port}"
        # short temp dirs: Ray's socket paths live under them (a unix socket path has ~107 bytes)
        self.temp_dirs = [tempfile.mkdtemp(prefix="rgh", dir="/tmp")]
        subprocess.run([str(BIN / "ray"), "start", "--head", f"--node-ip-address={HEAD}",
                        f"--port={self.gcs_port}", f"--dashboard-host={HEAD}",
                        f"--dashboard-port={self.dash_port}", "--num-cpus=1",
                        f"--temp-dir={self.temp_dirs[0]}", "--disable-usage-stats"],
                       env=cluster_env(), check=True, capture_output=True, timeout=180)
        self.start_worker()

    def start_worker(self):
        self.worker_tmp = tempfile.mkdtemp(prefix="rgw", dir="/tmp")
        self.temp_dirs.append(self.worker_tmp)
        subprocess.run([str(BIN / "ray"), "start", f"--address={self.gcs}", f"--node-ip-address={WORKER}",
                        "--num-cpus=1", f"--temp-dir={self.worker_tmp}", "--disable-usage-stats"],
                       env=cluster_env(), check=True, capture_output=True, timeout=180)
        self.wait_nodes(2)

    def wait_nodes(self, n: int, timeout: float = 90):
        deadline = time.time() + timeout
        while alive_nodes(self.gcs) != n:
            assert time.time() < deadline, f"the cluster did not reach {n} alive nodes"
            time.sleep(2)

    def kill_worker(self) -> int:
        """SIGKILL every process of the worker node (raylet, agents, workers): a lost machine."""
        victims = set()
        for proc in psutil.process_iter(["cmdline"]):
            if self.worker_tmp in " ".join(proc.info["cmdline"] or []):
                victims.add(proc)
                try:
                    victims.update(proc.children(recursive=True))
                except psutil.Error:
                    pass
        for proc in victims:
            try:
                proc.kill()
            except psutil.Error:
                pass
        return len(victims)

    def stop(self):
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=cluster_env(), capture_output=True,
                       timeout=180)
        for d in self.temp_dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def two_nodes(s3_server):
    # after s3_server: every node (and a replacement node) starts with its AWS credentials
    cluster = TwoNodes()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def submitted_checkout(tmp_path_factory):
    """A copy of this checkout whose WCDGAN module prints a marker when it is imported: the
    raygan installed in the test environment does not have it."""
    dst = tmp_path_factory.mktemp("submitted") / "checkout"
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", ".raygan", ".mutation*", "build", "dist", "*.egg-info", "__pycache__",
        ".pytest_cache"))
    marker = f"RAYGAN-SUBMITTED-{uuid.uuid4().hex[:8]}"
    with open(dst / "models" / "wcdgan.py", "a") as f:
        f.write(f"\nprint({marker!r}, 'pid', __import__('os').getpid(), flush=True)\n")
    return {"path": dst, "marker": marker, "code": submitted_code.fingerprint(dst)}


def submit(cluster, checkout, tmp_path, *args, timeout=600):
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard,
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
    sampler = ListenerSampler(two_nodes.temp_dirs)
    sampler.start()
    try:
        job = submit(two_nodes, submitted_checkout["path"], tmp_path,
                     "--data", demo_shards, "--storage", f"s3://{s3_bucket}/ray", "--endpoint-url", s3_server,
                     "--workers", "2", "--steps", "4", "--name", "two-nodes", "--workdir", str(tmp_path / "work"),
                     f"mlflow.tracking_uri={mlflow_server['url']}", "ray.placement=spread",
                     "train.val_every=4", *TINY)
    finally:
        sampler.stop.set()
        sampler.join()
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

    # listeners: on the nodes' addresses, except the Ray processes that bind all interfaces
    wildcard = {kind for ip, _, kind in sampler.seen if ip in ("0.0.0.0", "::")}
    assert {"gcs_server", "raylet"} <= wildcard <= RAY_ALL_INTERFACES, sampler.seen
    elsewhere = {(ip, port, kind) for ip, port, kind in sampler.seen
                 if ip not in ("0.0.0.0", "::") and ip.removeprefix("::ffff:") not in NODE_ADDRESSES}
    assert not elsewhere, elsewhere
    assert {"gcs_server", "raylet", "core worker", "dashboard agent"} <= wildcard
    # the DDP rendezvous store (rank 0's TCPStore) binds rank 0's node address: a Ray Train
    # worker listens on a node address, not only on the core worker's wildcard gRPC port
    assert {ip for ip, _ in sampler.train_workers} & {HEAD, WORKER}, sampler.train_workers


def test_node_local_storage_is_refused_on_two_nodes(two_nodes, submitted_checkout, demo_shards, tmp_path):
    job = submit(two_nodes, submitted_checkout["path"], tmp_path, "--data", demo_shards,
                 "--storage", str(tmp_path / "ray"), "--workers", "2", "--steps", "2",
                 "--workdir", str(tmp_path / "work"), *TINY)
    out = job.stdout + job.stderr
    assert job.returncode != 0
    errors = sorted({ln for ln in out.splitlines() if ln.startswith("error: ")})  # the CLI echoes the log
    assert len(errors) == 1 and "is a node-local path but the Ray cluster has 2 alive nodes" in errors[0], out[-3000:]


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


def test_a_sweep_runs_its_trials_on_both_nodes(two_nodes, submitted_checkout, demo_shards, s3_server,
                                               s3_bucket, mlflow_server, tmp_path):
    cmd = [str(BIN / "ray"), "job", "submit", "--address", two_nodes.dashboard,
           "--working-dir", str(submitted_checkout["path"]), "--", "python", "jobs/sweep.py",
           "--family", "wcdgan", "--space", "losses", "--trials", "2", "--max-concurrent", "2",
           "--workers-per-trial", "1", "--steps-per-trial", "2", "--reports", "1", "--data", demo_shards,
           "--storage", f"s3://{s3_bucket}/sweeps", "--endpoint-url", s3_server,
           "--workdir", str(tmp_path / "work"), "--name", "two-node-sweep",
           f"mlflow.tracking_uri={mlflow_server['url']}", *TINY]
    try:
        job = subprocess.run(cmd, cwd=tmp_path, env=cluster_env(), capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(((exc.stdout or b"") + (exc.stderr or b"")).decode()[-8000:]) from None
    out = job.stdout + job.stderr
    assert job.returncode == 0, out[-6000:]
    code = submitted_checkout["code"]
    nodes = set(re.findall(rf"raygan: rank 0 on node ([\d.]+) runs code {code} ", out))
    assert nodes == {HEAD, WORKER}, out[-6000:]
    summary = json.loads([ln for ln in job.stdout.splitlines() if ln.startswith('{"sweep"')][-1])
    assert summary["trials"] == 2


def replica_nodes(cluster) -> list:
    """Node addresses of the ALIVE replicas of restore-jpeg (Ray's state API)."""
    def ray_list(*args):
        out = subprocess.run([str(BIN / "ray"), "list", *args, "--address", cluster.dashboard,
                              "--format", "json", "--limit", "1000"],
                             env=cluster_env(), capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout) if out.returncode == 0 else []
    nodes = {n["node_id"]: n["node_ip"] for n in ray_list("nodes")}
    actors = ray_list("actors", "--filter", "state=ALIVE", "--detail")
    return sorted(nodes.get(a.get("node_id"), "?") for a in actors
                  if "restore-jpeg" in (a.get("class_name") or ""))


def two_replica_config(tmp_path, port) -> Path:
    """A Serve config of one tiny JPEG model: two 1-CPU replicas (one per node), the ingress
    and the proxy on the head."""
    import yaml
    from test_serve import TINY as SERVE_TINY, _checkpoint

    from raygan.deploy.serving import load_serve_config

    ckpt = _checkpoint(tmp_path / "model", "wcdgan.yaml", SERVE_TINY, seed=1)
    config = load_serve_config(None, {"jpeg": str(ckpt)}, host=HEAD, port=port)
    for d in config["app"]["deployments"]:
        d.pop("autoscaling_config", None)
        if d["name"] == "restore-jpeg":
            d.update(num_replicas=2, ray_actor_options={"num_cpus": 1})
        else:
            d.update(num_replicas=1, ray_actor_options={"num_cpus": 0})
    doc = {"proxy_location": "HeadOnly", "http_options": config["http"], "applications": [config["app"]]}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(doc))
    return tmp_path / "serve.yaml"


def test_serve_deploy_runs_the_submitted_code_on_both_nodes(two_nodes, submitted_checkout, tmp_path):
    """`serve deploy` takes a file, and its replicas would import the raygan installed on the
    nodes. `raygan serve --write-config` from the submitted checkout publishes that checkout's
    raygan (a folder both nodes mount here; S3 on a real cluster) and pins it in the config:
    the ingress and both replicas, one per node, run the submitted code, which the installed
    raygan is not."""
    import httpx
    import yaml
    from test_serve import photo_png

    port = free_port()
    base = two_replica_config(tmp_path, port)
    written = tmp_path / "deploy.yaml"
    out = subprocess.run([str(BIN / "python"), "jobs/serve.py", "--config", str(base), "--code-uri",
                          str(tmp_path / "code"), "--write-config", str(written)],
                         cwd=submitted_checkout["path"], env=cluster_env(), capture_output=True, text=True,
                         timeout=300)
    code = submitted_checkout["code"]
    assert out.returncode == 0 and f"raygan {code} from file://" in out.stdout, out.stdout + out.stderr
    assert code != submitted_code.fingerprint()  # the test environment's raygan is other code
    app = yaml.safe_load(written.read_text())["applications"][0]
    assert app["runtime_env"]["env_vars"] == {"RAYGAN_CODE": code}
    assert app["runtime_env"]["py_modules"] == [(tmp_path / "code" / f"raygan-{code}.zip").as_uri()]
    url, headers = f"http://{HEAD}:{port}", {"Authorization": f"Bearer {SERVE_TOKEN}"}
    try:
        deploy = subprocess.run([str(BIN / "serve"), "deploy", str(written), "--address", two_nodes.dashboard],
                                env=cluster_env(), capture_output=True, text=True, timeout=180)
        assert deploy.returncode == 0, deploy.stdout + deploy.stderr
        deadline, health = time.time() + 300, None
        while health is None:
            try:
                r = httpx.post(f"{url}/v1/jpeg", content=photo_png(48, 40), headers=headers, timeout=30)
                if r.status_code == 200:
                    health = httpx.get(f"{url}/healthz", timeout=30).json()
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the deployed application did not answer"
            if health is None:
                time.sleep(3)
        assert health["code"] == code  # the ingress
        models = httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["models"]
        assert models[0]["code"] == code  # a replica; each one checked RAYGAN_CODE when it started
        deadline = time.time() + 120
        while replica_nodes(two_nodes) != sorted([HEAD, WORKER]):
            assert time.time() < deadline, replica_nodes(two_nodes)
            time.sleep(3)
    finally:
        subprocess.run([str(BIN / "serve"), "shutdown", "-y", "--address", two_nodes.dashboard],
                       env=cluster_env(), capture_output=True, timeout=120)


def test_serve_replicas_on_both_nodes_survive_a_lost_node(two_nodes, tmp_path):
    """Two replicas, one per node, behind a proxy on the head; the worker node is killed under
    load: no request fails beyond one retry, and Serve puts the replica back on the
    replacement node."""
    import httpx
    from test_serve import photo_png

    port, token = free_port(), SERVE_TOKEN
    config = two_replica_config(tmp_path, port)
    env = cluster_env({"RAY_ADDRESS": two_nodes.gcs})
    server = subprocess.Popen([str(BIN / "python"), "jobs/serve.py", "--config", str(config)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, headers, body = f"http://{HEAD}:{port}", {"Authorization": f"Bearer {token}"}, photo_png(48, 40)
    counts = {"ok": 0, "retried": 0, "failed": 0}
    stop = threading.Event()

    def load():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                for attempt in (0, 1):  # the client's one retry
                    try:
                        r = client.post(f"{url}/v1/jpeg", content=body, headers=headers)
                        if r.status_code == 200:
                            counts["ok" if attempt == 0 else "retried"] += 1
                            break
                    except httpx.HTTPError:
                        pass
                else:
                    counts["failed"] += 1

    try:
        deadline = time.time() + 240
        while True:
            try:
                if httpx.post(f"{url}/v1/jpeg", content=body, headers=headers, timeout=30).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.time() < deadline, server.stdout.read()[-4000:] if server.poll() is not None else "not up"
            time.sleep(2)
        assert replica_nodes(two_nodes) == sorted([HEAD, WORKER])  # one replica on each node
        threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(5)
        before = dict(counts)
        assert two_nodes.kill_worker() >= 3
        time.sleep(15)  # the head's replica alone carries the load
        two_nodes.start_worker()
        deadline = time.time() + 180
        while replica_nodes(two_nodes) != sorted([HEAD, WORKER]):
            assert time.time() < deadline, replica_nodes(two_nodes)
            time.sleep(3)
        time.sleep(5)
        stop.set()
        for t in threads:
            t.join(60)
        assert before["ok"] > 0 and counts["ok"] > before["ok"] + 10, counts
        assert counts["failed"] == 0, counts
    finally:
        stop.set()
        subprocess.run([str(BIN / "serve"), "shutdown", "-y", "--address", two_nodes.dashboard],
                       env=cluster_env(), capture_output=True, timeout=120)
        server.kill()


def test_no_capacity_stops_with_one_line(two_nodes, demo_shards, tmp_path, s3_server, s3_bucket,
                                         mlflow_server):
    """3 one-CPU workers on a 2-CPU cluster: after ray.capacity_wait_s the run stops and says
    what it waited for (it never hangs)."""
    t0 = time.time()
    job = submit(two_nodes, ROOT, tmp_path, "--data", demo_shards, "--storage", f"s3://{s3_bucket}/nocap",
                 "--endpoint-url", s3_server, "--workers", "3", "--steps", "2", "--workdir", str(tmp_path / "w"),
                 f"mlflow.tracking_uri={mlflow_server['url']}", "ray.capacity_wait_s=8", *TINY, timeout=300)
    out = job.stdout + job.stderr
    assert job.returncode != 0 and time.time() - t0 < 240
    errors = sorted({ln for ln in out.splitlines() if ln.startswith("error: ")})
    assert len(errors) == 1 and "no capacity: waited 8 s (ray.capacity_wait_s) for 3 Ray Train worker(s) of 1 CPU" \
        in errors[0], out[-4000:]


def test_a_lost_training_node_is_survived_from_its_last_checkpoint(two_nodes, demo_shards, s3_server, s3_bucket,
                                                               mlflow_server, tmp_path):
    """Every process of the worker node is killed mid-run and a replacement node joins: the
    run goes on from its last complete checkpoint, ends at the same step, in the same MLflow
    run, and names the checkpoint it resumed from.

    Not the elastic path: with ``ray.min_workers=1`` (Ray Train's ``num_workers=(1, 2)``) and
    no replacement node, Ray 2.60's elastic policy restarted with 2 workers (the lost node's
    CPU still counted) and stopped after ``ray.capacity_wait_s`` (measured 2026-12-06)."""
    from mlflow import MlflowClient

    name = "lost-node"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", two_nodes.dashboard, "--working-dir", str(ROOT), "--",
           "python", "jobs/train_wcdgan.py", "--data", demo_shards, "--storage", f"s3://{s3_bucket}/lost",
           "--endpoint-url", s3_server, "--workers", "2", "--steps", "120", "--name", name,
           "--workdir", str(tmp_path / "w"), "--experiment", name, f"mlflow.tracking_uri={mlflow_server['url']}",
           "ray.placement=spread", "ray.capacity_wait_s=120", "train.val_every=20",
           "train.log_every=10", *TINY]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=cluster_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, killed = [], False
    deadline = time.time() + 600
    try:
        for line in proc.stdout:
            lines.append(line)
            step = re.search(r"step (\d+)/120", line)
            if not killed and step and int(step.group(1)) >= 50:
                assert two_nodes.kill_worker() >= 3
                killed = True
                two_nodes.start_worker()
            assert time.time() < deadline, "".join(lines[-50:])
        proc.wait(60)
    finally:  # a failed assertion leaves no submit client running into the next tests
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert killed and proc.returncode == 0, out[-6000:]
    resumed = re.findall(r"raygan: resuming from (checkpoint_\d+) in s3://\S+ .*on \d worker", out)
    assert resumed, out[-6000:]
    summary = next(json.loads(ln) for ln in reversed(lines) if ln.startswith("{") and "ray_run_name" in ln)
    assert summary["steps"] == 120 and summary["resumed_from_step"] >= 20
    client = MlflowClient(mlflow_server["url"])
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert [r.info.run_id for r in runs] == [summary["mlflow_run_id"]]
    steps = [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "val_psnr")]
    assert 120 in steps and min(steps) <= summary["resumed_from_step"]
