"""A trained generator as users load it: any model URI -> a module that restores images.

:func:`load_generator` takes what :func:`raygan.platform.tracking.fetch_checkpoint` takes
(a checkpoint directory, local or ``s3://``; ``runs:/<id>/generator``; ``models:/name/version``
or ``models:/name@alias``) and returns a :class:`Restorer`: the generator plus its family's
output convention, for evaluation, the MLflow pyfunc model and the serving endpoints.
Weights are read from safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from raygan.platform.checkpoint import generator_weights
from raygan.platform.tracking import fetch_checkpoint
from raygan.platform.core.config import StorageConfig, build_config
from raygan.platform.engine import build_family


class Restorer(nn.Module):
    """A generator plus its family's output convention: degraded (B,C,H,W) -> restored image."""

    def __init__(self, generator: nn.Module, family: Any):
        super().__init__()
        self.generator = generator
        self.family = family

    def upscale(self) -> int:
        """Output/input size ratio: the SR scale for super-resolution tasks, else 1."""
        cfg = self.family.data_cfg
        return int(cfg.scale) if cfg is not None and cfg.task in ("sr", "face_sr") else 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore ``x``; inputs of any size are reflect-padded to what G needs, then cropped."""
        return self.family.restore_any_size(self.generator, x, self.upscale()).clamp(0, 1)


def build_restorer(config: Dict[str, Any], state_dict: Dict[str, torch.Tensor]) -> Restorer:
    """The generator of a run config (``to_dict`` output) with ``state_dict`` loaded, in eval mode."""
    family = build_family(build_config(config))
    generator = family.build_generator()
    generator.load_state_dict(state_dict)
    return Restorer(generator, family).eval()


def load_generator(uri: str, tracking_uri: Optional[str] = None,
                   storage_cfg: Optional[StorageConfig] = None) -> Tuple[Restorer, Dict[str, Any]]:
    """(restorer in eval mode, run config dict) for any model URI (the EMA generator if the
    checkpoint has one)."""
    config, sd = generator_weights(fetch_checkpoint(uri, tracking_uri, storage_cfg))
    return build_restorer(config, sd), config


def generator_from_files(config_file: str, weights_file: str) -> Tuple[Restorer, Dict[str, Any]]:
    """(restorer, config) from a config JSON and a safetensors file (the pyfunc artifacts)."""
    config = json.loads(Path(config_file).read_text())
    return build_restorer(config, load_file(weights_file)), config


@torch.no_grad()
def restore_array(model: nn.Module, images: Any) -> np.ndarray:
    """Run ``model`` on (N, H, W, C) or (H, W, C) images (uint8 or float in [0, 1])."""
    arr = np.asarray(images)
    single = arr.ndim == 3
    if single:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C) or (H, W, C), got {arr.shape}")
    x = torch.from_numpy(arr.astype(np.float32) / (255.0 if arr.dtype == np.uint8 else 1.0))
    x = x.permute(0, 3, 1, 2).contiguous()
    device = next(model.parameters()).device
    y = model(x.to(device))
    y = y.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return y[0] if single else y
