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
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load_file, save_file

from raygan.platform.errors import CheckpointError

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


def generator_weights(directory: str | os.PathLike, prefer_ema: bool = True
                      ) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor]]:
    """(config dict, generator state dict) of a checkpoint; the EMA generator if present."""
    meta = read_meta(directory)
    weights = load_weights(directory)
    sd = weights.get("generator_ema") if prefer_ema else None
    return meta["config"], (sd if sd is not None else weights["generator"])
