"""Serving benchmark: the endpoint under a concurrency sweep vs the same model's bare forward.

    python jobs/bench_serve.py [--quick] [--model URI] [--size 128] [--levels 1,2,4,8,16]

Starts its own Ray + Serve on 127.0.0.1 (deploy/serve_config.yaml narrowed to one task:
``restore-<task>`` autoscaling 1..``--max-replicas`` replicas of ``--replica-cpus`` CPU each,
one Ingress) and measures, in one run on this machine:

  1. the bare limit: ``TaskModel.restore_batch`` in this process, ``--max-replicas`` worker
     threads with ``--replica-cpus`` torch threads each -- the replicas' CPU layout at
     saturation without the serving stack (Ray gives a replica OMP_NUM_THREADS = its
     num_cpus; this process sets the same) -- the better of batch 1 and batches of Serve's
     ``max_batch_size``; measured before Ray starts and again after it stops;
  2. a concurrency sweep against ``POST /v1/<task>`` (a ``--size`` JPEG q10 photo in, one
     tile, PNG out): images/s, p50 / p99 latency, ratio to the bare rate, replicas running,
     the mean batch ``@serve.batch`` formed, and the CPU seconds per image of every process
     on the machine by role (replicas, ingress, proxy, Ray, this load generator, anything
     outside the benchmark); every level is bounded in requests and in seconds;
  3. the replica count over time (``serve.status()``): rising under load, falling after;
  4. tiling overhead: one ``4 x size`` image in ``size`` tiles vs whole, in process
     (``restore_tiled``, batch 1) and through the endpoint (``tile=size`` vs none: the
     server's tile ceiling is set to the whole image).

The load generator (:class:`raygan.deploy.client.RestoreClient` in threads) runs on the same
CPUs as the server. Without ``--model`` the generator is the WCDGAN CPU demo preset's,
randomly initialised (throughput does not depend on the weights). Prints a markdown table
and a final JSON line; the default run takes a few minutes on 2 cores, ``--quick`` about one.
"""

from __future__ import annotations

import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import argparse
import io
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

import raygan  # noqa: F401  (its ENV_DEFAULTS apply before Ray or MLflow load)

# the autoscaler sees load within a second instead of the default 10 s push interval
os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")

import numpy as np

GOAL = 0.85  # serving rate at saturation / bare rate
TARGET = 2  # the benchmark's autoscaling target_ongoing_requests per replica


def demo_checkpoint(workdir: str) -> str:
    """The WCDGAN CPU demo generator, random init, saved as a servable checkpoint folder."""
    from raygan.platform.checkpoint import save_checkpoint
    from raygan.platform.core.config import load_config, to_dict
    from raygan.platform.engine import GANEngine

    cfg = load_config("wcdgan_cpu_demo.yaml", [f"workdir={workdir}"])
    eng = GANEngine(cfg)
    ck = save_checkpoint(Path(workdir) / "checkpoint_00000000", eng,
                         {"step": 0, "config": to_dict(cfg), "family": cfg.family})
    return str(ck)


def photo(side: int, seed: int = 0) -> np.ndarray:
    """A natural ``side`` x ``side`` RGB crop (scikit-image's sample photos)."""
    from PIL import Image
    from skimage import data

    src = [data.astronaut, data.coffee, data.chelsea][seed % 3]()
    img = Image.fromarray(src)
    short = min(img.size)
    if short < side:
        img = img.resize((img.size[0] * side // short + 1, img.size[1] * side // short + 1), Image.BICUBIC)
    a = np.asarray(img)
    y, x = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
    return np.ascontiguousarray(a[y:y + side, x:x + side])


def jpeg_bytes(rgb: np.ndarray, quality: int = 10) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def decoded(body: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.1f}"


def pct(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))  # nearest rank
    return xs[k]


# ------------------------------------------------------------------------- bare limit


def bare_rate(models, tiles: List[np.ndarray], batch: int, rounds: int) -> float:
    """images/s of ``len(models)`` threads, each ``rounds`` x restore_batch(``batch`` tiles)."""
    def work(m):
        for r in range(rounds):
            m.restore_batch([tiles[(r * batch + i) % len(tiles)] for i in range(batch)])

    for m in models:  # one untimed batch each: allocator and caches at this shape
        m.restore_batch(tiles[:batch] if len(tiles) >= batch else [tiles[0]] * batch)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(models)) as pool:
        list(pool.map(work, models))
    return len(models) * rounds * batch / (time.perf_counter() - t0)


