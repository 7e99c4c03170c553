"""Evaluation tables in the papers' style: models and baselines on image sets.

A *model* is a registered MLflow model (``models:/name/version``), a run's model
(``runs:/<id>/generator``), a checkpoint directory (local or ``s3://``), or a baseline name
(``input``, ``zp``, ``mig``, ``br``, ``bicubic``). A *set* is a folder of images or a shard
set (its ``val`` split). Every image is degraded deterministically by the task (seeded by its
key), restored by every model, and scored on RGB and on Y.

The Y protocol (``protocol="y"``) degrades and restores the BT.601 Y image alone, as the
papers' Y tables do for models trained on Y (``data.channels: 1``); with ``protocol="rgb"``
Y metrics are measured on the RGB outputs.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from raygan.platform import metrics as M
from raygan.platform.config import DataConfig, from_dict

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
METRICS = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips")


class EvaluationError(ValueError):
    pass


@dataclass
class Evaluated:
    name: str
    module: nn.Module
    channels: int


def load_model(spec: str, data_cfg: DataConfig) -> Evaluated:
    """A baseline by name, else anything :func:`raygan.deploy.loading.load_generator` reads."""
    from raygan.models.baselines import BASELINES, build_baseline

    if spec in BASELINES:
        return Evaluated(spec, build_baseline(spec, data_cfg), data_cfg.channels)
    from raygan.deploy.loading import load_generator

    module, config = load_generator(spec)
    channels = int(config.get("data", {}).get("channels", 3))
    return Evaluated(spec, module, channels)


def iter_set(uri: str, data_cfg: DataConfig, storage_cfg=None) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(key, decoded record) of a folder of images or of a shard set's val split."""
    from PIL import Image, UnidentifiedImageError

    from raygan.platform import storage

    local = storage.is_local(uri) and Path(storage.local_path(uri)).is_dir()
    files = ([p for p in sorted(Path(storage.local_path(uri)).rglob("*"))
              if p.suffix.lower() in IMAGE_SUFFIXES] if local else [])
    if files:
        for p in files:
            try:
                with Image.open(p) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                print(f"warning: skipped undecodable image {p}: {exc}")
                continue
            yield p.stem, {"target": arr, "key": p.stem}
        return
    from raygan.datasets.pipeline import ShardSet, Skipped, decode_record, iter_shard
    from raygan.datasets.shards import read_manifest

    split = "val" if read_manifest(uri, storage_cfg) is not None else None
    shardset = ShardSet(uri, storage_cfg, split)
    for shard, expected in zip(shardset.shards, shardset.shard_counts):
        for item in iter_shard(shard, storage_cfg, expected):
            if isinstance(item, Skipped):
                continue
            record = decode_record(item)
            yield item["__key__"], record


def _to_display(x: torch.Tensor) -> np.ndarray:
    x = x[0].clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x * 255).round().byte().permute(1, 2, 0).numpy()


