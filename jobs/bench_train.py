"""Side-by-side throughput benchmark of the data pipeline and the GAN step.

    python jobs/bench_train.py [--config models/configs/wcdgan_cpu_demo.yaml] [--steps 6] [key=value ...]

Measures, in one run on this machine (ratios are what matter; the machine is shared):
  1. images/s of the S3-shard pipeline in steady state (moto's S3 server in its own
     process over HTTP, JPEG degradation on the fly; one patch per decoded record) vs
     decoding the same PNG images from local disk with the same crop + degradation, both in
     one process; the pipeline with its fetch thread (data.prefetch_records) and without;
  2. step time of the plain GAN step vs the same step under Ray Train with 1 worker;
  3. training throughput with 1 vs 2 Ray Train workers (DDP over gloo), and 2 workers x 1
     thread vs one process with every core as torch threads on the same global batch;
  4. achieved conv FLOP/s of the GAN step vs a measured conv peak (a large 3x3 conv), at 1
     thread and at every core, and of the preset's L1-only step at every core (most of a
     CPU recipe's steps), each in rounds that interleave the peak and the step (the median
     ratio over the rounds, its range, and the stricter best step over the highest peak);
  5. the preset's L1-only and GAN steps with their batch split over a thread per core
     (train.batch_threads) against the same steps on that many intra-op threads;
  6. the GAN step at every core taken apart (unsplit): each of its convolutions and FC
     products run alone at its shapes, their speed over the conv peak (what the kernels
     reach at these shapes), and the share of the step's time they would take so (the
     rest: elementwise ops, concatenations, the optimizer, kernels slower in the step).
The worker comparisons use one thread per worker, so 1 vs 2 workers compares like with like.
Every process that times a step or the conv peak (this one after the pipeline section, and
the Ray workers) serves large tensors from glibc's heap (:func:`steady_allocator`).
Prints a table and a final JSON line.
"""

from __future__ import annotations

import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import argparse
import contextlib
import copy
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import raygan  # noqa: E402,F401  (its ENV_DEFAULTS apply before Ray or MLflow load)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

# glibc's own variables (read when a process starts; mallopt in steady_allocator is the same
# setting for a process already running): tensors up to 256 MiB come from the heap, and the heap
# is trimmed only past 512 MiB free.
STEADY_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(512 << 20)}

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"pipeline_vs_local": (">=", 0.95), "ray_vs_plain_step": ("<=", 1.05),
         "two_vs_one_worker": (">=", 1.8), "two_vs_one_worker_bf16_allreduce": (">=", 1.8),
         "achieved_vs_peak": (">=", 0.7)}


def synthetic_batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    c, p, b = cfg.data.channels, cfg.data.patch, cfg.data.batch
    target = torch.rand(b, c, p, p, generator=g)
    return {"input": (target + 0.05 * torch.randn(b, c, p, p, generator=g)).clamp(0, 1), "target": target}


def time_steps(engine, batch, steps, warmup=2):
    for _ in range(warmup):
        engine.train_step(batch)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        engine.train_step(batch)
        times.append(time.perf_counter() - t0)
    return times


def gan_phase(cfg, **settings):
    """A new config (the loaded one is left as it was): ``cfg`` in its adversarial phase from
    step 0, with any other dotted ``settings``."""
    from raygan.platform.plan import with_settings

    return with_settings(cfg, **{"train.pretrain_steps": 0, **settings})