# ------------------------------------------------------------------------ replica watch


class ReplicaWatch(threading.Thread):
    """Polls ``serve.status()`` every ``period`` s: (t, running, starting) of one deployment."""

    def __init__(self, app: str, deployment: str, t0: float, period: float = 0.5):
        super().__init__(daemon=True)
        self.app, self.deployment, self.t0, self.period = app, deployment, t0, period
        self.samples: List[tuple] = []
        self.stop = threading.Event()

    def read(self):
        from ray import serve

        d = serve.status().applications[self.app].deployments[self.deployment]
        states = {getattr(k, "value", str(k)): v for k, v in d.replica_states.items()}
        return states.get("RUNNING", 0), sum(v for k, v in states.items() if k != "RUNNING")

    def run(self):
        while not self.stop.is_set():
            try:
                running, other = self.read()
                self.samples.append((time.monotonic() - self.t0, running, other))
            except Exception:  # noqa: BLE001 -- the controller busy for a moment
                pass
            self.stop.wait(self.period)

    def latest(self):
        return self.samples[-1][1:] if self.samples else (0, 0)

    def running_between(self, a: float, b: float) -> List[int]:
        return sorted({r for t, r, _ in self.samples if a - self.t0 <= t <= b - self.t0})

    def transitions(self) -> List[tuple]:
        out = []
        for t, r, _ in self.samples:
            if not out or out[-1][1] != r:
                out.append((round(t, 1), r))
        return out


# ------------------------------------------------------------------------ CPU by role

ROLES = ("model replicas", "ingress", "http proxy", "serve controller", "ray core", "load generator",
         "outside the benchmark")


def cpu_times() -> Dict[int, tuple]:
    """{pid: (role, user+system CPU seconds)} of every process; roles by this process's tree
    (the local Ray it started) and Ray's process titles."""
    import psutil

    me = psutil.Process()
    ours = {p.pid for p in me.children(recursive=True)}
    out = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            ct = p.cpu_times()
        except (psutil.Error, OSError):
            continue
        title = " ".join(p.info["cmdline"] or [])
        if p.pid == me.pid:
            role = "load generator"
        elif p.pid not in ours:
            role = "outside the benchmark"
        elif "ServeReplica" in title and ":restore-" in title:
            role = "model replicas"
        elif "ServeReplica" in title and ":Ingress" in title:
            role = "ingress"
        elif "ProxyActor" in title:
            role = "http proxy"
        elif "ServeController" in title:
            role = "serve controller"
        else:  # gcs, raylet, dashboard agents, idle workers
            role = "ray core"
        out[p.pid] = (role, ct.user + ct.system)
    return out


def cpu_delta(a: Dict[int, tuple], b: Dict[int, tuple]) -> Dict[str, float]:
    d = {r: 0.0 for r in ROLES}
    for pid, (role, t) in b.items():
        d[role] += t - (a[pid][1] if pid in a and a[pid][0] == role else 0.0)
    return d


# ------------------------------------------------------------------------------ load


