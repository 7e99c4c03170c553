#!/usr/bin/env python
"""Pack paired images (pix2pix A|B or two aligned folders) into raygan shards (task paired).

    python jobs/make_paired_shards.py --pairs data/facades --direction BtoA --dst .raygan/facades
    python jobs/make_paired_shards.py --inputs data/sketches --targets data/photos \
        --dst s3://bucket/sketch2photo --endpoint-url http://127.0.0.1:9000

``--pairs``: images holding input|target side by side (AtoB: A, the left half, is the
input). Sub-folders train/ and val/ (or test/) become the splits, else a seeded hash with
--val-fraction. ``--inputs/--targets``: files paired by relative path without extension.
Records hold the target as ``png`` and the input as ``input.png``. Prints a JSON summary
line; exits 2 with a one-line message on bad arguments, storage errors or unusable inputs.
"""

from __future__ import annotations


import raygan  # noqa: E402,F401  (its ENV_DEFAULTS apply before Ray or MLflow load)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", metavar="DIR", help="folder of A|B side-by-side images")
    p.add_argument("--inputs", metavar="DIR", help="folder of input images (two-folder mode)")
    p.add_argument("--targets", metavar="DIR", help="folder of target images (two-folder mode)")
    p.add_argument("--dst", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    p.add_argument("--direction", choices=("AtoB", "BtoA"), default="AtoB",
                   help="A|B mode: AtoB = left half is the input (pix2pix default)")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="fraction hashed into val when there are no train/val sub-folders")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the train order")
    p.add_argument("--shard-size", type=int, default=128, metavar="N", help="samples per shard")
    p.add_argument("--min-size", type=int, default=0, metavar="PX",
                   help="skip pairs smaller than this on either side")
    p.add_argument("--endpoint-url", default=None, metavar="URL",
                   help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.pairs is None) == (args.inputs is None and args.targets is None):
        parser.error("give either --pairs DIR or both --inputs DIR and --targets DIR")
    if args.pairs is None and (args.inputs is None or args.targets is None):
        parser.error("two-folder mode needs both --inputs and --targets")
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.shard_size < 1:
        parser.error(f"--shard-size must be >= 1, got {args.shard_size}")

    from raygan.datasets.paired import write_paired_shards
    from raygan.platform.errors import ShardError, StorageError
    from raygan.platform.config import StorageConfig

    storage_cfg = StorageConfig(endpoint_url=args.endpoint_url)
    try:
        manifest = write_paired_shards(
            args.dst, pairs=args.pairs, inputs=args.inputs, targets=args.targets,
            direction=args.direction, val_fraction=args.val_fraction, seed=args.seed,
            shard_size=args.shard_size, min_size=args.min_size, storage_cfg=storage_cfg,
            progress=not args.no_progress)
    except (StorageError, ShardError, ValueError, FileNotFoundError) as exc:
        print(f"make_paired_shards: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({
        "dst": args.dst,
        "train": manifest["splits"]["train"]["count"],
        "val": manifest["splits"]["val"]["count"],
        "skipped": len(manifest["skipped"]),
        "direction": manifest["direction"],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
