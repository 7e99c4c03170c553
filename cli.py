"""The ``raygan`` command (``[project.scripts]``; also ``python -m raygan``).

    raygan train <family> [--data URI] [--steps N] ... [key=value ...]
    raygan sweep --family F --space losses|lr|ablation|FILE [--trials N] [--promote] ...
    raygan evaluate --model URI|baseline ... --sets DIR|SHARDS ... [data.key=value ...]
    raygan serve [--task NAME=MODEL_URI ...] [--config serve_config.yaml]
    raygan restore --model MODEL_URI IN OUT
    raygan shards folder|faces|paired ...
    raygan check [<family> [train options]] [--data URI] [--model URI]
    raygan completion bash

``raygan <command> --help`` is the reference of each. The ``jobs/*.py`` scripts (what
``ray job submit`` runs from a checkout) call the same functions: ``jobs/train_<family>.py``
-> :func:`raygan.platform.cli.train_main`, ``jobs/sweep.py`` -> ``sweep_main``,
``jobs/evaluate.py`` -> :func:`evaluate_main`, ``jobs/serve.py`` -> :func:`serve_main`,
``jobs/make_shards.py`` / ``make_face_shards.py`` / ``make_paired_shards.py`` ->
:func:`shards_folder_main` / :func:`shards_faces_main` / :func:`shards_paired_main`.

Exit status: 0 done, 1 some files failed (restore) or an unexpected error, 2 bad input (one
line saying what and where).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import raygan  # noqa: F401  (its ENV_DEFAULTS apply before Ray or MLflow load)

Main = Callable[[List[str]], int]


def _error(prog: str, exc: BaseException) -> int:
    """``prog: error: <one line>`` on stderr; the exit status (:func:`error_line`)."""
    from raygan.platform.core.errors import error_line

    message, status = error_line(exc)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return status


# ----------------------------------------------------------------------------- train / sweep


def train_cmd(argv: List[str]) -> int:
    import raygan.models  # noqa: F401  (fills FAMILIES)
    from raygan.platform.cli import train_main
    from raygan.platform.core.registry import FAMILIES

    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"  {name:12s} task {FAMILIES.get(name).task}, default config "
                 f"{FAMILIES.get(name).default_config}" for name in sorted(FAMILIES)]
        print("usage: raygan train <family> [options] [key=value ...]\n\nTrain a GAN family on Ray "
              "(a private local Ray, or the cluster in RAY_ADDRESS / --address).\n\nfamilies:\n"
              + "\n".join(lines) + "\n\n`raygan train <family> --help` lists the options.")
        return 0 if argv else 2
    family, rest = argv[0], argv[1:]
    if family not in FAMILIES:
        close = difflib.get_close_matches(family, list(FAMILIES), 1)
        print(f"raygan train: error: unknown family {family!r}"
              + (f" (did you mean {close[0]!r}?)" if close else "")
              + f"; families: {', '.join(sorted(FAMILIES))}", file=sys.stderr)
        return 2
    return train_main(family, rest, prog=f"raygan train {family}")


def sweep_cmd(argv: List[str]) -> int:
    from raygan.platform.sweep import sweep_main

    return sweep_main(argv, prog="raygan sweep")


# ----------------------------------------------------------------------------- evaluate

EVALUATE_DOC = """Evaluate restoration models and baselines on image sets; print and save the table.

    raygan evaluate --task jpeg --model models:/raygan-wcdgan-jpeg-q10-rgb/1 input \\
        --sets ../shared/data/val/set5 ../shared/data/val/set14 data.quality=10

--model takes registered models (models:/name/version, models:/name@alias), run models
(runs:/<id>/generator), checkpoint directories (local or s3://) and baselines (input, zp,
mig, br, bicubic). The table (markdown + CSV) and comparison grids go to --out and to an
MLflow run.