def load_level(client, task: str, bodies: List[bytes], conc: int, n: int, warm_s: float, cap_s: float,
               watch: ReplicaWatch, settle_s: float, want: Optional[int] = None) -> Dict:
    """``conc`` threads restoring back to back. Warm-up for ``warm_s`` (longer, up to
    ``settle_s``, while a replica is starting or until ``want`` replicas run), then count
    completions until ``n`` or ``cap_s``."""
    done: List[tuple] = []  # (t_start, t_end)
    errors: List[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def worker(k: int):
        i = k
        while not stop.is_set():
            t = time.monotonic()
            try:
                client.restore(bodies[i % len(bodies)], task, format="png")
                with lock:
                    done.append((t, time.monotonic()))
            except Exception as exc:  # noqa: BLE001 -- ServeError, a timeout: counted, reported
                with lock:
                    errors.append((str(exc).splitlines() or [type(exc).__name__])[0][:200])
                time.sleep(0.05)
            i += conc

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(conc)]
    t_start = time.monotonic()
    for th in threads:
        th.start()
    time.sleep(warm_s)
    while time.monotonic() - t_start < settle_s:
        running, starting = watch.latest()
        if starting == 0 and (want is None or running >= want):
            break
        time.sleep(0.25)
    cpu0 = cpu_times()
    t0 = time.monotonic()
    with lock:
        before = len(done)
    while time.monotonic() - t0 < cap_s:
        with lock:
            if len(done) - before >= n:
                break
        time.sleep(0.02)
    with lock:
        window = [d for d in done[before:]]
    t1 = window[-1][1] if len(window) >= n else time.monotonic()
    cpu, cpu_s = cpu_delta(cpu0, cpu_times()), time.monotonic() - t0
    window = [d for d in window if d[1] <= t1]
    stop.set()
    for th in threads:
        th.join(timeout=120)
    lat = [(e - s) * 1000 for s, e in window]
    return {"concurrency": conc, "requests": len(window), "seconds": round(t1 - t0, 2),
            "images_per_s": len(window) / max(t1 - t0, 1e-9), "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99),
            "replicas": watch.running_between(t0, t1), "errors": len(errors),
            "cpu_s_per_image": {k: v / max(len(window), 1) for k, v in cpu.items()},
            "cpu_cores_busy": sum(cpu.values()) / max(cpu_s, 1e-9),
            "first_error": errors[0] if errors else None}


def batch_snapshot(client, tries: int = 8) -> Dict[str, tuple]:
    """{replica: (batches, tiles)} the @serve.batch of each replica formed so far, from
    ``GET /v1/models`` (each answer is one replica's; asked a few times to see each)."""
    snap: Dict[str, tuple] = {}
    for _ in range(tries):
        try:
            m = client.models()[0]
        except Exception:  # noqa: BLE001 -- statistics only
            break
        if "batches" not in m or "replica" not in m:
            return {}
        snap[m["replica"]] = (m["batches"], m["tiles"])
    return snap


def mean_batch(before: Dict[str, tuple], after: Dict[str, tuple]) -> Optional[float]:
    nb = sum(b - before.get(r, (0, 0))[0] for r, (b, _) in after.items())
    nt = sum(t - before.get(r, (0, 0))[1] for r, (_, t) in after.items())
    return nt / nb if nb > 0 else None


