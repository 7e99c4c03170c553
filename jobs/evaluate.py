"""Evaluate restoration models and baselines on image sets; print and save the table.

    python jobs/evaluate.py --task jpeg --model models:/raygan-wcdgan-jpeg-q10-rgb/1 input \
        --sets ../shared/data/val/set5 ../shared/data/val/set14 data.quality=10

--model takes registered models (models:/name/version), run models (runs:/<id>/generator),
checkpoint directories (local or s3://) and baselines (input, zp, mig, br, bicubic). The
table (markdown + CSV) and comparison grids go to --out and to an MLflow run.

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
rgb-y, others -> rgb. The table header says which protocol was used, why, and marks the
paper's metric columns with *.

Images are scored whole (a model's data.val_crop is its training validation's and does not
carry; data.val_crop=N crops explicitly). --tile N [--overlap M] restores trained models in
overlapping tiles (DAGAN's default: 256 / 32, its self-attention over a whole photo does not
fit in memory; --tile 0: whole). When a row matches one of the papers' headline rows
(raygan.models.papers: family, task, set, protocol, settings), the paper's number is printed
beside the measured one.
"""
import argparse
import json
import re
import sys
import time
from pathlib import Path

import raygan  # noqa: E402,F401  (its ENV_DEFAULTS apply before Ray or MLflow load)

#: raygan.platform.evaluation.PROTOCOLS' names (tests/test_evaluate.py keeps them equal;
#: written out so that --help needs no torch import)
PROTOCOL_NAMES = ("y", "rgb", "rgb-y", "rgb-sq96")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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

    from PIL import Image

    from raygan.platform.config import resolve_tracking_uri
    from raygan.platform.errors import CheckpointError, ConfigError, EvaluationError, ShardError, StorageError
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
    except (ConfigError, EvaluationError, StorageError, ShardError, CheckpointError,
            FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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


if __name__ == "__main__":
    sys.exit(main())
