#!/usr/bin/env python
"""Pack CelebAMask-HQ faces and their 11 face-parsing maps into raygan shards (task face_sr).

    python jobs/make_face_shards.py --src data/CelebAMask-HQ --dst s3://bucket/celebamask128 \
        --val-last 2000 --endpoint-url http://127.0.0.1:9000
    python jobs/make_face_shards.py --synthetic 64 --dst .raygan/faces-demo   # no data needed

``--src`` is the CelebAMask-HQ root (``CelebA-HQ-img/``, ``CelebAMask-HQ-mask-anno/``),
local or s3://. ``--synthetic N`` draws N cartoon faces with exact part maps in that layout
(for demos and smoke tests) and ingests them. Prints a JSON summary line; exits 2 with a
one-line message on bad arguments, storage errors or unusable inputs.
"""

from __future__ import annotations


import raygan  # noqa: E402,F401  (its ENV_DEFAULTS apply before Ray or MLflow load)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--src", metavar="DIR", help="CelebAMask-HQ root folder or s3:// prefix")
    src.add_argument("--synthetic", type=int, metavar="N", help="generate N synthetic faces instead")
    p.add_argument("--dst", required=True, metavar="URI", help="output folder or s3://bucket/prefix")
    p.add_argument("--size", type=int, default=128, metavar="PX", help="face size (default 128)")
    p.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="fraction of faces hashed into val (ignored with --val-last)")
    p.add_argument("--val-last", type=int, default=0, metavar="N",
                   help="put the N highest-numbered faces in val (a fixed split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the train order")
    p.add_argument("--shard-size", type=int, default=128, metavar="N", help="samples per shard")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N faces")
    p.add_argument("--parallel", choices=("auto", "ray", "none"), default="auto",
                   help="decode with Ray tasks (auto: from 256 faces on)")
    p.add_argument("--endpoint-url", default=None, metavar="URL",
                   help="S3 endpoint (default: AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.size < 8 or args.size % 8:
        parser.error(f"--size must be a positive multiple of 8, got {args.size}")
    if not 0 <= args.val_fraction < 1:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.shard_size < 1:
        parser.error(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.synthetic is not None and args.synthetic < 1:
        parser.error(f"--synthetic must be >= 1, got {args.synthetic}")

    from raygan.datasets.faces import make_synthetic_celebamask, write_face_shards
    from raygan.platform.errors import ShardError, StorageError
    from raygan.platform.config import StorageConfig

    storage_cfg = StorageConfig(endpoint_url=args.endpoint_url)
    tmp = None
    try:
        src = args.src
        if args.synthetic is not None:
            tmp = tempfile.TemporaryDirectory(prefix="raygan-synthetic-faces-")
            make_synthetic_celebamask(tmp.name, args.synthetic, image_size=2 * args.size,
                                      mask_size=2 * args.size, face_size=args.size, seed=args.seed)
            src = tmp.name
        manifest = write_face_shards(
            src, args.dst, size=args.size, val_fraction=args.val_fraction,
            val_last=args.val_last, seed=args.seed, shard_size=args.shard_size, limit=args.limit,
            parallel=args.parallel, storage_cfg=storage_cfg, progress=not args.no_progress)
    except (StorageError, ShardError, ValueError, FileNotFoundError) as exc:
        print(f"make_face_shards: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if tmp is not None:
            tmp.cleanup()
    print(json.dumps({
        "dst": args.dst,
        "train": manifest["splits"]["train"]["count"],
        "val": manifest["splits"]["val"]["count"],
        "skipped": len(manifest["skipped"]),
        "size": args.size,
        "parts": manifest["parts"],
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
