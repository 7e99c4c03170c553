"""Evaluation tables in the papers' style: models and baselines on image sets.

A *model* is a registered MLflow model (``models:/name/version``), a run's model
(``runs:/<id>/generator``), a checkpoint directory (local or ``s3://``), or a baseline name
(``input``, ``zp``, ``mig``, ``br``, ``bicubic``). A *set* is a folder of images or a shard
set (its ``val`` split). Every image is degraded deterministically by the task (seeded by its
key), restored by every model, and scored on RGB and on Y.

Protocols (:data:`PROTOCOLS`; the table header names the one used and marks the columns
that are the paper's metric):

* ``y``: the BT.601 studio-range Y image alone is degraded, restored and scored, as the
  papers' Y tables do (WCDGAN Table 1: the Y image is JPEG-compressed as a grayscale image).
  A grayscale source (mode L, or RGB with three equal channels) is used as it is: its gray
  values are the Y image (``raygan.datasets.degradations.y_image_uint8``). Models trained
  on Y (``data.channels: 1``).
* ``rgb``: RGB is degraded and restored; the paper's metric is PSNR/SSIM on RGB.
* ``rgb-y``: the same images and numbers as ``rgb``, but the paper's metric is PSNR/SSIM on
  the Y of the outputs (DAGAN: RGB quantized to k bits, scored on Y).

Default protocol (``protocol=None``, what ``jobs/evaluate.py`` does without ``--protocol``):
each family declares its paper's (``eval_protocol`` on the family class: wcdgan ``y``, dagan
``rgb-y``, dequantizer, facesr and pan ``rgb``). With a trained model the first one decides:
its family's protocol, except that the model's channels win: a model trained on Y is always
evaluated with ``y``, and a 3-channel model cannot be fed a Y image, so a family whose paper
uses ``y`` gets ``rgb-y`` (RGB JPEG input, scored on Y; not comparable with the paper's Y
rows, the header says so). With baselines only, the task decides (:data:`TASK_PROTOCOLS`:
jpeg ``y`` as WCDGAN's Table 1, bitdepth ``rgb-y`` as DAGAN, anything else ``rgb``).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from raygan.datasets.degradations import get_task, key_rng, task_tag
from raygan.platform.errors import ConfigError, EvaluationError, SkipRecord
from raygan.datasets.pipeline import ShardSet, Skipped, decode_record, iter_shard
from raygan.datasets.shards import IMAGE_EXTENSIONS, read_manifest
from raygan.models.baselines import BASELINES, build_baseline, expand_bits
from raygan.platform import metrics as M
from raygan.platform import storage
from raygan.platform.config import DataConfig, apply_overrides, from_dict
from raygan.platform.registry import FAMILIES
from raygan.platform.restorer import load_generator

METRICS = M.SCORES

#: protocol -> (what is degraded, restored and scored; the columns that are the paper's metric)
PROTOCOLS: Dict[str, Tuple[str, Tuple[str, ...]]] = {
    "y": ("the BT.601 studio-range Y image is degraded, restored and scored, grayscale images "
          "as they are", ("psnr", "ssim")),
    "rgb": ("RGB is degraded, restored and scored", ("psnr", "ssim")),
    "rgb-y": ("RGB is degraded and restored, scored on the BT.601 Y of the output",
              ("psnr_y", "ssim_y")),
}
#: default protocol per task when only baselines are evaluated (the paper whose baseline rows
#: the task reproduces: jpeg WCDGAN Table 1, bitdepth DAGAN); other tasks: "rgb"
TASK_PROTOCOLS: Dict[str, str] = {"jpeg": "y", "bitdepth": "rgb-y"}
COLUMN_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y"}




@dataclass
class Evaluated:
    name: str
    module: nn.Module
    channels: int
    family: Optional[str] = None  # None for baselines


def load_model(spec: str, data_cfg: DataConfig, tracking_uri: Optional[str] = None) -> Evaluated:
    """A baseline by name, else anything :func:`raygan.platform.restorer.load_generator` reads."""

    if spec in BASELINES:
        return Evaluated(spec, build_baseline(spec, data_cfg), data_cfg.channels)
    module, config = load_generator(spec, tracking_uri)
    channels = int(config.get("data", {}).get("channels", 3))
    return Evaluated(spec, module, channels, config.get("family"))


def family_protocol(family: Optional[str]) -> Optional[str]:
    """The evaluation protocol a family declares (its paper's), None if unknown."""
    if not family:
        return None

    try:
        cls = FAMILIES.get(family)
    except KeyError:
        return None
    protocol = getattr(cls, "eval_protocol", "rgb")
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"family {family} declares eval_protocol {protocol!r}, "
                              f"not one of {', '.join(PROTOCOLS)}")
    return protocol


