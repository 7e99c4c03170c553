"""Time to quality: the gain over the degraded input on whole photos against training minutes.

    python jobs/bench_quality.py [--minutes 6] [--eval-every 1] [--sets DIR ...]
        [--variant NAME=CONFIG ...] [--out docs/quality_vs_minutes.png] [key=value ...]

Trains each variant (default: today's demo preset ``wcdgan_cpu_demo.yaml`` beside the
previous one, ``wcdgan_cpu_demo_narrow.yaml``) in this one process, one after the other, on the
demo's shards through the real training pipeline, in the preset's own layout: one process
with every core as torch threads, or ``ray.workers`` DDP processes over gloo sharing the
cores (as ``make demo`` runs it, without Ray). Every
``--eval-every`` minutes of training (the clock stops while scoring) the generator that would
be shipped (the EMA when on) restores the whole photos of ``--sets`` (default: Set14 from
``../shared/data/val`` when present, else the demo's two validation photos) and the mean gain
in PSNR-Y and PSNR-RGB over the degraded input is recorded. Prints a table and a JSON line,
and plots gain against minutes, one line per variant.
"""

from __future__ import annotations

import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import raygan  # noqa: F401  (its ENV_DEFAULTS apply before Ray or MLflow load)

import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_SET14 = ROOT.parent / "shared" / "data" / "val" / "set14"
DEFAULT_VARIANTS = ("cpu-demo=wcdgan_cpu_demo.yaml", "cpu-demo-narrow=wcdgan_cpu_demo_narrow.yaml")


def whole_photos(sets, data_cfg):
    """(input, target) tensors of every whole image of ``sets`` degraded as the task does."""
    from raygan.datasets.degradations import get_task, key_rng
    from raygan.platform.evaluation import iter_set

    task = get_task(data_cfg.task)
    out = []
    for uri in sets:
        for key, record in iter_set(uri, data_cfg):
            sample = task(record, data_cfg, key_rng(key), train=False)
            out.append((key, sample["input"][None], sample["target"][None]))
    if not out:
        raise SystemExit(f"error: no images in {', '.join(sets)}")
    return out


@torch.no_grad()
def gains(model, photos):
    """Mean (PSNR-Y gain, PSNR-RGB gain) of ``model`` over the degraded input."""
    from raygan.platform.core import metrics as M

    model.eval()
    gy = gr = 0.0
    for _, x, target in photos:
        out = model(x).float().clamp(0, 1)
        m, i = M.score(out, target, 0, None), M.score(x, target, 0, None)
        gy += float(m["psnr_y"][0] - i["psnr_y"][0])
        gr += float(m["psnr"][0] - i["psnr"][0])
    return gy / len(photos), gr / len(photos)


def train_curve(name, config, overrides, minutes, eval_every, sets, workdir, rank=0, world=1):
    """Train one variant for ``minutes`` (rank 0's clock, stopped while scoring) and return
    its curve; with ``world`` > 1 this is one DDP rank of the preset's own layout."""
    import raygan.models  # noqa: F401  (registers the families: a spawned rank starts bare)
    from raygan.datasets.pipeline import make_train_loader, resolve_data
    from raygan.platform.plan import resolve_schedule
    from raygan.platform.core.config import load_config
    from raygan.platform.engine import GANEngine, count_parameters

    dist = torch.distributed if world > 1 else None
    cfg = load_config(config, ["train.lpips_weights=off", f"workdir={workdir}", *overrides])
    torch.manual_seed(cfg.seed + rank)
    plan = resolve_data(cfg.data, cfg.storage, cfg.workdir, with_val=False)
    schedule = resolve_schedule(cfg, world, plan.train)
    wrap = None
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        def wrap(model, parallel_strategy_kwargs=None):  # ray.train.torch.prepare_model's signature
            return DistributedDataParallel(model, **(parallel_strategy_kwargs or {}))
    engine = GANEngine(cfg, device=torch.device("cpu"), wrap_model=wrap, schedule=schedule)
    val_cfg = dataclasses.replace(cfg.data, val_crop=None)  # whole photos; cfg is left as loaded
    photos = whole_photos(sets, val_cfg) if rank == 0 else []
    batches = iter(make_train_loader(plan, cfg.data, rank, world, seed=cfg.seed))
    curve = []
    if rank == 0:
        curve.append({"minutes": 0.0, "step": 0,
                      **dict(zip(("gain_y", "gain_rgb"), gains(engine.eval_generator(), photos)))})
        print(f"{name}: {config} ({count_parameters(engine.generator):,} G parameters, {world} "
              f"process(es) x {torch.get_num_threads()} threads, batch {cfg.data.batch} x "
              f"{cfg.data.patch}px each, {schedule.steps} steps)", flush=True)
    clock, next_eval = 0.0, eval_every * 60
    while True:
        t0 = time.perf_counter()
        engine.train_step(next(batches))
        clock += time.perf_counter() - t0
        done = clock >= minutes * 60 or engine.step >= schedule.steps
        score = done or clock >= next_eval
        if dist is not None:  # every rank follows rank 0's clock
            flags = torch.tensor([score, done], dtype=torch.int32)
            dist.broadcast(flags, 0)
            score, done = bool(flags[0]), bool(flags[1])
        if score:
            if rank == 0:
                gy, gr = gains(engine.eval_generator(), photos)
                curve.append({"minutes": clock / 60, "step": engine.step, "gain_y": gy, "gain_rgb": gr})
                print(f"  {name} {clock / 60:5.2f} min step {engine.step:5d}: {gy:+.3f} dB Y, "
                      f"{gr:+.3f} dB RGB", flush=True)
            if dist is not None:
                dist.barrier()  # the others wait, clocks stopped, while rank 0 scores
            next_eval += eval_every * 60
        if done:
            break
    return {"name": name, "config": config, "steps": engine.step, "processes": world,
            "threads": torch.get_num_threads(), "curve": curve}