@torch.no_grad()
def evaluate(models: Sequence[str], sets: Sequence[str], data_cfg: DataConfig, *,
             protocol: str = "rgb", border: int = 0, lpips_weights: str = "auto",
             grid_images: int = 3, storage_cfg=None, progress: bool = True,
             max_images: Optional[int] = None) -> Dict[str, Any]:
    """Score every model on every set. Returns rows, the markdown table and grids."""
    from raygan.datasets.degradations import SkipRecord, get_task, key_rng

    if protocol not in ("rgb", "y"):
        raise EvaluationError(f"protocol must be rgb or y, got {protocol!r}")
    data_cfg.channels = 1 if protocol == "y" else 3
    task = get_task(data_cfg.task)
    loaded = [load_model(m, data_cfg) for m in models]
    for ev in loaded:
        if ev.channels != data_cfg.channels:
            raise EvaluationError(
                f"model {ev.name} was trained on {ev.channels}-channel images but protocol "
                f"{protocol!r} feeds {data_cfg.channels}: use --protocol {'y' if ev.channels == 1 else 'rgb'}")
    lpips = M.LPIPSMetric(lpips_weights)
    rows: List[Dict[str, Any]] = []
    grids: Dict[str, Any] = {}
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    for set_uri in sets:
        set_name = Path(set_uri.rstrip("/")).name
        sums = {ev.name: {k: 0.0 for k in METRICS} for ev in loaded}
        count, skipped = 0, 0
        grid_rows = []
        records = list(iter_set(set_uri, data_cfg, storage_cfg))
        if max_images is not None:
            records = records[:max_images]
        if not records:
            raise EvaluationError(f"no images found in {set_uri}")
        bar = tqdm(records, desc=set_name, disable=not progress) if tqdm else records
        for key, record in bar:
            try:
                sample = task(record, data_cfg, key_rng(key), train=False)
            except SkipRecord as exc:
                skipped += 1
                print(f"warning: {set_name}/{key} skipped: {exc}")
                continue
            x, target = sample["input"][None], sample["target"][None]
            degraded_view = x
            if x.shape[-2:] != target.shape[-2:]:
                degraded_view = torch.nn.functional.interpolate(x, size=target.shape[-2:], mode="nearest")
            row_imgs = [_to_display(degraded_view)]
            for ev in loaded:
                out = ev.module(x).float().clamp(0, 1)
                if out.shape != target.shape:
                    raise EvaluationError(f"model {ev.name} returned {tuple(out.shape)} for "
                                          f"target {tuple(target.shape)} on {set_name}/{key}")
                vals = {"psnr": M.psnr(out, target, border), "ssim": M.ssim(out, target, border),
                        "psnr_y": M.psnr(out, target, border, y=True),
                        "ssim_y": M.ssim(out, target, border, y=True), "lpips": lpips(out, target)}
                for k, v in vals.items():
                    sums[ev.name][k] += float(v[0])
                row_imgs.append(_to_display(out))
            row_imgs.append(_to_display(target))
            count += 1
            if len(grid_rows) < grid_images:
                grid_rows.append(np.concatenate(row_imgs, axis=1))
        for ev in loaded:
            row = {"set": set_name, "model": ev.name, "images": count, "skipped": skipped}
            row.update({k: (v / count if count else math.nan) for k, v in sums[ev.name].items()})
            rows.append(row)
        if grid_rows:
            width = max(r.shape[1] for r in grid_rows)
            grid_rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in grid_rows]
            grids[set_name] = np.concatenate(grid_rows, axis=0)
    from raygan.datasets.degradations import task_tag

    header = (f"task {task_tag(data_cfg)}, protocol {protocol}; "
              + M.metric_conventions(border, protocol == "y")
              + "; PSNR-Y/SSIM-Y on the BT.601 MATLAB-compatible Y (16-235) of the outputs"
              + ("; LPIPS AlexNet" if lpips.available else "; LPIPS: weights absent, not computed"))
    return {"rows": rows, "markdown": to_markdown(rows, header), "header": header, "grids": grids}


def to_markdown(rows: List[Dict[str, Any]], header: str) -> str:
    lines = [f"<!-- {header} -->", f"*{header}*", "",
             "| set | model | PSNR | SSIM | PSNR-Y | SSIM-Y | LPIPS | images |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lp = "–" if math.isnan(r["lpips"]) else f"{r['lpips']:.4f}"
        lines.append(f"| {r['set']} | {r['model']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {lp} | {r['images']} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: List[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = ["set", "model", "images", "skipped", *METRICS]
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow({c: r[c] for c in cols})
    return buf.getvalue()


def data_config(task: str, overrides: Sequence[str] = (), base: Optional[Dict[str, Any]] = None) -> DataConfig:
    """A DataConfig for evaluation: a model's own data section, the task, then overrides."""
    from raygan.platform.config import ConfigError, apply_overrides

    raw = {"data": dict(base or {})}
    raw["data"]["task"] = task
    for k in ("train", "val"):
        raw["data"].pop(k, None)
    apply_overrides(raw, [o if o.startswith("data.") else f"data.{o}" for o in overrides])
    cfg = from_dict(DataConfig, raw["data"], "data")
    from raygan.datasets.degradations import get_task

    try:
        get_task(cfg.task)
    except KeyError as exc:
        raise ConfigError(f"--task: {exc.args[0]}") from None
    return cfg
