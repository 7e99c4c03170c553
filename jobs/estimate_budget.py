"""Estimated GPU-hours of every paper row (docs/reproduce.md): estimated, not measured.

    python jobs/estimate_budget.py [--gpu-tflops 31.2] [--only dagan.yaml ...]

For each paper config: its iterations, resolved as a run resolves them (train.epochs in the
config's epoch unit) from an assumed training set (:data:`DATASETS`, below: the sizes the
papers' data sets have, approximated where they vary), times the FLOPs of one iteration
counted on this machine (raygan.platform.budget.flops_per_iteration: one real training
step at batch 1 under torch.utils.flop_counter, times data.batch), divided by an assumed
sustained throughput (raygan.platform.budget.ASSUMED_GPU, or --gpu-tflops). Counting takes
a few CPU seconds to minutes per architecture (PAN's and face SR's are the largest).
Replace the assumption with the throughput a GPU run measures (images/s in the run's
summary) when there is one.
"""
import _checkout  # noqa: F401,I001  (this checkout's raygan, not an installed one: jobs/_checkout.py)
import argparse
import json
import math
import sys

import raygan  # noqa: F401

#: assumed training sets: name -> [(width, height, count)]. DIV2K's 800 training images are
#: 2040 px on the long side with varying short sides; 2040x1356 is the most common size and
#: stands for all (real counts, from the manifest at run start, differ by a few per cent).
DATASETS = {
    "DIV2K train (800, ~2040x1356)": [(2040, 1356, 800)],
    "DequantizerNet's 8,000 training images": [(500, 375, 8000)],
    "CelebA train split (162,770, 178x218)": [(178, 218, 162_770)],
}

#: (row, config, overrides, data set or None for configs given in iterations)
ROWS = [
    ("WCDGAN Table 1 (Y), q5 / q10 / q20, each", "wcdgan_y_q10.yaml", [], "DIV2K train (800, ~2040x1356)"),
    ("WCDGAN Table 2 (RGB), q5 / q10, each", "wcdgan_rgb_q10.yaml", [], "DIV2K train (800, ~2040x1356)"),
    ("DAGAN k=4 / k=6, each", "dagan.yaml", [], "DIV2K train (800, ~2040x1356)"),
    ("DequantizerNet Alef / Beta (R=5), each", "dequantizer_alef.yaml", [], "DequantizerNet's 8,000 training images"),
    ("DequantizerNet Gimel / Phi (R=10), each", "dequantizer_gimel.yaml", [], "DequantizerNet's 8,000 training images"),
    ("Face SR method 1 (CNN)", "facesr_cnn.yaml", [], None),
    ("Face SR method 2 (GAN)", "facesr_gan.yaml", [], None),
    ("PAN SR x4 (full; each ablation row at most this)", "pan_sr.yaml", [], None),
    ("PAN inpainting", "pan_inpaint.yaml", [], "CelebA train split (162,770, 178x218)"),
]


class _Sizes:
    """What resolve_schedule reads of a ShardSet: the count and the image sizes."""

    def __init__(self, sizes):
        self.image_sizes = [tuple(s) for s in sizes]
        self.count = sum(n for _, _, n in sizes)
        self.uri, self.manifest, self.split = "(assumed)", {}, "train"


def estimate(config, overrides, dataset, tflops):
    import raygan.datasets.tasks  # noqa: F401
    import raygan.models  # noqa: F401
    from raygan.datasets.pipeline import resolve_schedule
    from raygan.platform.budget import flops_per_iteration, gpu_hours
    from raygan.platform.config import load_config

    cfg = load_config(config, ["train.init_from=null", *overrides])
    shards = _Sizes(DATASETS[dataset]) if dataset else None
    resolved, spe = resolve_schedule(cfg, 1, shards)
    t = resolved.train
    pre = t.pretrain_steps if t.pretrain_steps is not None else int(math.ceil(t.pretrain_epochs * spe))
    pre = min(pre, t.steps)
    flops = flops_per_iteration(resolved)
    hours = gpu_hours(flops["adversarial"], t.steps - pre, tflops, flops["pretrain"], pre)
    return {"iterations": t.steps, "pretrain_iterations": pre, "iterations_per_epoch": spe,
            "gflop_pretrain": flops["pretrain"] / 1e9, "gflop_adversarial": flops["adversarial"] / 1e9,
            "gpu_hours": hours}


def main(argv=None) -> int:
    from raygan.platform.budget import ASSUMED_GPU, format_hours

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu-tflops", type=float, default=ASSUMED_GPU.sustained_tflops,
                    help=f"assumed sustained TFLOP/s (default {ASSUMED_GPU.sustained_tflops:.1f}: "
                         f"{ASSUMED_GPU.name}, {ASSUMED_GPU.utilization:.0%} of {ASSUMED_GPU.peak_tflops:g})")
    ap.add_argument("--only", nargs="*", help="config names to estimate (default: all rows)")
    ap.add_argument("--json", action="store_true", help="one JSON line per row instead of a table")
    args = ap.parse_args(argv)
    print(f"Estimated, not measured: FLOPs counted per iteration on the CPU x iterations / "
          f"{args.gpu_tflops:.1f} TFLOP/s sustained (assumed: {ASSUMED_GPU.name}).\n")
    if not args.json:
        print("| row | config | training set (assumed) | iterations (G-only + adversarial) | "
              "GFLOP / iteration (G-only, adversarial) | GPU-hours (estimated) |")
        print("|---|---|---|---|---|---|")
    for row, config, overrides, dataset in ROWS:
        if args.only and config not in args.only:
            continue
        r = estimate(config, overrides, dataset, args.gpu_tflops)
        if args.json:
            print(json.dumps({"row": row, "config": config, "dataset": dataset, **r}), flush=True)
            continue
        its = f"{r['pretrain_iterations']:,} + {r['iterations'] - r['pretrain_iterations']:,}"
        print(f"| {row} | `{config}` | {dataset or '- (given in iterations)'} | {its} | "
              f"{r['gflop_pretrain']:,.0f}, {r['gflop_adversarial']:,.0f} | "
              f"{format_hours(r['gpu_hours'])} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