def _ddp_rank(rank, world, port, out, args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = train_curve(*args, rank=rank, world=world)
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


def run_variant(name, config, overrides, minutes, eval_every, sets, workdir):
    """A preset with ``ray.workers`` > 1 trains as that many DDP processes over gloo, the
    cores shared among them (its ``make demo`` layout, without Ray); one worker trains in
    this process with every core as torch threads (what the platform gives a lone worker)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    import raygan.models  # noqa: F401  (registers the families)
    from raygan.platform.core.config import load_config

    args = (name, config, overrides, minutes, eval_every, sets, workdir)
    world = int(load_config(config, list(overrides)).ray.workers)
    if world <= 1:
        return train_curve(*args)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "curve.json"
        mp.spawn(_ddp_rank, args=(world, port, str(out), args), nprocs=world, join=True)
        return json.loads(out.read_text())


def plot(results, sets, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        xs = [p["minutes"] for p in r["curve"]]
        axes[0].plot(xs, [p["gain_y"] for p in r["curve"]], marker="o", label=r["name"])
        axes[1].plot(xs, [p["gain_rgb"] for p in r["curve"]], marker="o", label=r["name"])
    for ax, what in zip(axes, ("PSNR-Y", "PSNR-RGB")):
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("training minutes (2-core CPU)")
        ax.set_ylabel(f"{what} gain over the JPEG input (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Whole photos of {', '.join(Path(s).name for s in sets)}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=6.0, help="training minutes per variant")
    ap.add_argument("--eval-every", type=float, default=1.0, help="minutes between scorings")
    ap.add_argument("--sets", nargs="+", help="folders or shard sets of whole photos")
    ap.add_argument("--variant", action="append", metavar="NAME=CONFIG",
                    help=f"repeatable (default: {' '.join(DEFAULT_VARIANTS)})")
    ap.add_argument("--workdir", default=str(ROOT / ".raygan"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "quality_vs_minutes.png"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every variant")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = args.sets
    if not sets:
        if SHARED_SET14.is_dir():
            sets = [str(SHARED_SET14)]
        else:
            from raygan.datasets.samples import ensure_demo_shards

            sets = [ensure_demo_shards(args.workdir)]  # its val split: the demo's own photos
    variants = []
    for spec in args.variant or DEFAULT_VARIANTS:
        name, sep, config = spec.partition("=")
        if not sep or not name or not config:
            ap.error(f"--variant: expected NAME=CONFIG, got {spec!r}")
        variants.append((name, config))
    results = [run_variant(name, config, args.overrides, args.minutes, args.eval_every, sets, args.workdir)
               for name, config in variants]
    print(f"\n{'variant':<16}" + "".join(f"{'%g min' % m:>16}" for m in (1, 2, 4, args.minutes)))
    for r in results:
        cells = []
        for m in (1, 2, 4, args.minutes):
            done = [p for p in r["curve"] if p["minutes"] <= m + 0.05]  # the clock overshoots a little
            cells.append(f"{done[-1]['gain_y']:+.2f} Y {done[-1]['gain_rgb']:+.2f}" if done else "-")
        print(f"{r['name']:<16}" + "".join(f"{c:>16}" for c in cells))
    plot(results, sets, args.out)
    print(json.dumps({"sets": sets, "minutes": args.minutes, "threads": args.threads,
                      "png": args.out, "variants": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
