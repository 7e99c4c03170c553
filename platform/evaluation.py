"""Evaluation tables in the papers' style: models and baselines on image sets.

A *model* is a registered MLflow model (``models:/name/version``), a run's model
(``runs:/<id>/generator``), a checkpoint directory (local or ``s3://``), or a baseline name
(``input``, ``zp``, ``mig``, ``br``, ``bicubic``). A *set* is a folder of images or a shard
set (its ``val`` split). Every image is degraded deterministically by the task (seeded by its
key), restored by every model, and scored on RGB and on Y.

Images are scored whole: a model's ``data.val_crop`` and ``data.val_max_images`` (its
training validation's) do not carry into evaluation (:func:`data_config`); an explicit
``data.val_crop=N`` override still crops, and the header says which.

Protocols (:data:`PROTOCOLS`; the table header names the one used and marks the columns
that are the paper's metric):

* ``y``: the BT.601 studio-range Y image alone is degraded, restored and scored, as the
  papers' Y tables do (WCDGAN Table 1: the Y image is JPEG-compressed as a grayscale image).
  A grayscale source (mode L, or RGB with three equal channels) is used as it is: its gray
  values are the Y image (``raygan.datasets.degradations.y_image_uint8``). Models trained
  on Y (``data.channels: 1``).
* ``rgb``: RGB is degraded and restored; the paper's metric is PSNR/SSIM on RGB (WCDGAN
  Table 2, face SR, PAN).
* ``rgb-y``: the same images and numbers as ``rgb``, but the paper's metric is PSNR/SSIM on
  the Y of the outputs (DAGAN: RGB quantized to k bits, scored on Y).
* ``rgb-sq96``: each image's centred largest square is resized to 96x96 (bicubic,
  antialiased: ``degradations.center_square_resize``, the training crop of
  ``data.crop: center_square_resize``), then as ``rgb`` (DequantizerNet: the paper crops its
  test images to squares and resizes them to 96x96, as in training).

Default protocol (``protocol=None``, what ``jobs/evaluate.py`` does without ``--protocol``):
each family declares its paper's (``eval_protocol`` on the family class, per channel count
where the paper's tables differ: ``paper_protocol``): wcdgan ``y`` for a Y model (Table 1)
and ``rgb`` for an RGB one (Table 2), dagan ``rgb-y``, dequantizer ``rgb-sq96``, facesr and
pan ``rgb``. With a trained model the first one decides: its family's protocol for its
channel count, except that a model trained on Y is always evaluated with ``y``, and a
3-channel model cannot be fed a Y image, so a family whose paper uses ``y`` for it gets
``rgb-y`` (not comparable with the paper's Y rows, the header says so). With baselines
only, the task decides (:data:`TASK_PROTOCOLS`: jpeg ``y`` as WCDGAN's Table 1, bitdepth
``rgb-y`` as DAGAN, anything else ``rgb``).

Tiles: a family may declare ``eval_tile = (tile, overlap)`` (DAGAN: its self-attention over a
whole photo does not fit in memory); its trained models then restore each image in
overlapping tiles blended back (:mod:`raygan.platform.core.tiling`, as serving does), and the
header records tile and overlap. ``tile=0`` turns tiling off, ``tile=N`` sets it for any
family. Baselines (pixel-wise or bicubic) always run whole.

Paper numbers: when a (model, set) row matches a headline row of
:data:`raygan.models.papers.PAPER_ROWS` (family or baseline, task, set, protocol, the row's
settings; whole images of the whole set), the table prints the paper's number beside the
measured one, with the difference.
"""

from __future__ import annotations