def wait_replicas(watch: ReplicaWatch, want: int, timeout: float) -> Optional[float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        running, other = watch.latest()
        if running == want and other == 0:
            return time.monotonic() - t0
        time.sleep(0.25)
    return None


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model URI or checkpoint folder (default: WCDGAN CPU demo, random init)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--task", default="jpeg")
    p.add_argument("--size", type=int, default=128, help="request image side (one tile per request); the tiling test uses 4 x this")
    p.add_argument("--levels", default="1,2,4,8,16", help="concurrency levels")
    p.add_argument("--requests", type=int, default=4, help="measured requests per level = max(24, this x level)")
    p.add_argument("--level-cap-s", type=float, default=25.0, help="at most this many measured seconds a level")
    p.add_argument("--max-batch-size", type=int, default=None, help="Serve's max_batch_size (default: the config's)")
    p.add_argument("--max-replicas", type=int, default=2)
    p.add_argument("--replica-cpus", type=int, default=1)
    p.add_argument("--port", type=int, default=8011)
    p.add_argument("--quick", action="store_true", help="64 px, levels 1,4,8, fewer requests")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.levels, args.requests, args.level_cap_s = 64, "1,4,8", 3, 10.0
    levels = [int(x) for x in args.levels.split(",")]
    cpus = args.max_replicas * args.replica_cpus
    os.environ.setdefault("RAYGAN_SERVE_TOKEN", secrets.token_urlsafe(16))
    omp_env = os.environ.pop("OMP_NUM_THREADS", None)  # let Ray set each replica's from its num_cpus

    import torch

    from raygan.deploy.app import ServeSettings, TaskModel, resolve_model_ref
    from raygan.deploy.client import RestoreClient
    from raygan.deploy.serving import load_serve_config, run_local
    from raygan.deploy.tiling import restore_tiled

    tmp = tempfile.TemporaryDirectory(prefix="bench_serve_")
    t_all = time.monotonic()
    uri = args.model or demo_checkpoint(tmp.name)
    big_side = 4 * args.size  # the tiling test's image; the server's tile (a ceiling) is as large,
    overrides = {"tile": big_side}  # so it goes whole unless a request asks for smaller tiles
    if args.max_batch_size:
        overrides["max_batch_size"] = args.max_batch_size
    config = load_serve_config(None, {args.task: uri}, args.tracking_uri, port=args.port, **overrides)
    settings = ServeSettings.from_args(config["app"]["args"])
    batch, overlap = settings.max_batch_size, settings.tile_overlap
    name = f"restore-{args.task}"
    for d in config["app"]["deployments"]:
        if d["name"] == "Ingress":  # one async ingress; its CPU is the replicas' (num_cpus 0)
            d.pop("autoscaling_config", None)
            d.update(num_replicas=1, ray_actor_options={"num_cpus": 0})
        elif d["name"] == name:
            d["ray_actor_options"] = {"num_cpus": args.replica_cpus}
            d["autoscaling_config"] = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": args.max_replicas,
                                       "target_ongoing_requests": TARGET, "upscale_delay_s": 2, "downscale_delay_s": 5,
                                       "look_back_period_s": 2}

    # ---- 1. bare limit, before Ray starts: the replicas' layout in one process
    torch.set_num_threads(args.replica_cpus)
    ref = resolve_model_ref(uri, args.tracking_uri)
    models = [TaskModel(args.task, ref, args.tracking_uri, settings.warm_size, device="cpu")
              for _ in range(args.max_replicas)]
    tiles = [photo(args.size, s) for s in range(3)]
    bodies = [jpeg_bytes(t) for t in tiles]  # what the endpoint is sent: JPEG q10
    lq_tiles = [decoded(b) for b in bodies]
    per_worker = 8 if args.quick else 24  # images each worker restores per measurement

    def measure_bare() -> Dict:
        c0, t0 = cpu_times(), time.monotonic()
        out = {"batch1": bare_rate(models, lq_tiles, 1, per_worker),
               f"batch{batch}": bare_rate(models, lq_tiles, batch, max(1, 16 // batch))}
        out["rate"] = max(out.values())  # the limit: the better batching
        out["outside_cores"] = cpu_delta(c0, cpu_times())["outside the benchmark"] / (time.monotonic() - t0)
        return out

    bare = {"threads_per_worker": torch.get_num_threads(), "workers": args.max_replicas, "batch": batch,
            "one_worker_batch1": bare_rate(models[:1], lq_tiles, 1, 16), "before": measure_bare()}
    print(f"bare (before serving): torch threads per worker = {bare['threads_per_worker']} (= a replica's num_cpus); "
          f"1 worker batch 1: {bare['one_worker_batch1']:.2f} img/s; {args.max_replicas} workers: "
          + ", ".join(f"{k} {v:.2f} img/s" for k, v in bare["before"].items() if k.startswith("batch"))
          + f"; CPU outside {bare['before']['outside_cores']:.2f} cores", flush=True)

    # ---- 4a. tiling overhead in process (one worker, the replicas' threads)
    big_body = jpeg_bytes(photo(big_side, 1))
    big = decoded(big_body)
    m = models[0]
    m.restore_batch([big[:args.size, :args.size]])
    t = time.perf_counter(); m.restore_batch([big]); whole_s = time.perf_counter() - t
    t = time.perf_counter(); restore_tiled(big, m.restore_batch, args.size, overlap, 1, 1); tiled_s = time.perf_counter() - t
    from raygan.deploy.tiling import TilePlan
    n_tiles = len(TilePlan(big_side, big_side, args.size, overlap))
    tiling = {"image": big_side, "tile": args.size, "overlap": overlap, "tiles": n_tiles,
              "pixels_ratio": round(n_tiles * args.size ** 2 / big_side ** 2, 3),
              "in_process_whole_s": whole_s, "in_process_tiled_s": tiled_s}
    print(f"tiling in process: {big_side}px whole {whole_s:.2f}s, {n_tiles} tiles of {args.size} {tiled_s:.2f}s",
          flush=True)
    del m

    # ---- 2. serve + sweep
    import ray
    from ray import serve

    result: Dict = {}
    try:
        t = time.monotonic()
        url = run_local(config, num_cpus=cpus)
        startup_s = time.monotonic() - t
        print(f"serve: up at {url} in {startup_s:.1f}s; {name}: 1..{args.max_replicas} replicas x "
              f"{args.replica_cpus} CPU (OMP_NUM_THREADS={args.replica_cpus} by Ray), max_batch_size {batch}",
              flush=True)
        app_name = config["app"].get("name", "raygan")
        watch = ReplicaWatch(app_name, name, t_all)
        watch.start()
        client = RestoreClient(url, timeout=120)
        client.restore(bodies[0], args.task)  # first request: connections, the ingress's path
        # levels ascending; a level above the autoscaling target (TARGET ongoing requests per
        # replica) first loads until the autoscaler has added its replicas (bounded), so it
        # measures the scaled deployment; the fall back to 1 is watched after the last level
        t_load, up_s, sweep = time.monotonic(), None, []
        for c in sorted(levels):
            n = max(12 if args.quick else 24, args.requests * c)
            snap = batch_snapshot(client)
            if up_s is None and c > TARGET:
                t_load = time.monotonic()
            row = load_level(client, args.task, bodies, c, n, warm_s=2.0, cap_s=args.level_cap_s, watch=watch,
                             settle_s=60.0, want=args.max_replicas if c > TARGET else None)
            row["ratio_to_bare"] = row["images_per_s"] / bare["before"]["rate"]
            row["mean_batch"] = mean_batch(snap, batch_snapshot(client))
            if up_s is None and c > TARGET:
                up = next((t for t, r, _ in watch.samples if r >= args.max_replicas and t >= t_load - t_all), None)
                up_s = None if up is None else round(up - (t_load - t_all), 1)
                print(f"  replicas: {args.max_replicas} running {up_s} s after concurrency {c} started", flush=True)
            sweep.append(row)
            print(f"  c={c:>2}: {row['images_per_s']:.2f} img/s  p50 {row['p50_ms']:.0f} ms  p99 {row['p99_ms']:.0f} ms"
                  f"  ratio {row['ratio_to_bare']:.2f}  replicas {row['replicas']}  batch {fmt(row['mean_batch'])}"
                  f"  CPU outside {row['cpu_s_per_image']['outside the benchmark'] * row['images_per_s']:.2f} cores"
                  f"  ({row['requests']} req, "
                  f"{row['seconds']}s, {row['errors']} errors)", flush=True)
        t_idle = time.monotonic()
        down_s = wait_replicas(watch, 1, timeout=40.0)
        print(f"  after load: back to 1 replica in {down_s if down_s is None else round(down_s, 1)} s", flush=True)

        # ---- 4b. tiling through the endpoint (1 replica at the start of each request)
        ep = {}
        for label, tile in (("whole", None), ("tiled", args.size)):
            wait_replicas(watch, 1, timeout=30.0)
            t = time.monotonic()
            _, headers = client.restore(big_body, args.task, tile=tile)
            ep[label] = (time.monotonic() - t, int(headers.get("x-tiles", 0)), watch.running_between(t, time.monotonic()))
        tiling.update(endpoint_whole_s=ep["whole"][0], endpoint_tiled_s=ep["tiled"][0], endpoint_tiles=ep["tiled"][1],
                      endpoint_tiles_whole=ep["whole"][1],
                      endpoint_replicas_whole=ep["whole"][2], endpoint_replicas_tiled=ep["tiled"][2])
        client.close()
        watch.stop.set()
        watch.join(timeout=5)

        trans = watch.transitions()
        peak = max((r for _, r in trans), default=0)
        result = {"device": f"{os.cpu_count()}-core CPU",
                  "model": uri if args.model else "wcdgan_cpu_demo (random init)", "size": args.size,
                  "max_batch_size": batch, "replica_cpus": args.replica_cpus, "max_replicas": args.max_replicas,
                  "bare": bare, "sweep": sweep, "tiling": tiling, "replicas_over_time": trans,
                  "replicas_peak": peak, "upscale_s": up_s, "scale_down_s": down_s,
                  "t_idle": round(t_idle - t_all, 1), "startup_s": startup_s, "omp_num_threads_env": omp_env}
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            tmp.cleanup()

    # ---- 1b. the bare limit again, Ray gone: the machine's drift over the run (it is shared)
    bare["after"] = measure_bare()
    bare["rate"] = max(bare["before"]["rate"], bare["after"]["rate"])
    bare["drift"] = abs(bare["before"]["rate"] - bare["after"]["rate"]) / bare["rate"]
    print("bare (after serving): " + ", ".join(f"{k} {v:.2f} img/s" for k, v in bare["after"].items() if k.startswith("batch"))
          + f"; CPU outside {bare['after']['outside_cores']:.2f} cores; before/after differ by "
          f"{100 * bare['drift']:.0f}%", flush=True)
    for r in sweep:
        r["ratio_to_bare"] = r["images_per_s"] / bare["rate"]
    best = max(sweep, key=lambda r: r["images_per_s"])
    result["saturation"] = {"concurrency": best["concurrency"], "images_per_s": best["images_per_s"],
                            "ratio_to_bare": best["ratio_to_bare"], "goal": GOAL, "met": best["ratio_to_bare"] >= GOAL}
    one = next((r for r in sweep if r["concurrency"] == 1), None)
    result["overhead_ms_c1"] = None if one is None else one["p50_ms"] - 1000 / bare["one_worker_batch1"]
    result["wall_s"] = round(time.monotonic() - t_all, 1)

    # ---- report
    print()
    print(f"### Serving benchmark ({result['device']}, {args.size}x{args.size} JPEG q10 -> PNG, "
          f"1 tile/request, max_batch_size {batch}, {args.max_replicas} x {args.replica_cpus}-CPU replicas max)")
    print()
    b, a = bare["before"], bare["after"]
    print(f"bare limit: {bare['rate']:.2f} img/s = {args.max_replicas} workers x {bare['threads_per_worker']} torch "
          f"thread(s) in one process, the best of batch 1 ({b['batch1']:.2f} before / {a['batch1']:.2f} after serving) "
          f"and batch {batch} ({b[f'batch{batch}']:.2f} / {a[f'batch{batch}']:.2f}); 1 worker, batch 1: "
          f"{bare['one_worker_batch1']:.2f} img/s ({1000 / bare['one_worker_batch1']:.0f} ms an image)")
    print()
    print("| concurrency | requests | images/s | p50 ms | p99 ms | / bare | replicas | mean batch |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in sweep:
        print(f"| {r['concurrency']} | {r['requests']} | {r['images_per_s']:.2f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['ratio_to_bare']:.2f} | {'-'.join(map(str, r['replicas']))} | "
              f"{fmt(r['mean_batch'])} |")
    s = result["saturation"]
    print()
    top = sweep[-1]
    print(f"saturation: {s['images_per_s']:.2f} img/s at concurrency {s['concurrency']} = {s['ratio_to_bare']:.2f} "
          f"of bare (goal >= {GOAL}: {'met' if s['met'] else 'NOT met'}); at the highest concurrency, "
          f"{top['concurrency']}: {top['ratio_to_bare']:.2f}")
    cpu = best["cpu_s_per_image"]
    print(f"CPU per image at concurrency {best['concurrency']} (ms, all processes of this machine): "
          + ", ".join(f"{k} {1000 * v:.0f}" for k, v in cpu.items())
          + f"; a bare forward: {1000 / bare['one_worker_batch1']:.0f}; {best['cpu_cores_busy']:.2f} cores busy")
    if result["overhead_ms_c1"] is not None:
        print(f"latency at concurrency 1: p50 {one['p50_ms']:.0f} ms vs a bare forward "
              f"{1000 / bare['one_worker_batch1']:.0f} ms ({result['overhead_ms_c1']:+.0f} ms)")
    print(f"tiling ({big_side}px, {n_tiles} tiles of {args.size}, overlap {overlap}, {tiling['pixels_ratio']}x the pixels): "
          f"in process tiled/whole = {tiled_s / whole_s:.2f} ({tiled_s:.2f}s / {whole_s:.2f}s); endpoint "
          f"{tiling['endpoint_tiled_s'] / tiling['endpoint_whole_s']:.2f} ({tiling['endpoint_tiled_s']:.2f}s / "
          f"{tiling['endpoint_whole_s']:.2f}s, replicas {tiling['endpoint_replicas_tiled']} / "
          f"{tiling['endpoint_replicas_whole']})")
    steps = " -> ".join(f"{r} (t={t}s)" for t, r in trans)
    print(f"replicas over time: {steps}; load stopped at t={result['t_idle']}s")
    print(f"replicas: 1 -> {peak} under load ({up_s} s after concurrency > {TARGET} began) -> "
          f"{'1 after (' + str(round(down_s, 1)) + ' s)' if down_s is not None else 'still up after 40 s'}")
    print(json.dumps(result, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
