#!/usr/bin/env python
"""Pack image folders into raygan WebDataset shards (local folder or s3://bucket/prefix).

    python jobs/make_shards.py --src data/DIV2K_train_HR --dst s3://bucket/div2k \
        --val-src data/Set5 data/Set14 --val-fraction 0 --endpoint-url http://127.0.0.1:9000

Prints the manifest summary as one JSON line on stdout. Exits 2 with a one-line message
on bad arguments, storage errors or unusable inputs. Credentials come from the AWS chain.
"""

from __future__ import annotations


import raygan  # noqa: E402,F401  (its ENV_DEFAULTS apply before Ray or MLflow load)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", nargs="+", default=[], metavar="DIR",
                   help="image folders (recursive) split into train/val by hash")
    p.add_argument("--dst", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    p.add_argument("--val-src", nargs="+", default=[], metavar="DIR",
                   help="folders routed entirely to the val split (e.g. Set5, Set14)")
    p.add_argument("--shard-size", type=int, default=128, metavar="N", help="samples per shard")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="fraction of --src images hashed into val (0 allowed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the train order")
    p.add_argument("--min-size", type=int, default=32, metavar="PX",
                   help="skip images smaller than this on either side")
    p.add_argument("--endpoint-url", default=None, metavar="URL",
                   help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--parallel", choices=("auto", "ray", "none"), default="auto",
                   help="encode with Ray tasks (auto: from 64 files on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.src and not args.val_src:
        parser.error("give at least one --src or --val-src folder")
    if args.shard_size < 1:
        parser.error(f"--shard-size must be >= 1, got {args.shard_size}")
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.min_size < 0:
        parser.error(f"--min-size must be >= 0, got {args.min_size}")

    from raygan.datasets.shards import write_shards
    from raygan.platform.errors import ShardError, StorageError
    from raygan.platform.config import StorageConfig

    storage_cfg = StorageConfig(endpoint_url=args.endpoint_url)
    try:
        manifest = write_shards(
            args.src, args.dst, shard_size=args.shard_size, val_fraction=args.val_fraction,
            seed=args.seed, min_size=args.min_size, parallel=args.parallel,
            storage_cfg=storage_cfg, progress=not args.no_progress, val_sources=args.val_src,
        )
    except (StorageError, ShardError) as exc:
        print(f"make_shards: error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "dst": args.dst,
        "train": manifest["splits"]["train"]["count"],
        "val": manifest["splits"]["val"]["count"],
        "train_shards": len(manifest["splits"]["train"]["shards"]),
        "val_shards": len(manifest["splits"]["val"]["shards"]),
        "skipped": len(manifest["skipped"]),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