import csv
import io
import math
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from raygan.datasets.degradations import center_square_resize, get_task, key_rng, task_tag
from raygan.platform.core.errors import ConfigError, EvaluationError, SkipRecord
from raygan.datasets.pipeline import ShardSet, Skipped, decode_record, iter_shard
from raygan.datasets.shards import IMAGE_EXTENSIONS, read_manifest
from raygan.models.baselines import BASELINES, build_baseline, expand_bits
from raygan.models.papers import METRIC_NAMES, PaperRow, matching_rows
from raygan.platform.core import metrics as M
from raygan.platform.core import storage
from raygan.platform.core.config import DataConfig, apply_overrides, from_dict, to_dict
from raygan.platform.core.registry import FAMILIES
from raygan.platform.restorer import load_generator
from raygan.platform.core.tiling import TilePlan

METRICS = M.SCORES

@dataclass(frozen=True)
class Protocol:
    """What an evaluation protocol degrades, restores and scores."""

    what: str
    #: the columns that are the paper's metric (keys of COLUMN_NAMES)
    paper_columns: Tuple[str, ...]
    #: the image the model sees: 1 = the BT.601 Y image, 3 = RGB
    channels: int = 3
    #: each image's centred largest square resized to this side before degradation (None: as is)
    square: Optional[int] = None

    def __iter__(self):  # (what, paper_columns), as the protocols were first written
        return iter((self.what, self.paper_columns))


#: protocol name -> Protocol (see the module docstring)
PROTOCOLS: Dict[str, Protocol] = {
    "y": Protocol("the BT.601 studio-range Y image is degraded, restored and scored, grayscale "
                  "images as they are", ("psnr", "ssim"), channels=1),
    "rgb": Protocol("RGB is degraded, restored and scored", ("psnr", "ssim")),
    "rgb-y": Protocol("RGB is degraded and restored, scored on the BT.601 Y of the output",
                      ("psnr_y", "ssim_y")),
    "rgb-sq96": Protocol("each image's centred largest square is resized to 96x96 (bicubic, "
                         "antialiased), as in training; RGB is degraded, restored and scored",
                         ("psnr", "ssim"), square=96),
}
#: default protocol per task when only baselines are evaluated (the paper whose baseline rows
#: the task reproduces: jpeg WCDGAN Table 1, bitdepth DAGAN); other tasks: "rgb"
TASK_PROTOCOLS: Dict[str, str] = {"jpeg": "y", "bitdepth": "rgb-y"}
#: overlap when a tile is given without one (ours)
DEFAULT_OVERLAP = 32
COLUMN_NAMES = {"psnr": "PSNR", "ssim": "SSIM", "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y"}




@dataclass
class Evaluated:
    name: str
    module: nn.Module
    channels: int
    family: Optional[str] = None  # None for baselines
    config: Dict[str, Any] = field(default_factory=dict)  # a trained model's run config


def load_model(spec: str, data_cfg: DataConfig, tracking_uri: Optional[str] = None) -> Evaluated:
    """A baseline by name, else anything :func:`raygan.platform.restorer.load_generator` reads."""

    if spec in BASELINES:
        return Evaluated(spec, build_baseline(spec, data_cfg), data_cfg.channels)
    module, config = load_generator(spec, tracking_uri)
    channels = int(config.get("data", {}).get("channels", 3))
    return Evaluated(spec, module, channels, config.get("family"), config)


def _family_class(family: Optional[str]):
    if not family:
        return None
    try:
        return FAMILIES.get(family)
    except KeyError:
        return None


def family_protocol(family: Optional[str], channels: Optional[int] = None) -> Optional[str]:
    """The evaluation protocol a family declares (its paper's, for a model of ``channels``
    channels when given), None if the family is unknown."""
    cls = _family_class(family)
    if cls is None:
        return None
    protocol = (cls.paper_protocol(channels) if channels is not None and hasattr(cls, "paper_protocol")
                else getattr(cls, "eval_protocol", "rgb"))
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
    declared = family_protocol(ev.family, ev.channels)
    if declared is None:
        declared, why = TASK_PROTOCOLS.get(task, "rgb"), f"default of task {task}"
    else:
        cls = _family_class(ev.family)
        by_channels = getattr(cls, "eval_protocol_by_channels", {}) or {}
        why = (f"default of family {ev.family} for {ev.channels}-channel models"
               if ev.channels in by_channels else f"default of family {ev.family}")
    if ev.channels == 1 and PROTOCOLS[declared].channels != 1:
        return "y", f"{why} is {declared}, but the model is trained on Y (1 channel)"
    if ev.channels != 1 and PROTOCOLS[declared].channels == 1:
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


