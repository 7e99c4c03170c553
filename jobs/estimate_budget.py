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
import sys

import raygan  # noqa: F401


def main(argv=None) -> int:
    from raygan.platform.budget import ASSUMED_GPU, ROWS, estimate, format_hours

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
