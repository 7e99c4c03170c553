"""What a sweep reports: its table (an ablation in variant order, a search ranked), as
markdown and CSV, the metric-vs-weight plot, the MLflow parent's artifacts and the
children's end (:func:`report_sweep`), and the best trial registered as ``champion``
(:func:`promote_champion`)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from raygan.platform.core import storage
from raygan.platform import tracking
from raygan.platform.engine import build_family
from raygan.platform.sweep.plan import SWEEP_TAG, TRIAL_TAG, SweepPlan
from raygan.platform.sweep.space import VARIANT, SweepSpace, trial_config, trial_values

#: table columns: (header, reported key)
SCORE_COLUMNS = (("PSNR", "val_psnr"), ("SSIM", "val_ssim"), ("PSNR-Y", "val_psnr_y"),
                 ("SSIM-Y", "val_ssim_y"), ("LPIPS", "val_lpips"))
INPUT_COLUMNS = (("input PSNR", "val_input_psnr"), ("input PSNR-Y", "val_input_psnr_y"))


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.3f}" if abs(v) < 1000 else f"{v:.4g}"
    return str(v)


def table_rows(space: SweepSpace, trials: List[Dict[str, Any]], metric_key: str,
               mode: str) -> Tuple[List[str], List[List[Any]]]:
    """``(header, rows)``: an ablation in the space's variant order, a search ranked by the
    metric (best first; failed trials last). Columns without any value (LPIPS without
    weights) are left out."""
    scores = [c for c in SCORE_COLUMNS + INPUT_COLUMNS
              if any(t["metrics"].get(c[1]) is not None for t in trials)]
    if space.kind == "ablation":
        order = {name: i for i, name in enumerate(space.variants)}
        trials = sorted(trials, key=lambda t: order.get(t["config"].get(VARIANT), len(order)))
        header = ["variant"] + [h for h, _ in scores] + ["steps", "status"]
        rows = [[t["config"].get(VARIANT)] + [t["metrics"].get(k) for _, k in scores]
                + [t["metrics"].get("step"), t["status"]] for t in trials]
        return header, rows
    sign = -1 if mode == "max" else 1
    trials = sorted(trials, key=lambda t: (t["metrics"].get(metric_key) is None,
                                           sign * (t["metrics"].get(metric_key) or 0.0)))
    params = list(space.params)
    header = ["rank", "trial"] + params + [h for h, _ in scores] + ["steps", "status"]
    rows = [[i + 1, t["trial_id"]] + [t["config"].get(p) for p in params]
            + [t["metrics"].get(k) for _, k in scores] + [t["metrics"].get("step"), t["status"]]
            for i, t in enumerate(trials)]
    return header, rows


def markdown(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(header: List[str], rows: List[List[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def plot_search(space: SweepSpace, trials: List[Dict[str, Any]], metric_key: str, out: Path) -> Path:
    """The metric against each searched weight, one panel per parameter (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(space.params)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
    done = [t for t in trials if t["metrics"].get(metric_key) is not None]
    for ax, key in zip(axes[0], keys):
        xs = [t["config"].get(key) for t in done]
        ys = [t["metrics"][metric_key] for t in done]
        kind = next(iter(space.params[key]))
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, ys)
            if kind == "loguniform":
                ax.set_xscale("log")
        else:
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], ys)
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(key)
        ax.set_ylabel(metric_key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def report_sweep(plan: SweepPlan, space: SweepSpace, trials, tracking_uri, exp_id, parent_id,
                 cfg) -> Dict[str, Any]:
    """Close the child runs, write and log the table (and plot), return the summary."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    for t in trials:
        found = client.search_runs([exp_id], filter_string=f"tags.`{SWEEP_TAG}` = '{plan.name}' and "
                                   f"tags.`{TRIAL_TAG}` = '{t['trial_id']}'", max_results=1)
        if found:
            t["mlflow_run_id"] = found[0].info.run_id
            client.set_tag(t["mlflow_run_id"], "raygan.status", t["status"])
            client.set_terminated(t["mlflow_run_id"], "FAILED" if t["status"] == "failed" else "FINISHED")
    header, rows = table_rows(space, trials, plan.metric_key, plan.mode)
    out = Path(cfg.workdir) / "sweeps" / plan.name
    out.mkdir(parents=True, exist_ok=True)
    stem = "ablation" if space.kind == "ablation" else "trials"
    md = markdown(header, rows)
    (out / f"{stem}.md").write_text(md)
    (out / f"{stem}.csv").write_text(to_csv(header, rows))
    files = [out / f"{stem}.md", out / f"{stem}.csv"]
    if space.kind == "search":
        files.append(plot_search(space, trials, plan.metric_key, out / f"{plan.metric}_vs_weights.png"))
    for f in files:
        client.log_artifact(parent_id, str(f))
    print(f"\n{stem} table ({plan.metric_key}, {cfg.train.steps} steps per trial):\n{md}", flush=True)
    best = best_trial(plan, trials)
    if best is not None:
        client.log_metric(parent_id, f"best_{plan.metric_key}", best["metrics"][plan.metric_key])
    return {"sweep": plan.name, "kind": space.kind, "metric": plan.metric_key, "mode": plan.mode,
            "trials": len(trials), "failed": sum(t["status"] == "failed" for t in trials),
            "best_trial": best and best["trial_id"], "best_config": best and best["config"],
            "best_value": best and best["metrics"][plan.metric_key],
            "table": str(out / f"{stem}.md"), "files": [str(f) for f in files],
            "mlflow_parent_run_id": parent_id, "mlflow_tracking_uri": tracking_uri}


def best_trial(plan: SweepPlan, trials) -> Optional[Dict[str, Any]]:
    ranked = [t for t in trials if t["metrics"].get(plan.metric_key) is not None]
    pick = max if plan.mode == "max" else min
    return pick(ranked, key=lambda t: t["metrics"][plan.metric_key], default=None)


def promote_champion(plan: SweepPlan, trials, tracking_uri, cfg, filesystem) -> Dict[str, Any]:
    """Register the best trial's best checkpoint and point alias ``champion`` at it."""
    from mlflow import MlflowClient
    from ray.train import Result

    best = best_trial(plan, [t for t in trials if "mlflow_run_id" in t])
    if best is None:
        raise RuntimeError(f"--promote: no trial of sweep {plan.name} reported {plan.metric_key}")
    storage_path, _ = storage.ray_storage(plan.storage, cfg.storage)
    run_path = f"{storage_path}/{plan.name}/trial_runs/trial_{best['trial_id']}"
    result = Result.from_path(run_path, storage_filesystem=filesystem)  # S3: bucket/key + fs
    checkpoint = result.get_best_checkpoint(plan.metric_key, plan.mode) or result.checkpoint
    trial_cfg = trial_config(plan.base, trial_values(best["config"], plan.sweep_space().variants))
    family = build_family(trial_cfg)
    name = trial_cfg.mlflow.registered_model or f"raygan-{trial_cfg.family}-{family.task_tag()}"
    with checkpoint.as_directory() as local:
        info = tracking.log_generator_model(tracking_uri, best["mlflow_run_id"], local, name)
    version = str(info["registered_version"])
    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_registered_model_alias(name, "champion", version)
    tags = {"sweep": plan.name, "trial_id": best["trial_id"], "metric": plan.metric_key,
            "value": f"{best['metrics'][plan.metric_key]:.6g}", "config": json.dumps(best["config"])}
    for k, v in tags.items():
        client.set_model_version_tag(name, version, f"raygan.{k}", v)
    print(f"champion: models:/{name}@champion -> version {version} ({plan.metric_key} "
          f"{tags['value']}, trial {best['trial_id']})", flush=True)
    return {"registered_model": name, "version": version, "alias": "champion",
            "model_uri": f"models:/{name}@champion", **tags}