def resolve_tile(tile: Optional[int], overlap: Optional[int],
                 loaded: Sequence[Evaluated]) -> Tuple[Optional[Tuple[int, int]], str]:
    """``((tile, overlap) or None, why)``: the given tile (0: off), else the first trained
    model's family's ``eval_tile``, else none."""
    if tile is not None:
        if tile < 0 or (overlap is not None and overlap < 0):
            raise EvaluationError(f"--tile and --overlap must be >= 0, got {tile}, {overlap}")
        if tile == 0:
            return None, "given"
        return (int(tile), int(DEFAULT_OVERLAP if overlap is None else overlap)), "given"
    trained = [ev for ev in loaded if not _is_baseline(ev.name)]
    cls = _family_class(trained[0].family) if trained else None
    declared = getattr(cls, "eval_tile", None) if cls is not None else None
    if not declared:
        return None, "none"
    t, o = declared
    return (int(t), int(o if overlap is None else overlap)), f"default of family {trained[0].family}"


def restore(ev: Evaluated, x: torch.Tensor, scale: int,
            tiling: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """``ev``'s output for ``x`` (1, C, H, W), float in [0, 1]: whole, or, for a trained model
    with ``tiling = (tile, overlap)``, tile by tile (input pixels) blended back unrounded."""
    if tiling is None or _is_baseline(ev.name):
        return ev.module(x).float().clamp(0, 1)
    tile, overlap = tiling
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return ev.module(x).float().clamp(0, 1)
    image = x[0].permute(1, 2, 0).cpu().numpy()
    plan = TilePlan(h, w, tile, overlap, scale)
    for i, piece in enumerate(plan.tiles(image)):
        inp = torch.from_numpy(np.ascontiguousarray(piece)).permute(2, 0, 1)[None].to(x)
        plan.add(i, ev.module(inp).float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy())
    return torch.from_numpy(plan.result_float()).permute(2, 0, 1)[None].to(x.device)


def _images_phrase(protocol: Protocol, data_cfg: DataConfig) -> str:
    if protocol.square:
        phrase = f"each image's centred largest square resized to {protocol.square}x{protocol.square}"
    else:
        phrase = "whole images"
    if data_cfg.val_crop is not None:
        phrase += f", then centre {data_cfg.val_crop}x{data_cfg.val_crop} crops (data.val_crop)"
    return phrase


@torch.no_grad()
def evaluate(models: Sequence[str], sets: Sequence[str], data_cfg: DataConfig, *,
             protocol: Optional[str] = "rgb", border: int = 0, lpips_weights: str = "auto",
             grid_images: int = 3, storage_cfg=None, progress: bool = True,
             max_images: Optional[int] = None, tracking_uri: Optional[str] = None,
             tile: Optional[int] = None, overlap: Optional[int] = None) -> Dict[str, Any]:
    """Score every model on every set. Returns rows, the markdown table and grids.

    ``protocol``: one of :data:`PROTOCOLS`, or None for the default (module docstring); the
    result's ``protocol`` and ``header`` say which was used and why. ``tile``/``overlap``:
    restore trained models in tiles (None: the family's ``eval_tile``; 0: whole images).
    """

    if protocol is not None and protocol not in PROTOCOLS:
        raise EvaluationError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    task = get_task(data_cfg.task)
    loaded = [load_model(m, data_cfg, tracking_uri) for m in models]
    protocol, why = resolve_protocol(protocol, data_cfg.task, loaded)
    proto = PROTOCOLS[protocol]
    if proto.square and task.spatial_fields:
        raise EvaluationError(f"protocol {protocol} resizes the target only; task {data_cfg.task} "
                              f"carries {', '.join(task.spatial_fields)} too")
    tiling, tile_why = resolve_tile(tile, overlap, loaded)
    data_cfg = dataclasses.replace(data_cfg, channels=proto.channels)  # the caller's is left as it was
    for ev in loaded:
        if _is_baseline(ev.name):
            ev.channels = data_cfg.channels  # baselines work on any channel count
        if ev.channels != data_cfg.channels:
            raise EvaluationError(
                f"model {ev.name} was trained on {ev.channels}-channel images but protocol "
                f"{protocol!r} feeds {data_cfg.channels}: use --protocol {'y' if ev.channels == 1 else 'rgb'}")
    lpips = M.LPIPSMetric(lpips_weights)
    data_dict = to_dict(data_cfg)
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
        whole_set = max_images is None or max_images >= len(records)
        if max_images is not None:
            records = records[:max_images]
        if not records:
            raise EvaluationError(f"no images found in {set_uri}")
        bar = tqdm(records, desc=set_name, disable=not progress) if tqdm else records
        for key, record in bar:
            if proto.square:
                record = dict(record, target=center_square_resize(record["target"], proto.square))
            try:
                sample = task(record, data_cfg, key_rng(key), train=False)
            except SkipRecord as exc:
                skipped += 1
                print(f"warning: {set_name}/{key} skipped: {exc}")
                continue
            x, target = sample["input"][None], sample["target"][None]
            scale = max(1, target.shape[-1] // x.shape[-1])
            degraded_view = x
            if x.shape[-2:] != target.shape[-2:]:
                degraded_view = torch.nn.functional.interpolate(x, size=target.shape[-2:], mode="nearest")
            row_imgs = [M.to_uint8_image(degraded_view)]
            for ev in loaded:
                out = restore(ev, x, scale, tiling)
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
        set_rows = []
        for ev in loaded:
            row = {"set": set_name, "model": ev.name, "images": count, "skipped": skipped}
            row.update({k: (v / count if count else math.nan) for k, v in sums[ev.name].items()})
            comparable = whole_set and data_cfg.val_crop is None and skipped == 0
            matched = matching_rows(family=ev.family, model=ev.name, task=data_cfg.task,
                                    set_name=set_name, protocol=protocol, data=data_dict,
                                    config=ev.config) if comparable else []
            row["paper"] = [{"row": r} for r in matched]
            set_rows.append(row)
        _compare_with_papers(set_rows)
        rows.extend(set_rows)
        if grid_rows:
            grids[set_name] = M.image_grid(grid_rows)

    what, paper_cols = proto.what, proto.paper_columns
    header = (f"task {task_tag(data_cfg)}, protocol {protocol} ({why}): {what}; "
              f"{_images_phrase(proto, data_cfg)}; the paper's "
              f"metric: {'/'.join(COLUMN_NAMES[c] for c in paper_cols)} (marked *); "
              + M.metric_conventions(border, protocol == "y")
              + "; PSNR-Y/SSIM-Y on the BT.601 MATLAB-compatible Y (16-235) of the outputs"
              + ("; LPIPS AlexNet" if lpips.available else "; LPIPS: weights absent, not computed"))
    if tiling is not None:
        header += (f"; trained models restore each image in {tiling[0]}x{tiling[0]} tiles "
                   f"overlapping by {tiling[1]} px, blended with a linear cross-fade "
                   f"({tile_why}; raygan.platform.core.tiling): global operations such as "
                   f"self-attention see one tile at a time")
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
    seen = []
    for r in rows:
        for p in r["paper"]:
            if p["row"] not in seen:
                seen.append(p["row"])
    for pr in seen:
        notes.append(f"Paper row: {pr.paper}, {pr.table}, {pr.label} on {pr.set} (protocol "
                     f"{pr.protocol}; our config {pr.config}); source: {pr.source}"
                     + (f"; {pr.note}" if pr.note else ""))
    return {"rows": rows, "markdown": to_markdown(rows, header, paper_cols, notes), "header": header,
            "protocol": protocol, "protocol_reason": why, "paper_columns": list(paper_cols),
            "tile": list(tiling) if tiling else None, "notes": notes, "grids": grids}


def _compare_with_papers(set_rows: List[Dict[str, Any]]) -> None:
    """Fill each matched paper row of one set with the paper's and the measured numbers:
    ``{"row", "metric", "paper", "measured", "delta"}`` per transcribed metric (``gain_*``:
    minus the ``input`` baseline of the same set; measured None when it was not evaluated)."""
    inputs = {r["set"]: r for r in set_rows if r["model"] == "input"}
    for r in set_rows:
        filled = []
        for entry in r["paper"]:
            pr: PaperRow = entry["row"]
            for metric, value in pr.metrics.items():
                if value is None:
                    continue
                base = metric[len("gain_"):] if metric.startswith("gain_") else metric
                measured = r.get(base)
                if metric.startswith("gain_"):
                    ref = inputs.get(r["set"])
                    measured = None if ref is None else measured - ref[base]
                filled.append({"row": pr, "metric": metric, "paper": value, "measured": measured,
                               "delta": None if measured is None else measured - value})
        r["paper"] = filled


def paper_text(entries: Sequence[Dict[str, Any]]) -> str:
    """The paper column of one table row: ``PSNR 25.578 (Δ -0.42)``, ``PSNR gain +1.79
    (here +1.52, Δ -0.27)``; gains need the ``input`` baseline in the same run."""
    parts = []
    for e in entries:
        metric = e["metric"]
        if metric.startswith("gain_"):
            name = METRIC_NAMES[metric[len("gain_"):]] + " gain over the input"
            if e["measured"] is None:
                parts.append(f"{name} {e['paper']:+.2f} (evaluate `input` too to compare)")
            else:
                parts.append(f"{name} {e['paper']:+.2f} (here {e['measured']:+.2f}, "
                             f"Δ {e['delta']:+.2f})")
        else:
            digits = 4 if metric.startswith("ssim") else 3
            parts.append(f"{METRIC_NAMES[metric]} {e['paper']:.{digits}f} (Δ {e['delta']:+.{digits}f})")
    return "; ".join(parts)


def to_markdown(rows: List[Dict[str, Any]], header: str, paper_columns: Sequence[str] = (),
                notes: Sequence[str] = ()) -> str:
    """The table; ``paper_columns`` (keys of COLUMN_NAMES) are marked ``*``, ``notes`` follow.
    A ``paper`` column (the paper's number for the same row, and the distance to it) is added
    when any row matches a paper row."""
    names = [COLUMN_NAMES[c] + (" *" if c in paper_columns else "")
             for c in ("psnr", "ssim", "psnr_y", "ssim_y")]
    with_paper = any(r.get("paper") for r in rows)
    extra = " paper (same row) |" if with_paper else ""
    lines = [f"<!-- {header} -->", f"*{header}*", "",
             f"| set | model | {' | '.join(names)} | LPIPS | images |{extra}",
             "|---|---|---|---|---|---|---|---|" + ("---|" if with_paper else "")]
    for r in rows:
        lp = "–" if math.isnan(r["lpips"]) else f"{r['lpips']:.4f}"
        line = (f"| {r['set']} | {r['model']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
                f"{r['psnr_y']:.2f} | {r['ssim_y']:.4f} | {lp} | {r['images']} |")
        if with_paper:
            line += f" {paper_text(r.get('paper') or []) or '–'} |"
        lines.append(line)
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
    # the training sets, and the training validation's crop and cap: evaluation scores whole
    # images of whole sets unless an override says otherwise
    for k in ("train", "val", "val_crop", "val_max_images"):
        raw["data"].pop(k, None)
    apply_overrides(raw, [o if o.startswith("data.") else f"data.{o}" for o in overrides])
    cfg = from_dict(DataConfig, raw["data"], "data")

    try:
        get_task(cfg.task)
    except KeyError as exc:
        raise ConfigError(f"--task: {exc.args[0]}") from None
    return cfg
