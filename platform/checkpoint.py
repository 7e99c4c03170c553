"""Checkpoints: model weights as safetensors, training state loadable with weights_only=True.

A checkpoint directory holds::

    generator.safetensors  generator_ema.safetensors  discriminator.safetensors
    training_state.pt      (optimizers, schedulers, step, GradScaler, RNG states)
    meta.json              (family, full config, step, validation metrics)

Nothing in it is ever unpickled: ``torch.load(..., weights_only=True)`` accepts only
tensors and plain containers, and safetensors holds tensors only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors.torch import load_file, save_file

from raygan.platform.core.errors import CheckpointError, StorageError

WEIGHT_FILES = ("generator", "generator_ema", "discriminator")
STATE_FILE = "training_state.pt"
META_FILE = "meta.json"




def _plain(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def save_checkpoint(directory: str | os.PathLike, engine, meta: Dict[str, Any]) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, sd in engine.state_dicts().items():
        save_file(_plain(sd), str(d / f"{name}.safetensors"))
    torch.save(engine.training_state(), d / STATE_FILE)
    (d / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return d


def read_meta(directory: str | os.PathLike) -> Dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise CheckpointError(f"{directory} is not a raygan checkpoint: {META_FILE} is missing")
    return json.loads(path.read_text())


def load_weights(directory: str | os.PathLike) -> Dict[str, Dict[str, torch.Tensor]]:
    d = Path(directory)
    weights = {n: load_file(str(d / f"{n}.safetensors")) for n in WEIGHT_FILES
               if (d / f"{n}.safetensors").exists()}
    if "generator" not in weights:
        raise CheckpointError(f"{directory} holds no generator.safetensors")
    return weights


def load_checkpoint(directory: str | os.PathLike, engine, with_state: bool = True) -> Dict[str, Any]:
    """Restore ``engine`` from ``directory``; returns the checkpoint's meta."""
    meta = read_meta(directory)
    weights = load_weights(directory)
    state = None
    if with_state and (Path(directory) / STATE_FILE).exists():
        state = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)
    engine.load_state(weights, state)
    return meta


def checkpoint_step(uri: str) -> int:
    """The step in a ``checkpoint_<step>`` folder name (-1 for other names)."""
    tail = uri.rstrip("/").rsplit("/", 1)[-1]
    head, _, digits = tail.partition("_")
    return int(digits) if head == "checkpoint" and digits.isdigit() else -1


def newest_complete_checkpoint(run_uri: str, storage_cfg: Any, local_root: str | os.PathLike,
                               after_step: int = -1) -> Optional[Path]:
    """The newest ``checkpoint_*`` folder under ``run_uri`` (local or S3) newer than
    ``after_step`` that is complete, downloaded into ``local_root``; None if there is none.

    Complete means its meta.json, weights and training state all load (weights_only). Ray's
    own run record (``checkpoint_manager_snapshot.json``) is written by its controller when it
    next polls the workers, so an outage or a kill right after a checkpoint can keep that
    checkpoint off the record although it was uploaded whole; the folders themselves are the
    ground truth. A folder cut off mid-upload is skipped with a line saying why.
    """
    from raygan.platform.core import storage

    folders: Dict[int, List[str]] = {}
    for f in storage.list_files(run_uri, storage_cfg=storage_cfg):
        rel = f[len(run_uri.rstrip("/")) + 1:].split("/")
        if len(rel) == 2 and checkpoint_step(rel[0]) > after_step:
            folders.setdefault(checkpoint_step(rel[0]), []).append(f)
    for step in sorted(folders, reverse=True):
        dst = Path(local_root) / f"checkpoint_{step:08d}"
        dst.mkdir(parents=True, exist_ok=True)
        try:
            for f in folders[step]:
                (dst / f.rsplit("/", 1)[-1]).write_bytes(storage.read_bytes(f, storage_cfg))
            if read_meta(dst).get("step") != step or not (dst / STATE_FILE).exists():
                raise CheckpointError(f"{META_FILE} or {STATE_FILE} is missing or names another step")
            load_weights(dst)
            torch.load(dst / STATE_FILE, map_location="cpu", weights_only=True)
        except StorageError as exc:
            if exc.transient:  # an outage is not an incomplete checkpoint
                raise
            print(f"raygan: skipping incomplete checkpoint_{step:08d} in {run_uri}: {exc}", flush=True)
            continue
        except Exception as exc:  # noqa: BLE001 -- an incomplete folder: try the one before
            print(f"raygan: skipping incomplete checkpoint_{step:08d} in {run_uri}: {exc}", flush=True)
            continue
        return dst
    return None


def generator_weights(directory: str | os.PathLike, prefer_ema: bool = True
                      ) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(config dict, generator state dict) of a checkpoint; the EMA generator if present."""
    meta = read_meta(directory)
    weights = load_weights(directory)
    sd = weights.get("generator_ema") if prefer_ema else None
    return meta["config"], (sd if sd is not None else weights["generator"])