--protocol (default: the paper's, see raygan.platform.evaluation):
  y         the BT.601 studio-range Y image is degraded, restored and scored; grayscale
            images are used as they are (WCDGAN Table 1; models trained on Y)
  rgb       RGB degraded, restored and scored on RGB (WCDGAN Table 2, face SR, PAN)
  rgb-y     RGB degraded and restored, the paper's metric on Y (DAGAN bit depth)
  rgb-sq96  each image's centred largest square resized to 96x96, as in training, then rgb
            (DequantizerNet)
Without --protocol, the first trained model's family decides (its paper's protocol for the
model's channel count: wcdgan Y -> y, RGB -> rgb; a 3-channel model of a Y-protocol family
gets rgb-y, a 1-channel model y); with baselines only, the task: jpeg -> y, bitdepth ->
rgb-y, others -> rgb. The table header says which
protocol was used, why, and marks the paper's metric columns with *.

Images are scored whole (a model's data.val_crop is its training validation's and does not
carry; data.val_crop=N crops explicitly). --tile N [--overlap M] restores trained models in
overlapping tiles (DAGAN's default: 256 / 32, its self-attention over a whole photo does not
fit in memory; --tile 0: whole). When a row matches one of the papers' headline rows
(raygan.models.papers: family, task, set, protocol, settings), the paper's number is printed
beside the measured one.
"""

#: raygan.platform.evaluation.PROTOCOLS' names (tests/test_evaluate.py keeps them equal;
#: written out so that --help needs no torch import)
PROTOCOL_NAMES = ("y", "rgb", "rgb-y", "rgb-sq96")


def evaluate_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=EVALUATE_DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs="+", required=True, help="models and/or baselines")
    ap.add_argument("--task", help="degradation task (default: the first trained model's)")
    ap.add_argument("--sets", nargs="+", required=True, help="image folders or shard sets")
    ap.add_argument("--protocol", choices=PROTOCOL_NAMES, default=None,
                    help="y: degrade, restore and score the BT.601 Y image (grayscale images as "
                         "they are); rgb: RGB; rgb-y: RGB scored on Y; rgb-sq96: centred squares "
                         "resized to 96x96, then rgb (default: the paper's protocol of the "
                         "model's family, or of the task for baselines)")
    ap.add_argument("--tile", type=int, default=None,
                    help="restore trained models in tiles of N input pixels (default: the "
                         "family's, DAGAN 256; 0: whole images)")
    ap.add_argument("--overlap", type=int, default=None,
                    help="tile overlap in pixels (default: the family's, else 32)")
    ap.add_argument("--border", type=int, default=0, help="pixels cropped per side before metrics")
    ap.add_argument("--lpips-weights", default="auto", help="auto | off | path to alexnet weights")
    ap.add_argument("--grid-images", type=int, default=3)
    ap.add_argument("--max-images", type=int, default=None)
    ap.add_argument("--out", default=None, help="output folder (default .raygan/eval/<time>)")
    ap.add_argument("--experiment", default="raygan-eval")
    ap.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI or .raygan/mlflow.db")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("overrides", nargs="*", metavar="data.key=value")
    # key=value overrides may stand anywhere (after --sets too): take them out first.
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if re.match(r"^[A-Za-z_][\w.]*=", a)]
    args = ap.parse_args([a for a in argv if a not in overrides])
    args.overrides = overrides
    prog = ap.prog

    from PIL import Image

    from raygan.platform.core.config import resolve_tracking_uri
    from raygan.platform.core.errors import CheckpointError, ConfigError, StorageError
    from raygan.platform.evaluation import data_config, evaluate, to_csv
    from raygan.platform.restorer import load_generator

    uri = resolve_tracking_uri(args.tracking_uri)  # models:/ and runs:/ load from it too
    try:
        base = None
        for m in args.model:  # a trained model's own data settings are the defaults
            if "/" in m or Path(m).exists():
                base = load_generator(m, uri)[1].get("data")
                break
        task = args.task or (base or {}).get("task")
        if not task:
            raise ConfigError("--task is required when only baselines are evaluated")
        data_cfg = data_config(task, args.overrides, base)
        result = evaluate(args.model, args.sets, data_cfg, protocol=args.protocol,
                          border=args.border, lpips_weights=args.lpips_weights,
                          grid_images=args.grid_images, progress=not args.no_progress,
                          max_images=args.max_images, tracking_uri=uri, tile=args.tile,
                          overlap=args.overlap)
    except (ValueError, StorageError, CheckpointError, FileNotFoundError, KeyError) as exc:
        # ValueError: ConfigError, EvaluationError, ShardError; KeyError: a missing data key
        return _error(prog, exc)
    out = Path(args.out or f".raygan/eval/{time.strftime('%Y%m%d-%H%M%S')}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(result["markdown"])
    (out / "table.csv").write_text(to_csv(result["rows"]))
    for name, grid in result["grids"].items():
        Image.fromarray(grid).save(out / f"grid_{name}.png")
    print(result["markdown"])
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
            for r in result["rows"]]  # NaN (LPIPS without weights) is not JSON
    for r in rows:  # the paper's numbers beside the measured ones, as plain data
        r["paper"] = [{"paper": e["row"].paper, "table": e["row"].table, "row": e["row"].label,
                       "metric": e["metric"], "value": e["paper"], "measured": e["measured"],
                       "delta": e["delta"]} for e in r.get("paper", [])]
    summary = {"out": str(out), "protocol": result["protocol"], "header": result["header"],
               "tile": result["tile"], "rows": rows}
    if not args.no_mlflow:
        import mlflow

        mlflow.set_tracking_uri(uri)
        from raygan.platform.tracking import get_or_create_experiment

        exp = get_or_create_experiment(uri, args.experiment, ".raygan")
        with mlflow.start_run(experiment_id=exp, run_name=f"eval-{data_cfg.task}") as run:
            mlflow.log_params({"models": ",".join(args.model), "sets": ",".join(args.sets),
                               "task": data_cfg.task, "protocol": result["protocol"], "border": args.border})
            for r in result["rows"]:
                for k in ("psnr", "ssim", "psnr_y", "ssim_y", "lpips"):
                    if r[k] == r[k]:
                        mlflow.log_metric(f"{r['set']}.{r['model'].replace(':', '_').replace('/', '_')}.{k}", r[k])
            mlflow.log_artifacts(str(out), artifact_path="evaluation")
            summary["mlflow_run_id"] = run.info.run_id
    print(json.dumps(summary, default=str))
    return 0


# ----------------------------------------------------------------------------- serve

SERVE_DOC = """Serve the restoration endpoints on Ray Serve (a local Ray, or RAY_ADDRESS).

    RAYGAN_SERVE_TOKEN=... raygan serve --task jpeg=models:/raygan-wcdgan-jpeg-q10-rgb@champion