def steady_allocator() -> bool:
    """Serve this process's large tensors from glibc's heap instead of fresh mmaps, so a
    timed conv does not also time the kernel zeroing its output's pages. Returns False where
    it cannot (not glibc).

    Why (measured 2026-12-06): glibc mmaps each block over a threshold that it raises only
    after freeing a larger block, so whether the conv peak's 9 MiB output pays for fresh
    pages depended on what the process had freed before. The same 64->64 conv ran at
    125-148 GFLOP/s on 2 threads in a fresh process and at 190-206 after a Ray start and
    stop, and at 105 against 68-78 on one thread; with this setting at 199-204 and 104-105
    from the start. The demo's steps took the same time either way (133-140 ms for the
    GAN step), so the old ratios were taken against a peak that was low at times."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, int(STEADY_ALLOCATOR_ENV["MALLOC_MMAP_THRESHOLD_"]))
                and mallopt(m_trim_threshold, int(STEADY_ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"])))


# ------------------------------------------------------------------------- 1. pipeline


def bench_pipeline(cfg, images: int):
    from PIL import Image

    from raygan.datasets.degradations import get_task
    from raygan.datasets.pipeline import TrainStream, ShardSet
    from raygan.datasets.samples import demo_image_paths
    from raygan.datasets.shards import write_shards
    from raygan.platform.plan import with_settings

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    # The S3 server runs in its own process, as a real object store would (a thread here
    # would compete with the pipeline for the GIL).
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    try:
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
        cfg = with_settings(cfg, **{"storage.endpoint_url": endpoint})
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "src"
            src.mkdir()
            # The local-disk baseline reads the very PNGs the shards hold.
            paths = [p for group in demo_image_paths() for p in group]
            for i in range(images):
                im = Image.open(paths[i % len(paths)]).convert("RGB")
                im.save(src / f"img{i:04d}.png")
            write_shards([str(src)], "s3://bench/shards", shard_size=max(1, images // 4),
                         val_fraction=0.0, parallel="none", storage_cfg=cfg.storage, progress=False)
            # one patch per decoded record on both sides: the baseline decodes a photo per
            # image, so a preset's data.crops_per_record > 1 would count each decode N times
            cfg = with_settings(cfg, **{"data.train": "s3://bench/shards", "data.crops_per_record": 1})
            task = get_task(cfg.data.task)
            files = sorted(src.glob("*.png"))

            def local_decode():
                rng = np.random.default_rng(0)
                n = 0
                for f in files:
                    arr = np.asarray(Image.open(io.BytesIO(f.read_bytes())).convert("RGB"))
                    task({"target": arr, "key": f.stem}, cfg.data, rng, train=True)
                    n += 1
                return n

            shardset = ShardSet.open(cfg.data.train, "train", cfg.storage)

            def s3_stream(prefetch: int):
                data_cfg = copy.copy(cfg.data)
                data_cfg.prefetch_records = prefetch
                stream = iter(TrainStream(shardset, data_cfg, cfg.storage, rank=0, world=1, seed=0))
                # Steady state: once the shuffle buffer is full, each yielded sample is exactly
                # one record fetched, decoded, cropped and degraded.
                for _ in range(min(data_cfg.shuffle_buffer, len(files))):
                    next(stream)

                def run():
                    for _ in range(len(files)):
                        next(stream)
                    return len(files)
                return run

            rates = {"local": [], "s3": [], "s3_inline": []}
            cpu = {"local": [], "s3": [], "s3_inline": []}  # this process's CPU s per image
            runs = (("local", local_decode), ("s3", s3_stream(cfg.data.prefetch_records)),
                    ("s3_inline", s3_stream(0)))
            for _ in range(3):  # interleaved rounds, best of each (noisy shared machine)
                for name, fn in runs:
                    t0, c0 = time.perf_counter(), time.process_time()
                    n = fn()
                    rates[name].append(n / (time.perf_counter() - t0))
                    cpu[name].append((time.process_time() - c0) / n)
            if os.environ.get("BENCH_PIPELINE_CPU"):
                print({k: [round(1000 * v, 2) for v in vs] for k, vs in cpu.items()}, "ms CPU/image")
            return max(rates["local"]), max(rates["s3"]), max(rates["s3_inline"])
    finally:
        server.terminate()
        server.wait(10)


# ------------------------------------------------------------------- 2-3. steps under Ray


def _ray_bench_loop(config):
    import ray.train
    import ray.train.torch

    from raygan.platform.core.config import build_config
    from raygan.platform.engine import GANEngine

    torch.set_num_threads(1)
    cfg = build_config(config["cfg"])  # the driver's config, already in its adversarial phase
    engine = GANEngine(cfg, device=ray.train.torch.get_device(), wrap_model=ray.train.torch.prepare_model)
    rank = ray.train.get_context().get_world_rank()
    times = time_steps(engine, synthetic_batch(cfg, seed=rank), config["steps"])
    # Train V2 keeps metrics with checkpoints: report a tiny one holding the timing.
    with tempfile.TemporaryDirectory() as d:
        Path(d, "timing.json").write_text(json.dumps({"median_step_s": statistics.median(times)}))
        ray.train.report({"median_step_s": statistics.median(times)},
                         checkpoint=ray.train.Checkpoint.from_directory(d) if rank == 0 else None)


def bench_ray(cfg, workers: int, steps: int) -> float:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raygan.platform.core.config import to_dict

    trainer = TorchTrainer(
        _ray_bench_loop, train_loop_config={"cfg": to_dict(cfg), "steps": steps},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="gloo"),
        run_config=RunConfig(name=f"bench-{workers}w-{int(time.time())}",
                             storage_path=tempfile.mkdtemp(prefix="raygan-bench-")))
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        return json.loads(Path(d, "timing.json").read_text())["median_step_s"]


# ------------------------------------------------------------------------- 4. FLOP/s


def conv_peak_flops(threads=1, repeats=5) -> float:
    """FLOP/s of a large 64->64 3x3 conv (batch 4, 96 px) at ``threads`` torch threads, best of
    ``repeats``: what this machine's conv kernels reach when nothing limits them."""
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    x = torch.randn(4, 64, 96, 96)
    flops = 2 * 64 * 64 * 9 * 4 * 96 * 96
    with torch.no_grad():
        for _ in range(2):
            conv(x)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    return flops / best


