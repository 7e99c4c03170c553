"""Load a trained generator from a checkpoint dir, an MLflow run or a registered model.

Accepted URIs: a local checkpoint directory or ``s3://.../checkpoint_*``; ``runs:/<id>/generator``;
``models:/<name>/<version>`` or ``models:/<name>@<alias>``. Weights are read from
safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch
from torch import nn


def build_generator(config: Dict[str, Any], state_dict: Dict[str, torch.Tensor]) -> nn.Module:
    from raygan.platform.config import config_from_dict
    from raygan.platform.engine import build_family

    cfg = config_from_dict(config)
    family = build_family(cfg)
    generator = family.build_generator()
    generator.load_state_dict(state_dict)
    return Restorer(generator, family).eval()


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
        ratio = self.upscale()
        multiple = max(1, -(-int(getattr(self.family, "size_multiple", 1)) // ratio))
        h, w = x.shape[-2:]
        ph, pw = (-h) % multiple, (-w) % multiple
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
        out = self.family.restored(self.family.generator_forward(self.generator, {"input": x}))
        return out[..., :h * ratio, :w * ratio].clamp(0, 1)


def generator_from_files(config_file: str, weights_file: str) -> Tuple[nn.Module, Dict[str, Any]]:
    from safetensors.torch import load_file

    config = json.loads(Path(config_file).read_text())
    return build_generator(config, load_file(weights_file)), config


def _download_checkpoint(uri: str, dst: str) -> str:
    from raygan.platform import storage

    for f in storage.list_files(uri):
        name = f.rsplit("/", 1)[-1]
        (Path(dst) / name).write_bytes(storage.read_bytes(f))
    return dst


def load_generator(uri: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """(generator in eval mode, run config dict) for any supported URI."""
    from raygan.platform.checkpoint import generator_weights

    if uri.startswith(("models:/", "runs:/", "mlflow-artifacts:")):
        import mlflow

        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
        art = Path(local) / "artifacts"
        return generator_from_files(str(art / "config.json"), str(art / "generator.safetensors"))
    if uri.startswith("s3://"):
        tmp = tempfile.mkdtemp(prefix="raygan-ckpt-")
        uri = _download_checkpoint(uri, tmp)
    config, sd = generator_weights(uri)
    return build_generator(config, sd), config


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