def resolve_protocol(protocol: Optional[str], task: str,
                     loaded: Sequence[Evaluated]) -> Tuple[str, str]:
    """(protocol, why) -- the given one, else the default (see the module docstring)."""
    if protocol is not None:
        if protocol not in PROTOCOLS:
            raise EvaluationError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        return protocol, "given"
    trained = [ev for ev in loaded if not _is_baseline(ev.name)]
    if not trained:
        return TASK_PROTOCOLS.get(task, "rgb"), f"default of task {task}"
    ev = trained[0]
    declared = family_protocol(ev.family)
    if declared is None:
        declared, why = TASK_PROTOCOLS.get(task, "rgb"), f"default of task {task}"
    else:
        why = f"default of family {ev.family}"
    if ev.channels == 1 and declared != "y":
        return "y", f"{why} is {declared}, but the model is trained on Y (1 channel)"
    if ev.channels != 1 and declared == "y":
        return "rgb-y", (f"{why} is y, impossible for a model trained on {ev.channels} channels: "
                         f"RGB is degraded and the output scored on Y, not comparable with the "
                         f"paper's Y rows")
    return declared, why


def _is_baseline(name: str) -> bool:
    return name in BASELINES


def iter_set(uri: str, data_cfg: DataConfig, storage_cfg=None) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(key, decoded record) of a folder of images or of a shard set's val split."""
    from PIL import Image, UnidentifiedImageError


    local = storage.is_local(uri) and Path(storage.local_path(uri)).is_dir()
    files = ([p for p in sorted(Path(storage.local_path(uri)).rglob("*"))
              if p.suffix.lower() in IMAGE_EXTENSIONS] if local else [])
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

    split = "val" if read_manifest(uri, storage_cfg) is not None else None
    shardset = ShardSet(uri, storage_cfg, split)
    for shard, expected in zip(shardset.shards, shardset.shard_counts):
        for item in iter_shard(shard, storage_cfg, expected):
            if isinstance(item, Skipped):
                continue
            record = decode_record(item)
            yield item["__key__"], record