def step_vs_peak(engine, batch, flops: int, threads: int, rounds: int = 7):
    """Achieved conv FLOP/s of the step over the conv peak, measured in ``rounds`` interleaved
    pairs (peak, then two steps, at the same thread count) so that both see the same machine:
    on a shared machine the peak alone moved by 1.5x between runs, and by 2x within one.
    Returns the median ratio, its range over the rounds, the median peak, and the stricter
    ratio of the fastest step to the highest peak of any round (both at their least
    disturbed)."""
    torch.set_num_threads(threads)
    engine.train_step(batch)
    ratios, peaks, steps = [], [], []
    for _ in range(rounds):
        peak = conv_peak_flops(threads, repeats=3)
        step = min(time_steps(engine, batch, 2, warmup=0))
        ratios.append(flops / step / peak)
        peaks.append(peak)
        steps.append(step)
    best_vs_highest = flops / min(steps) / max(peaks)
    return (statistics.median(ratios), min(ratios), max(ratios), statistics.median(peaks),
            best_vs_highest)


@contextlib.contextmanager
def unsplit(engine):
    """The engine's steps unsplit (train.batch_threads 1) inside, split again after: a split
    step's shards run on threads that a FLOP counter or dispatch mode on this thread does not
    see."""
    split, engine.batch_threads = engine.batch_threads, 1
    try:
        yield engine
    finally:
        engine.batch_threads = split


def step_flops(engine, batch) -> int:
    """The step's FLOPs, counted on this thread (a counter sees only its own thread): an
    engine that splits its batch over threads (train.batch_threads) is counted unsplit,
    the same FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    with unsplit(engine), FlopCounterMode(display=False) as counter:
        engine.train_step(batch)
    return counter.get_total_flops()


#: the kernels :func:`kernels_alone` replays: convolutions (forward and backward) and the
#: matrix products of FC layers, the ops whose FLOPs the ratios count
KERNEL_OPS = ("convolution.default", "convolution_backward.default", "mm.default", "addmm.default", "bmm.default")


def record_kernels(engine, batch) -> dict:
    """The step's kernel calls (:data:`KERNEL_OPS`), seen below autograd on this thread with
    the batch unsplit: ``{signature: (op, args, kwargs, count)}``, tensors kept as their
    (shape, stride, dtype) so that :func:`kernels_alone` can run each call again alone."""
    from torch.utils._python_dispatch import TorchDispatchMode

    wanted = {getattr(torch.ops.aten, name.split(".")[0]).default for name in KERNEL_OPS}

    def spec(v):
        if torch.is_tensor(v):
            return ("tensor", tuple(v.shape), tuple(v.stride()), v.dtype)
        return tuple(spec(x) for x in v) if isinstance(v, (list, tuple)) else v

    calls: dict = {}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in wanted:
                key = (str(func), spec(args), spec(sorted(kwargs.items())))
                op, a, k, n = calls.get(key, (func, spec(args), spec(kwargs), 0))
                calls[key] = (op, a, k, n + 1)
            return func(*args, **kwargs)

    with unsplit(engine), Recorder():
        engine.train_step(batch)
    return calls


def kernels_alone(calls: dict, repeats: int = 5):
    """Each recorded kernel call run alone on random tensors of its shapes and strides, at
    this thread count: (the FLOPs of all the calls, the sum over calls of each one's best
    time of ``repeats``). What the step would take if it were nothing but its kernels,
    each as fast as it runs by itself."""
    from torch.utils.flop_counter import FlopCounterMode

    def build(v):
        if isinstance(v, tuple) and v and v[0] == "tensor":
            return torch.empty_strided(v[1], v[2], dtype=v[3]).normal_()
        return type(v)(build(x) for x in v) if isinstance(v, (list, tuple)) else v

    flops, seconds = 0, 0.0
    with torch.no_grad():
        for op, args, kwargs, count in calls.values():
            a, k = build(args), build(kwargs)
            with FlopCounterMode(display=False) as counter:
                op(*a, **k)
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                op(*a, **k)
                best = min(best, time.perf_counter() - t0)
            flops += count * counter.get_total_flops()
            seconds += count * best
    return flops, seconds


def step_vs_kernels_alone(engine, batch, threads: int, rounds: int = 3):
    """The step (unsplit, ``threads`` intra-op threads) taken apart: its kernels' own speed
    alone at their shapes over the conv peak, and the share of the step's time that those
    kernels alone would take (the rest is everything else: elementwise ops, concatenations,
    the optimizer, and the kernels running slower inside the step than alone). The product of
    the two is about the step's ratio to the peak. Best of ``rounds`` rounds each."""
    torch.set_num_threads(threads)
    calls = record_kernels(engine, batch)
    with unsplit(engine):
        time_steps(engine, batch, 1)
        best_step, best_kernels, best_peak, flops = float("inf"), float("inf"), 0.0, 0
        for _ in range(rounds):
            best_peak = max(best_peak, conv_peak_flops(threads, repeats=3))
            best_step = min(best_step, min(time_steps(engine, batch, 2, warmup=0)))
            flops, seconds = kernels_alone(calls)
            best_kernels = min(best_kernels, seconds)
    return flops / best_kernels / best_peak, best_kernels / best_step


