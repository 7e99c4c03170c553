"""The GPU check: ``make gpu-check`` (``python jobs/gpu_check.py``), run unchanged on a machine
with NVIDIA GPUs; no Ray needed.

For every family's paper config (random perceptual weights: the FLOPs and the numerics of the
path are the same, no weight file is needed):

1. **AMP steps on CUDA**: a generator-only step and adversarial steps under bf16 autocast, every
   loss finite;
2. **CPU vs GPU**: the losses of the same first step (same seed, same batch, dropout off) in
   float32 on the CPU and in bf16 on the GPU agree within ``--loss-rtol`` (bf16 keeps 8 bits
   of mantissa);
3. **throughput** at the paper's batch and patch, without and with ``torch.compile``
   (``train.compile``), channels-last: images/s, achieved TFLOP/s (the FLOPs of one iteration
   counted by :func:`raygan.platform.budget.flops_per_iteration`) and the model FLOP
   utilisation against the GPU's dense bf16 peak (:data:`BF16_PEAK_TFLOPS`, vendor figures);
4. **GPU-hours** of the paper recipe at the measured throughput
   (:func:`raygan.platform.budget.estimate`);

and with 2+ GPUs, **NCCL DDP**: 2 ranks of batch b take generator-only steps on halves of
fixed global batches; their weights must be equal across ranks and equal to one process of
batch 2b (within ``--ddp-atol``).

It prints one table and one JSON line (``{"gpu_check": "passed" | "failed" | "skipped", ...}``)
and exits 0 when passed, 1 when any check failed. Without CUDA it prints one line and exits 0
with ``"skipped"`` (a wrapper tells it apart from a pass by the JSON status, or by
``--require-gpu``, which makes it exit 3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import torch

#: family -> its paper config (the row the GPU-hours stand for) and the dataset it trains on
PAPER_RUNS = {
    "wcdgan": ("wcdgan_rgb_q10.yaml", "DIV2K train (800, ~2040x1356)"),
    "dagan": ("dagan.yaml", "DIV2K train (800, ~2040x1356)"),
    "dequantizer": ("dequantizer_gimel.yaml", "DequantizerNet's 8,000 training images"),
    "facesr": ("facesr_gan.yaml", None),
    "pan": ("pan_sr.yaml", None),
}

#: dense bf16 tensor-core peaks, TFLOP/s (NVIDIA's datasheets, without sparsity); matched
#: against torch.cuda.get_device_name in this order
BF16_PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("L40", 181.0), ("A10G", 70.0), ("A10", 125.0), ("L4", 121.0),
                    ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0), ("T4", 65.0))

#: overrides that every check applies: no weight files, no EMA copy in the timings
COMMON = ["train.perceptual_weights=random", "train.lpips_weights=off", "train.ema_decay=0",
          "train.init_from=null"]


def bf16_peak(device_name: str) -> Optional[float]:
    """The dense bf16 peak of a GPU by its name; None when unknown (no utilisation then)."""
    for key, peak in BF16_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def mfu(flops_per_iteration: float, iterations: int, seconds: float, peak_tflops: Optional[float]) -> Optional[float]:
    """Model FLOP utilisation: achieved FLOP/s over the peak (None without a known peak)."""
    if not peak_tflops or seconds <= 0:
        return None
    return flops_per_iteration * iterations / seconds / (peak_tflops * 1e12)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog or "gpu_check.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", choices=sorted(PAPER_RUNS), default=sorted(PAPER_RUNS))
    p.add_argument("--steps", type=int, default=20, help="timed iterations per measurement (default 20)")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations first (default 5)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurements")
    p.add_argument("--loss-rtol", type=float, default=0.1, help="CPU fp32 vs GPU bf16 loss tolerance")
    p.add_argument("--ddp-atol", type=float, default=1e-4, help="DDP vs one-process weight tolerance")
    p.add_argument("--require-gpu", action="store_true", help="exit 3 (not 0) when there is no GPU")
    p.add_argument("--json", metavar="FILE", help="also write the JSON result to FILE")
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        build_parser().error("--steps must be >= 1 and --warmup >= 0")
    return args


# ------------------------------------------------------------------------------ checks


def _config(family: str, extra: List[str]):
    import raygan.datasets.tasks  # noqa: F401  (the registries the configs name)
    import raygan.models  # noqa: F401
    from raygan.platform.core.config import load_config

    return load_config(PAPER_RUNS[family][0], COMMON + extra)


def _batch(cfg, size: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    from raygan.platform.budget import _synthetic_batch

    torch.manual_seed(seed)
    one = [_synthetic_batch(cfg) for _ in range(size)]
    return {k: torch.cat([b[k] for b in one]) for k in one[0]}


def _engine(cfg, device, seed: int = 0, wrap=None):
    from raygan.platform.engine import GANEngine

    torch.manual_seed(seed)
    engine = GANEngine(cfg, device=torch.device(device), wrap_model=wrap)
    engine.pretrain_steps = 0
    return engine


def amp_steps(family: str, device: str = "cuda", extra: Optional[List[str]] = None) -> Dict[str, Any]:
    cfg = _config(family, ["train.amp=bf16", *(extra or [])])
    engine = _engine(cfg, device)
    engine.pretrain_steps = 1  # one generator-only step, then adversarial ones
    batch = _batch(cfg, 2)
    losses = [engine.train_step(batch) for _ in range(3)]
    bad = [(i, k, v) for i, logs in enumerate(losses) for k, v in logs.items() if not math.isfinite(v)]
    return {"ok": not bad, "losses": losses[-1], "nonfinite": bad}


def cpu_vs_gpu(family: str, rtol: float, device: str = "cuda", extra: Optional[List[str]] = None) -> Dict[str, Any]:
    extra = (["model.dropout=0"] if family == "pan" else []) + list(extra or [])
    batch = None
    out = {}
    for key, dev, amp in (("cpu", "cpu", "none"), ("gpu", device, "bf16")):
        cfg = _config(family, extra + [f"train.amp={amp}"])
        batch = batch or _batch(cfg, 2)
        out[key] = _engine(cfg, dev).train_step(batch)
    worst = max(abs(out["gpu"][k] - v) / max(abs(v), 1e-6) for k, v in out["cpu"].items())
    return {"ok": worst <= rtol, "worst_relative_difference": worst, "cpu": out["cpu"], "gpu": out["gpu"]}


def throughput(family: str, compile_: bool, steps: int, warmup: int, peak: Optional[float],
               device: str = "cuda", extra: Optional[List[str]] = None) -> Dict[str, Any]:
    from raygan.platform.budget import flops_per_iteration

    extra = list(extra or [])
    cfg = _config(family, ["train.amp=bf16", "train.channels_last=true",
                           f"train.compile={str(compile_).lower()}", *extra])
    flops = flops_per_iteration(_config(family, extra))["adversarial"]
    engine = _engine(cfg, device)
    batch = _batch(cfg, int(cfg.data.batch))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        engine.train_step(batch)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        engine.train_step(batch)
    sync()
    seconds = time.perf_counter() - t0
    achieved = flops * steps / seconds / 1e12
    return {"images_per_s": cfg.data.batch * steps / seconds, "s_per_iteration": seconds / steps,
            "achieved_tflops": achieved, "mfu": mfu(flops, steps, seconds, peak),
            "batch": cfg.data.batch, "patch": cfg.data.patch, "gflop_per_iteration": flops / 1e9}


def gpu_hours_at(family: str, tflops: float) -> Dict[str, Any]:
    from raygan.platform.budget import estimate

    config, dataset = PAPER_RUNS[family]
    r = estimate(config, [], dataset, tflops)
    return {"config": config, "iterations": r["iterations"], "gpu_hours": r["gpu_hours"]}


def _ddp_rank(rank: int, world: int, port: int, steps: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=world)
    torch.cuda.set_device(rank)
    cfg = _config("wcdgan", ["data.patch=48", "data.batch=2"])

    def wrap(module, parallel_strategy_kwargs=None):
        return DDP(module, device_ids=[rank], **(parallel_strategy_kwargs or {}))

    engine = _engine(cfg, f"cuda:{rank}", wrap=wrap)
    engine.pretrain_steps = 1 << 30  # generator-only: no per-rank statistics in the comparison
    for step in range(steps):
        full = _batch(cfg, 2 * world, seed=100 + step)
        part = {k: v[rank * 2:(rank + 1) * 2] for k, v in full.items()}
        engine.train_step(part)
    torch.save({k: v.cpu() for k, v in engine.generator.state_dict().items()},
               os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def ddp_nccl(steps: int, atol: float) -> Dict[str, Any]:
    import socket
    import tempfile

    import torch.multiprocessing as mp

    world = 2
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_rank, args=(world, port, steps, tmp), nprocs=world, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(world)]
    cfg = _config("wcdgan", ["data.patch=48", f"data.batch={2 * world}"])
    engine = _engine(cfg, "cuda:0")
    engine.pretrain_steps = 1 << 30
    for step in range(steps):
        engine.train_step(_batch(cfg, 2 * world, seed=100 + step))
    single = {k: v.cpu() for k, v in engine.generator.state_dict().items()}
    between = max((ranks[0][k].float() - ranks[1][k].float()).abs().max().item() for k in single)
    vs_one = max((ranks[0][k].float() - single[k].float()).abs().max().item() for k in single)
    return {"ok": between == 0.0 and vs_one <= atol, "ranks_max_difference": between,
            "vs_one_process_2b_max_difference": vs_one}


# ------------------------------------------------------------------------------ driver


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Dict[str, Any]:
    if not torch.cuda.is_available():
        return {"gpu_check": "skipped", "reason": "no GPU: torch.cuda.is_available() is False",
                "torch": torch.__version__}
    name = torch.cuda.get_device_name(0)
    peak = bf16_peak(name)
    result: Dict[str, Any] = {"gpu_check": "passed", "device": name, "gpus": torch.cuda.device_count(),
                              "bf16_peak_tflops": peak, "torch": torch.__version__, "families": {}}
    failed = []
    for family in args.families:
        row: Dict[str, Any] = {}
        for check, fn in (("amp", lambda: amp_steps(family)),
                          ("cpu_vs_gpu", lambda: cpu_vs_gpu(family, args.loss_rtol)),
                          ("eager", lambda: throughput(family, False, args.steps, args.warmup, peak)),
                          ("compiled", lambda: None if args.no_compile
                           else throughput(family, True, args.steps, args.warmup, peak))):
            try:
                row[check] = fn()
            except Exception as exc:  # noqa: BLE001  (every failure is reported, none stops the rest)
                row[check] = {"ok": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            if isinstance(row[check], dict) and row[check].get("ok") is False:
                failed.append(f"{family}.{check}")
            log(f"gpu-check: {family} {check}: {json.dumps(row[check], default=str)[:300]}")
        best = max((row[k]["achieved_tflops"] for k in ("eager", "compiled")
                    if isinstance(row.get(k), dict) and "achieved_tflops" in row[k]), default=None)
        if best:
            row["paper_recipe"] = gpu_hours_at(family, best)
        result["families"][family] = row
        torch.cuda.empty_cache()
    if torch.cuda.device_count() >= 2:
        try:
            result["ddp_nccl"] = ddp_nccl(3, args.ddp_atol)
        except Exception as exc:  # noqa: BLE001
            result["ddp_nccl"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        if not result["ddp_nccl"]["ok"]:
            failed.append("ddp_nccl")
    else:
        result["ddp_nccl"] = {"skipped": "one GPU"}
    if failed:
        result["gpu_check"], result["failed"] = "failed", failed
    return result


def table(result: Dict[str, Any]) -> str:
    """The result as one markdown table (one row per family and compile setting)."""
    lines = [f"GPU check on {result.get('device')} x{result.get('gpus')} (bf16 peak "
             f"{result.get('bf16_peak_tflops') or 'unknown'} TFLOP/s), torch {result.get('torch')}", "",
             "| family | compile | batch x patch | images/s | TFLOP/s | MFU | AMP steps | CPU vs GPU | paper recipe GPU-hours (measured rate) |",
             "|---|---|---|---:|---:|---:|---|---|---:|"]
    for family, row in result.get("families", {}).items():
        for key in ("eager", "compiled"):
            t = row.get(key)
            if not isinstance(t, dict) or "images_per_s" not in t:
                continue
            hours = row.get("paper_recipe", {}).get("gpu_hours")
            utilisation = "" if t["mfu"] is None else f"{t['mfu']:.1%}"
            lines.append(f"| {family} | {key == 'compiled'} | {t['batch']} x {t['patch']} | {t['images_per_s']:.1f} | "
                         f"{t['achieved_tflops']:.1f} | {utilisation} | "
                         f"{'ok' if row.get('amp', {}).get('ok') else 'FAIL'} | "
                         f"{'ok' if row.get('cpu_vs_gpu', {}).get('ok') else 'FAIL'} | "
                         f"{'' if hours is None else f'{hours:.2f}'} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if result["gpu_check"] == "skipped":
        print(f"gpu-check: skipped: {result['reason']}")
    else:
        print(table(result))
    line = json.dumps(result, default=str)
    print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    if result["gpu_check"] == "skipped":
        return 3 if args.require_gpu else 0
    return 0 if result["gpu_check"] == "passed" else 1


__all__ = ["BF16_PEAK_TFLOPS", "PAPER_RUNS", "bf16_peak", "build_parser", "main", "mfu", "run", "table"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