@torch.no_grad()
def evaluate(models: Sequence[str], sets: Sequence[str], data_cfg: DataConfig, *,
             protocol: Optional[str] = "rgb", border: int = 0, lpips_weights: str = "auto",
             grid_images: int = 3, storage_cfg=None, progress: bool = True,
             max_images: Optional[int] = None, tracking_uri: Optional[str] = None) -> Dict[str, Any]:
    """Score every model on every set. Returns rows, the markdown table and grids.

    ``protocol``: one of :data:`PROTOCOLS`, or None for the default (module docstring); the
    result's ``protocol`` and ``header`` say which was used and why.
    """

    if protocol is not None and protocol not in PROTOCOLS:
        raise EvaluationError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    task = get_task(data_cfg.task)
    loaded = [load_model(m, data_cfg, tracking_uri) for m in models]
    protocol, why = resolve_protocol(protocol, data_cfg.task, loaded)
    data_cfg.channels = 1 if protocol == "y" else 3
    for ev in loaded:
        if _is_baseline(ev.name):
            ev.channels = data_cfg.channels  # baselines work on any channel count
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
            row_imgs = [M.to_uint8_image(degraded_view)]
            for ev in loaded:
                out = ev.module(x).float().clamp(0, 1)
                if out.shape != target.shape:
                    raise EvaluationError(f"model {ev.name} returned {tuple(out.shape)} for "
                                          f"target {tuple(target.shape)} on {set_name}/{key}")
                for k, v in M.score(out, target, border, lpips).items():
                    sums[ev.name][k] += float(v[0])
                row_imgs.append(M.to_uint8_image(out))
            row_imgs.append(M.to_uint8_image(target))
            count += 1
            if len(grid_rows) < grid_images:
                grid_rows.append(row_imgs)
        for ev in loaded:
            row = {"set": set_name, "model": ev.name, "images": count, "skipped": skipped}
            row.update({k: (v / count if count else math.nan) for k, v in sums[ev.name].items()})
            rows.append(row)
        if grid_rows:
            grids[set_name] = M.image_grid(grid_rows)

    what, paper_cols = PROTOCOLS[protocol]
    header = (f"task {task_tag(data_cfg)}, protocol {protocol} ({why}): {what}; the paper's "
              f"metric: {'/'.join(COLUMN_NAMES[c] for c in paper_cols)} (marked *); "
              + M.metric_conventions(border, protocol == "y")
              + "; PSNR-Y/SSIM-Y on the BT.601 MATLAB-compatible Y (16-235) of the outputs"
              + ("; LPIPS AlexNet" if lpips.available else "; LPIPS: weights absent, not computed"))
    notes = []
    bits = getattr(data_cfg, "bits", None)
    if (data_cfg.task == "bitdepth" and isinstance(bits, int) and 1 <= bits <= 7
            and {"mig", "br"} & {ev.name for ev in loaded}):

        codes = torch.arange(1 << bits)
        if torch.equal(expand_bits(codes, bits, "mig"), expand_bits(codes, bits, "br")):
            why_same = (f"255/(2^{bits}-1) = {255 // ((1 << bits) - 1)} is an integer, and "
                        f"multiplying the {bits}-bit code by it repeats the code's bits"
                        if 8 % bits == 0 else
                        f"rounding q*255/{(1 << bits) - 1} and repeating the bits of q agree on "
                        f"all {1 << bits} codes")
            notes.append(f"At {bits} bits MIG and BR (bit replication) give identical images: "
                         f"{why_same}. Equal mig and br rows are expected, not a bug.")
    return {"rows": rows, "markdown": to_markdown(rows, header, paper_cols, notes), "header": header,
            "protocol": protocol, "protocol_reason": why, "paper_columns": list(paper_cols),
            "notes": notes, "grids": grids}


def to_markdown(rows: List[Dict[str, Any]], header: str, paper_columns: Sequence[str] = (),
                notes: Sequence[str] = ()) -> str:
    """The table; ``paper_columns`` (keys of COLUMN_NAMES) are marked ``*``, ``notes`` follow."""
    names = [COLUMN_NAMES[c] + (" *" if c in paper_columns else "")
             for c in ("psnr", "ssim", "psnr_y", "ssim_y")]
    lines = [f"<!-- {header} -->", f"*{header}*", "",
             f"| set | model | {' | '.join(names)} | LPIPS | images |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lp = "–" if math.isnan(r["lpips"]) else f"{r['lpips']:.4f}"
        lines.append(f"| {r['set']} | {r['model']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                     f"{r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {lp} | {r['images']} |")
    if notes:
        lines.append("")
        lines.extend(f"Note: {n}" for n in notes)
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

    raw = {"data": dict(base or {})}
    raw["data"]["task"] = task
    for k in ("train", "val"):
        raw["data"].pop(k, None)
    apply_overrides(raw, [o if o.startswith("data.") else f"data.{o}" for o in overrides])
    cfg = from_dict(DataConfig, raw["data"], "data")

    try:
        get_task(cfg.task)
    except KeyError as exc:
        raise ConfigError(f"--task: {exc.args[0]}") from None
    return cfg