def split_vs_whole(cfg, threads: int, rounds: int = 7, steps: int = 3) -> float:
    """Speed of ``cfg``'s step with its batch split over ``threads`` threads
    (train.batch_threads) over the same step unsplit on ``threads`` intra-op threads: the
    median over ``rounds`` interleaved rounds of the best of ``steps`` steps each."""
    from raygan.platform.engine import GANEngine
    from raygan.platform.plan import with_settings

    torch.set_num_threads(threads)
    batch = synthetic_batch(cfg)
    engines = {k: GANEngine(with_settings(cfg, **{"train.batch_threads": k})) for k in (1, threads)}
    for engine in engines.values():
        time_steps(engine, batch, 1)
    ratios = []
    for _ in range(rounds):
        best = {k: min(time_steps(engine, batch, steps, warmup=0)) for k, engine in engines.items()}
        ratios.append(best[1] / best[threads])
    return statistics.median(ratios)


def main(argv=None) -> int:
    from raygan.platform.core.config import load_config
    from raygan.platform.engine import GANEngine
    from raygan.platform.plan import with_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "models/configs/wcdgan_cpu_demo.yaml"))
    ap.add_argument("--steps", type=int, default=6, help="timed steps per measurement")
    ap.add_argument("--images", type=int, default=48, help="images for the pipeline benchmark")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    preset = load_config(args.config, ["train.perceptual_weights=random", *args.overrides])
    # The layouts compared share the preset's global batch (data.batch x ray.workers): 2 DDP
    # workers of one thread take half each, one process with every core takes it whole.
    half = max(1, preset.data.batch * preset.ray.workers // 2)
    # (a worker of one thread has nothing to split its batch over, and DDP workers step whole)
    cfg = gan_phase(preset, **{"data.batch": half, "train.batch_threads": 1})
    torch.set_num_threads(1)

    local_rate, s3_rate, s3_inline_rate = bench_pipeline(preset, args.images)
    # from here on every timed step and conv peak (the Ray workers get the same at start)
    steady = steady_allocator()

    engine = GANEngine(cfg)
    batch = synthetic_batch(cfg)
    plain = statistics.median(time_steps(engine, batch, args.steps))
    flops = step_flops(engine, batch)
    vs_peak, vs_peak_lo, vs_peak_hi, peak, _ = step_vs_peak(engine, batch, flops, 1)

    import ray

    ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1",
             num_cpus=max(2, os.cpu_count() or 2),
             runtime_env={"env_vars": STEADY_ALLOCATOR_ENV} if steady else None)
    try:
        ray1 = bench_ray(cfg, 1, args.steps)
        ray2 = bench_ray(cfg, 2, args.steps)
        ray2_bf16 = bench_ray(with_settings(cfg, **{"train.ddp_compression": "bf16"}), 2, args.steps)
        plain_again = statistics.median(time_steps(engine, batch, args.steps))
    finally:
        ray.shutdown()
    plain = min(plain, plain_again)

    # The same global batch in one process with every core as torch threads (what a 1-worker
    # run gets now): is DDP over the cores or intra-op threads the faster for this preset?
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    wide = gan_phase(preset, **{"data.batch": 2 * half})
    wide_engine = GANEngine(wide)
    threaded = statistics.median(time_steps(wide_engine, synthetic_batch(wide), args.steps))
    wide_flops = step_flops(wide_engine, synthetic_batch(wide))
    wide_vs_peak, wide_lo, wide_hi, peak_threaded, wide_strict = step_vs_peak(
        wide_engine, synthetic_batch(wide), wide_flops, cores)
    # The preset's L1-only step (generator alone), which is most of a CPU recipe's steps
    # (the demo: train.pretrain_steps of train.steps), the same way.
    l1 = with_settings(preset, **{"data.batch": 2 * half, "train.pretrain_steps": 10**9})  # every step L1
    l1_engine = GANEngine(l1)
    l1_flops = step_flops(l1_engine, synthetic_batch(l1))
    l1_vs_peak, l1_lo, l1_hi, _, l1_strict = step_vs_peak(l1_engine, synthetic_batch(l1), l1_flops, cores)
    # Where the GAN step's time goes: its own kernels alone at their shapes, and the rest
    kernels_vs_peak, kernels_share = step_vs_kernels_alone(wide_engine, synthetic_batch(wide), cores)
    # One process, its batch split over a thread per core (train.batch_threads) against the
    # same step on as many intra-op threads, for both phases
    split_l1 = split_vs_whole(l1, cores)
    split_gan = split_vs_whole(wide, cores)
    torch.set_num_threads(1)

    b = cfg.data.batch
    results = {
        "pipeline_local_images_per_s": local_rate,
        "pipeline_s3_images_per_s": s3_rate,
        "pipeline_vs_local": s3_rate / local_rate,
        "pipeline_no_prefetch_vs_local": s3_inline_rate / local_rate,
        "plain_step_s": plain,
        "ray1_step_s": ray1,
        "ray_vs_plain_step": ray1 / plain,
        "ray1_images_per_s": b / ray1,
        "ray2_images_per_s": 2 * b / ray2,
        "two_vs_one_worker": (2 * b / ray2) / (b / ray1),
        f"one_process_{cores}_threads_images_per_s": 2 * b / threaded,
        f"two_workers_vs_{cores}_threads": (2 * b / ray2) / (2 * b / threaded),
        "ray2_bf16_allreduce_images_per_s": 2 * b / ray2_bf16,
        "two_vs_one_worker_bf16_allreduce": (2 * b / ray2_bf16) / (b / ray1),
        "step_gflop": flops / 1e9,
        "achieved_gflops": flops / plain / 1e9,
        "conv_peak_gflops": peak / 1e9,
        "achieved_vs_peak": vs_peak,
        "achieved_vs_peak_range": [vs_peak_lo, vs_peak_hi],
        f"conv_peak_{cores}_threads_gflops": peak_threaded / 1e9,
        f"achieved_vs_peak_{cores}_threads": wide_vs_peak,
        f"achieved_vs_peak_{cores}_threads_range": [wide_lo, wide_hi],
        f"achieved_vs_highest_peak_{cores}_threads_best_step": wide_strict,
        f"gan_step_kernels_alone_vs_peak_{cores}_threads": kernels_vs_peak,
        f"gan_step_share_of_its_kernels_alone_{cores}_threads": kernels_share,
        "l1_step_gflop": l1_flops / 1e9,
        f"l1_step_achieved_vs_peak_{cores}_threads": l1_vs_peak,
        f"l1_step_achieved_vs_peak_{cores}_threads_range": [l1_lo, l1_hi],
        f"l1_step_achieved_vs_highest_peak_{cores}_threads_best_step": l1_strict,
        f"l1_step_batch_threads_{cores}_vs_1": split_l1,
        f"gan_step_batch_threads_{cores}_vs_1": split_gan,
        "preset_batch_threads": preset.train.batch_threads,
        "steady_allocator": steady,
        "config": args.config,
        "patch": cfg.data.patch,
        "batch_per_worker": b,
        "global_batch": 2 * b,
        "threads_per_worker": 1,
    }
    print(f"{'measurement':<36}{'value':>14}  goal")
    for k, v in results.items():
        if isinstance(v, float):
            goal = GOALS.get(k) or (GOALS["achieved_vs_peak"] if "achieved_vs" in k else None)
            mark = ""
            if goal:
                ok = v >= goal[1] if goal[0] == ">=" else v <= goal[1]
                mark = f"{goal[0]} {goal[1]}  {'met' if ok else 'NOT met'}"
            print(f"{k:<36}{v:>14.3f}  {mark}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