reads deploy/serve_config.yaml (the same application `serve run` / `serve deploy` and the
KubeRay RayService use), keeps the tasks given with --task (each `name=<model URI>`; a new
name gets the options of the config's first restore deployment), starts Serve and blocks
until Ctrl-C. Without --task, every task of the config whose model resolves is served (a
`@champion` no version carries yet is skipped, one line each). Open http://127.0.0.1:8000/
for the page, /docs for the API; `python -m raygan.deploy.client` restores files and
folders through it, `raygan restore` without it. On a cluster (RAY_ADDRESS) this raygan is
shipped to the replicas and checked on every node.

For `serve deploy` (or `serve run`, or a RayService), which take a file and would import the
raygan installed on the nodes, write the config with this raygan in it instead:

    raygan serve --code-uri s3://bucket/raygan-code --write-config serve.yaml [--task ...]
    serve deploy serve.yaml

publishes this raygan as a zip under --code-uri (S3, or a folder every node mounts), sets
the application's runtime_env.py_modules to it and RAYGAN_CODE to its fingerprint; every
replica refuses to start on other code, and /healthz reports the code it runs.
"""


def serve_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=SERVE_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="Serve config YAML (default: deploy/serve_config.yaml)")
    p.add_argument("--task", action="append", default=[], metavar="NAME=MODEL_URI",
                   help="serve this task with this model (repeatable); replaces the config's tasks")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking/registry URI (default: the runs')")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: the config's, 8000)")
    p.add_argument("--host", default=None, help="HTTP host (default: the config's, 127.0.0.1)")
    p.add_argument("--write-config", metavar="FILE", default=None,
                   help="write a Serve config that runs this raygan (for serve deploy) and exit; needs --code-uri")
    p.add_argument("--code-uri", metavar="URI", default=None,
                   help="where --write-config publishes this raygan: s3://bucket/prefix or a folder every node mounts")
    args = p.parse_args(argv)
    prog = p.prog
    if bool(args.write_config) != bool(args.code_uri):
        p.error("--write-config and --code-uri go together")

    from raygan.deploy.app import read_token
    from raygan.deploy.serving import load_serve_config, run_local
    from raygan.platform.core.errors import StorageError

    try:
        if not args.write_config:  # a written config's token is the cluster's (never in the file)
            read_token()
        tasks = {}
        for item in args.task:
            name, sep, uri = item.partition("=")
            if not sep or not name or not uri:
                raise ValueError(f"--task {item!r}: expected NAME=MODEL_URI")
            tasks[name] = uri
        config = load_serve_config(args.config, tasks, args.tracking_uri, args.host, args.port)
        if args.write_config:
            from raygan.deploy.serving import write_deploy_config

            done = write_deploy_config(config, args.code_uri, args.write_config)
            print(f"raygan: wrote {done['config']}: raygan {done['code']} from {done['code_uri']}; "
                  f"deploy it with `serve deploy {done['config']}`", flush=True)
            return 0
        url = run_local(config)
    except (ValueError, RuntimeError, FileNotFoundError, StorageError) as exc:  # ModelRefError: a RuntimeError
        return _error(prog, exc)
    print(f"raygan: serving {sorted(config['app']['args']['tasks'])} at {url}/ (API docs {url}/docs); "
          "Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


# ----------------------------------------------------------------------------- restore

RESTORE_DOC = """Restore a photo or a folder of photos with a trained model, without a server.

    raygan restore --model models:/raygan-wcdgan-jpeg-q10-rgb@champion photos/ restored/
    raygan restore --model .raygan/ray/<run>/checkpoint_00000400 scan.jpg scan-restored.png

MODEL is a model URI: models:/name@alias, models:/name/<version>, runs:/<id>/generator, or
a checkpoint folder (local or s3://). IN is an image file or a folder (restored
recursively; relative paths kept under OUT, the extension from --format). Any size goes
through the endpoint's overlapping tiles; grayscale, 16-bit, alpha and EXIF orientation are
handled as the endpoint handles them (grayscale in, grayscale out; 16-bit scaled to 8 bits;
transparency composited on white; the photo as a phone shows it). Uses every core (torch
threads) or the GPU. An input is never overwritten. One line per file that failed;
exit status 1 if any did, 2 when nothing could start (model, paths).
"""


def restore_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=RESTORE_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="IN", help="an image file or a folder of images")
    p.add_argument("dst", metavar="OUT", help="the output file, or a folder")
    p.add_argument("--model", required=True, metavar="MODEL_URI", help="the model (see above)")
    p.add_argument("--format", choices=("png", "jpeg", "webp"), default=None,
                   help="output format (default: OUT's extension for a file, else png)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size in input pixels (default: the endpoint's, 256; 96 for dagan)")
    p.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels (default 32)")
    p.add_argument("--bits", type=int, default=None,
                   help="bit depth of 16-bit inputs that hold fewer bits (e.g. 12)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI for models:/ and runs:/ "
                   "(default: MLFLOW_TRACKING_URI or .raygan/mlflow.db)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    prog = p.prog

    from raygan.deploy.offline import restore_paths

    try:
        summary = restore_paths(args.model, args.src, args.dst, fmt=args.format, quality=args.quality,
                                tile=args.tile, overlap=args.overlap, bits=args.bits,
                                threads=args.threads, device=args.device,
                                tracking_uri=args.tracking_uri,
                                progress=False if args.no_progress else None)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:  # ModelRefError, RestorePlanError
        return _error(prog, exc)
    failed = len(summary["failed"])
    print(f"restored {summary['restored']} image(s) into {args.dst} with {summary['model']} "
          f"(v{summary['version']}, {summary['device']}, {summary['threads']} threads), {failed} failed",
          flush=True)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- shards

SHARDS_FOLDER_DOC = """Pack image folders into raygan shards (local folder or s3://bucket/prefix).

    raygan shards folder --src data/DIV2K_train_HR --dst s3://bucket/div2k \\
        --val-src data/Set5 data/Set14 --val-fraction 0 --endpoint-url http://127.0.0.1:9000

Prints the manifest summary as one JSON line on stdout. Exits 2 with a one-line message
on bad arguments, storage errors or unusable inputs. Credentials come from the AWS chain.
Shards other tools wrote (webdataset.ShardWriter, img2dataset, `tar` of photos) need no
packing: give their folder as --data, they are indexed on first use.
"""


def shards_folder_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=SHARDS_FOLDER_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args(argv)
    if not args.src and not args.val_src:
        p.error("give at least one --src or --val-src folder")
    if args.shard_size < 1:
        p.error(f"--shard-size must be >= 1, got {args.shard_size}")
    if not 0 <= args.val_fraction < 1:
        p.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.min_size < 0:
        p.error(f"--min-size must be >= 0, got {args.min_size}")

    from raygan.datasets.shards import write_shards
    from raygan.platform.core.config import StorageConfig
    from raygan.platform.core.errors import ShardError, StorageError

    try:
        manifest = write_shards(
            args.src, args.dst, shard_size=args.shard_size, val_fraction=args.val_fraction,
            seed=args.seed, min_size=args.min_size, parallel=args.parallel,
            storage_cfg=StorageConfig(endpoint_url=args.endpoint_url), progress=not args.no_progress,
            val_sources=args.val_src)
    except (StorageError, ShardError) as exc:
        return _error(p.prog, exc)
    print(json.dumps({
        "dst": args.dst,
        "train": manifest["splits"]["train"]["count"],
        "val": manifest["splits"]["val"]["count"],
        "train_shards": len(manifest["splits"]["train"]["shards"]),
        "val_shards": len(manifest["splits"]["val"]["shards"]),
        "skipped": len(manifest["skipped"]),
    }), flush=True)
    return 0


SHARDS_FACES_DOC = """Pack CelebAMask-HQ faces and their 11 face-parsing maps into raygan shards (task face_sr).

    raygan shards faces --src data/CelebAMask-HQ --dst s3://bucket/celebamask128 \\
        --val-last 2000 --endpoint-url http://127.0.0.1:9000
    raygan shards faces --synthetic 64 --dst .raygan/faces-demo   # no data needed

--src is the CelebAMask-HQ root (CelebA-HQ-img/, CelebAMask-HQ-mask-anno/), local or s3://.
--synthetic N draws N cartoon faces with exact part maps in that layout (for demos and
smoke tests) and ingests them. Prints a JSON summary line; exits 2 with a one-line message
on bad arguments, storage errors or unusable inputs.
"""


def shards_faces_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(prog=prog, description=SHARDS_FACES_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args(argv)
    if args.size < 8 or args.size % 8:
        p.error(f"--size must be a positive multiple of 8, got {args.size}")
    if not 0 <= args.val_fraction < 1:
        p.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.shard_size < 1:
        p.error(f"--shard-size must be >= 1, got {args.shard_size}")
    if args.synthetic is not None and args.synthetic < 1:
        p.error(f"--synthetic must be >= 1, got {args.synthetic}")

    from raygan.datasets.faces import make_synthetic_celebamask, write_face_shards
    from raygan.platform.core.config import StorageConfig
    from raygan.platform.core.errors import ShardError, StorageError

    tmp = None
    try:
        source = args.src
        if args.synthetic is not None:
            tmp = tempfile.TemporaryDirectory(prefix="raygan-synthetic-faces-")
            make_synthetic_celebamask(tmp.name, args.synthetic, image_size=2 * args.size,
                                      mask_size=2 * args.size, face_size=args.size, seed=args.seed)
            source = tmp.name
        manifest = write_face_shards(
            source, args.dst, size=args.size, val_fraction=args.val_fraction,
            val_last=args.val_last, seed=args.seed, shard_size=args.shard_size, limit=args.limit,
            parallel=args.parallel, storage_cfg=StorageConfig(endpoint_url=args.endpoint_url),
            progress=not args.no_progress)
    except (StorageError, ShardError, ValueError, FileNotFoundError) as exc:
        return _error(p.prog, exc)
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


SHARDS_PAIRED_DOC = """Pack paired images (pix2pix A|B or two aligned folders) into raygan shards (task paired).

    raygan shards paired --pairs data/facades --direction BtoA --dst .raygan/facades
    raygan shards paired --inputs data/sketches --targets data/photos \\
        --dst s3://bucket/sketch2photo --endpoint-url http://127.0.0.1:9000

--pairs: images holding input|target side by side (AtoB: A, the left half, is the input).
Sub-folders train/ and val/ (or test/) become the splits, else a seeded hash with
--val-fraction. --inputs/--targets: files paired by relative path without extension.
Records hold the target as png and the input as input.png. Prints a JSON summary line;
exits 2 with a one-line message on bad arguments, storage errors or unusable inputs.
"""


def shards_paired_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    p = argparse.ArgumentParser(prog=prog, description=SHARDS_PAIRED_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = p.parse_args(argv)
    if (args.pairs is None) == (args.inputs is None and args.targets is None):
        p.error("give either --pairs DIR or both --inputs DIR and --targets DIR")
    if args.pairs is None and (args.inputs is None or args.targets is None):
        p.error("two-folder mode needs both --inputs and --targets")
    if not 0 <= args.val_fraction < 1:
        p.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.shard_size < 1:
        p.error(f"--shard-size must be >= 1, got {args.shard_size}")

    from raygan.datasets.paired import write_paired_shards
    from raygan.platform.core.config import StorageConfig
    from raygan.platform.core.errors import ShardError, StorageError

    try:
        manifest = write_paired_shards(
            args.dst, pairs=args.pairs, inputs=args.inputs, targets=args.targets,
            direction=args.direction, val_fraction=args.val_fraction, seed=args.seed,
            shard_size=args.shard_size, min_size=args.min_size,
            storage_cfg=StorageConfig(endpoint_url=args.endpoint_url), progress=not args.no_progress)
    except (StorageError, ShardError, ValueError, FileNotFoundError) as exc:
        return _error(p.prog, exc)
    print(json.dumps({
        "dst": args.dst,
        "train": manifest["splits"]["train"]["count"],
        "val": manifest["splits"]["val"]["count"],
        "skipped": len(manifest["skipped"]),
        "direction": manifest["direction"],
    }), flush=True)
    return 0


SHARDS = {"folder": (shards_folder_main, "pack image folders (train/val split by hash)"),
          "faces": (shards_faces_main, "pack CelebAMask-HQ faces + parsing maps (or synthetic ones)"),
          "paired": (shards_paired_main, "pack input/target pairs (pix2pix A|B or two folders)")}


def shards_cmd(argv: List[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SHARDS:
        lines = "\n".join(f"  {k:8s} {why}" for k, (_, why) in SHARDS.items())
        text = (f"usage: raygan shards {{{','.join(SHARDS)}}} ...\n\nWrite raygan shard sets (a "
                f"folder or s3://bucket/prefix with manifest.json).\n\nkinds:\n{lines}\n\n"
                "Shards other tools wrote (webdataset.ShardWriter, img2dataset, `tar` of photos) "
                "train as they are: give their folder as --data.")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"raygan shards: error: unknown kind {argv[0]!r}\n{text}", file=sys.stderr)
            return 2
        print(text)
        return 0 if argv else 2
    kind = argv[0]
    return SHARDS[kind][0](argv[1:], f"raygan shards {kind}")


# ----------------------------------------------------------------------------- check

CHECK_DOC = """Check the installation and what a run needs, without training.

    raygan check                          # versions, devices, weight files, MLflow, Ray
    raygan check --data s3://bucket/shards --model models:/raygan-wcdgan-jpeg-q10-rgb@champion
    raygan check wcdgan --data photos-shards train.steps=1000   # = raygan train wcdgan --check

With a family, the run is resolved exactly as `raygan train <family> ... --check` does
(config, weights, data, schedule; one JSON line). Otherwise one line per item: ok, warn
(works, with a caveat: e.g. missing VGG19 weights, which only the configs using them need)
or fail. Exit status 1 when an item fails.
"""


def _weights_line(filename: str, what: str, key: str, off: str) -> Tuple[str, str]:
    from raygan.platform.core.perceptual import hub_checkpoint_path

    path = hub_checkpoint_path(filename)
    if path.is_file():
        return "ok", f"{what} weights: {path}"
    return "warn", (f"{what} weights: missing; {key}=auto needs {filename} at {path} "
                    f"(the torchvision file; never downloaded), or set {key}=<file> or {key}={off}")


def check_main(argv: Optional[List[str]] = None, prog: Optional[str] = None) -> int:
    import raygan.models  # noqa: F401  (fills FAMILIES)
    from raygan.platform.core.registry import FAMILIES

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FAMILIES:
        from raygan.platform.cli import train_main

        return train_main(argv[0], argv[1:] + ["--check"], prog=f"{prog or 'raygan check'} {argv[0]}")
    p = argparse.ArgumentParser(prog=prog, description=CHECK_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a shard set to open (indexed on first use when it has no manifest)")
    p.add_argument("--model", help="a model URI to resolve and load")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default: MLFLOW_TRACKING_URI or .raygan/mlflow.db)")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint for --data")
    p.add_argument("--json", action="store_true", help="print the items as one JSON line")
    args = p.parse_args(argv)
    items: List[Tuple[str, str]] = []

    def step(fn: Callable[[], Tuple[str, str]], what: str) -> None:
        try:
            items.append(fn())
        except Exception as exc:  # noqa: BLE001 -- every failure is one item, never a traceback
            from raygan.platform.core.errors import error_line

            items.append(("fail", f"{what}: {error_line(exc)[0]}"))

    def versions() -> Tuple[str, str]:
        from importlib.metadata import version

        names = ("torch", "ray", "mlflow", "webdataset", "numpy", "pillow")
        return "ok", (f"raygan {raygan.__version__} ({Path(raygan.__file__).parent}), python "
                      f"{sys.version.split()[0]}; " + ", ".join(f"{n} {version(n)}" for n in names))

    def devices() -> Tuple[str, str]:
        import torch

        gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if torch.cuda.is_available() else []
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return "ok", f"devices: {cores} CPU core(s); " + (f"{len(gpus)} GPU(s): {', '.join(gpus)}"
                                                        if gpus else "no CUDA GPU (training and restore run on the CPU)")

    def families() -> Tuple[str, str]:
        import raygan.datasets.tasks  # noqa: F401
        from raygan.platform.core.registry import TASKS

        return "ok", f"families: {', '.join(sorted(FAMILIES))}; data tasks: {', '.join(sorted(TASKS))}"

    def tracking() -> Tuple[str, str]:
        from raygan.platform.core.config import resolve_tracking_uri

        uri = resolve_tracking_uri(args.tracking_uri)
        local = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
        if local is not None and not Path(local).exists():
            return "ok", f"MLflow: {uri} (no runs yet: the first `raygan train` creates it)"
        if local is None:
            return "ok", f"MLflow: {uri}"
        from mlflow import MlflowClient

        models = MlflowClient(uri, registry_uri=uri).search_registered_models()
        names = [f"{m.name}" + (f" @{','.join(sorted(m.aliases))}" if getattr(m, "aliases", None) else "")
                 for m in models]
        return "ok", f"MLflow: {uri}; registered: {', '.join(names) if names else 'none yet'}"

    def ray_line() -> Tuple[str, str]:
        address = os.environ.get("RAY_ADDRESS")
        return "ok", (f"Ray: the cluster at RAY_ADDRESS={address}" if address
                      else "Ray: a private local Ray per command (set RAY_ADDRESS or --address for a cluster)")

    def data() -> Tuple[str, str]:
        from raygan.datasets.pipeline import ShardSet
        from raygan.platform.core.config import StorageConfig

        ss = ShardSet.open(args.data, "train", StorageConfig(endpoint_url=args.endpoint_url))
        how = "manifest" if ss.manifest is not None else "indexed, no manifest of ours"
        sizes = "image sizes known" if ss.image_sizes is not None else "no image sizes"
        return "ok", f"data {args.data}: {ss.count} training samples in {len(ss)} shard(s) ({how}; {sizes})"

    def model() -> Tuple[str, str]:
        from raygan.deploy.offline import load_model

        m = load_model(args.model, args.tracking_uri)
        return "ok", (f"model {args.model}: {m.ref['model']} ({m.config.get('family')}, task {m.data_task}, "
                      f"x{m.scale}, {m.channels} channel(s)) on {m.device}")

    step(versions, "versions")
    step(devices, "devices")
    step(families, "families")
    step(lambda: _weights_line("vgg19-dcbbe1a2.pth", "VGG19 (perceptual losses)", "train.perceptual_weights",
                                 "random"),
         "VGG19 weights")
    step(lambda: _weights_line("alexnet-owt-7be5be79.pth", "AlexNet (LPIPS)", "train.lpips_weights", "off"),
         "AlexNet weights")
    step(tracking, "MLflow")
    step(ray_line, "Ray")
    if args.data:
        step(data, f"data {args.data}")
    if args.model:
        step(model, f"model {args.model}")
    if args.json:
        print(json.dumps([{"status": s, "item": t} for s, t in items]))
    else:
        for status, text in items:
            print(f"{status:4s}  {text}")
    return 1 if any(s == "fail" for s, _ in items) else 0


# ----------------------------------------------------------------------------- dispatch


def completion_cmd(argv: List[str]) -> int:
    """A bash completion script: ``eval "$(raygan completion bash)"``."""
    if argv != ["bash"]:
        print("usage: raygan completion bash   (then: eval \"$(raygan completion bash)\")", file=sys.stderr)
        return 2
    import raygan.models  # noqa: F401  (fills FAMILIES)
    from raygan.platform.core.registry import FAMILIES

    words = {"": " ".join(COMMANDS), "train": " ".join(sorted(FAMILIES)),
             "check": " ".join(sorted(FAMILIES)) + " --data --model --json",
             "shards": " ".join(SHARDS), "completion": "bash"}
    cases = "\n".join(f'        {cmd}) words="{w}";;' for cmd, w in words.items() if cmd)
    print(f"""_raygan() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} words=""
    if [ "$COMP_CWORD" -eq 1 ]; then
        words="{words['']}"
    elif [ "$COMP_CWORD" -eq 2 ]; then
        case "${{COMP_WORDS[1]}}" in
{cases}
        esac
    fi
    if [ -n "$words" ]; then COMPREPLY=($(compgen -W "$words" -- "$cur")); else COMPREPLY=($(compgen -f -- "$cur")); fi
}}
complete -o default -F _raygan raygan""")
    return 0


def _with_prog(fn: Callable[..., int], prog: str) -> Main:
    return lambda argv: fn(argv, prog)


COMMANDS: Dict[str, Tuple[Main, str]] = {
    "train": (train_cmd, "train a GAN family on Ray (raygan train <family> --help)"),
    "sweep": (sweep_cmd, "sweep loss weights / learning rates, or run a paper's ablation (Ray Tune)"),
    "evaluate": (_with_prog(evaluate_main, "raygan evaluate"), "score models and baselines on image sets"),
    "serve": (_with_prog(serve_main, "raygan serve"), "serve the restoration endpoints (Ray Serve)"),
    "restore": (_with_prog(restore_main, "raygan restore"), "restore a photo or a folder, no server needed"),
    "shards": (shards_cmd, "write shard sets: folder, faces, paired"),
    "check": (_with_prog(check_main, "raygan check"), "check the install, weights, data and models"),
    "completion": (completion_cmd, "print a bash completion script"),
}


def usage() -> str:
    lines = "\n".join(f"  {name:11s} {why}" for name, (_, why) in COMMANDS.items())
    return (f"usage: raygan <command> [options]\n\nraygan {raygan.__version__}: distributed training "
            f"of GAN image restoration models on Ray, and restoring photos with them.\n\n"
            f"commands:\n{lines}\n\n`raygan <command> --help` is the reference of each command.")


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"raygan {raygan.__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, list(COMMANDS), 1)
        print(f"raygan: error: unknown command {command!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
              + f"; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return COMMANDS[command][0](rest)


if __name__ == "__main__":
    sys.exit(main())
