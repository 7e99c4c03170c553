"""What a replica holds: a task's generator, loaded from a model reference.

:func:`resolve_model_ref` pins ``models:/name@alias`` (and the other reference forms) to one
version, or fails with one line (:class:`ModelRefError`); :class:`TaskModel` loads that
version's generator and restores batches of uint8 tiles. Neither needs Ray Serve: the
offline ``raygan restore``, the serving benchmark's bare limit and the tests use them as
they are.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from raygan.platform.core.colour import rgb_to_ycbcr, ycbcr_to_rgb
from raygan.platform.core.errors import ModelRefError

#: data tasks a deployment can serve: one image in, one image out
SERVABLE_TASKS = ("jpeg", "bitdepth", "sr", "face_sr")
#: a CPU forward pass takes at most this many pixels: the WCDGAN demo generator restored 2.61
#: 128x128 tiles/s one at a time and 1.20/s stacked by 8 (1 thread); 64x64 tiles were as fast
#: stacked by 4 as alone
CPU_FORWARD_PIXELS = 128 * 128


def _registry_client(tracking_uri: Optional[str]):
    from mlflow import MlflowClient

    from raygan.platform.core.config import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def resolve_model_ref(ref: str, tracking_uri: Optional[str] = None, storage_cfg: Any = None) -> Dict[str, str]:
    """``{"model": URI pinned to a version, "name", "version", "source": ref}`` or
    :class:`ModelRefError` naming what does not exist."""
    from raygan.platform.core import storage

    if ref.startswith("models:/"):
        body = ref[len("models:/"):]
        client, uri = _registry_client(tracking_uri)
        try:
            if "@" in body:
                name, alias = body.split("@", 1)
                mv = client.get_model_version_by_alias(name, alias)
            else:
                name, _, version = body.partition("/")
                if not name or not version:
                    raise ModelRefError(f"model {ref!r}: expected models:/<name>/<version> or models:/<name>@<alias>")
                if version == "latest":
                    versions = client.search_model_versions(f"name='{name}'")
                    if not versions:
                        raise ModelRefError(f"model {ref!r}: registered model {name!r} has no versions at {uri}")
                    mv = max(versions, key=lambda v: int(v.version))
                else:
                    mv = client.get_model_version(name, version)
        except ModelRefError:
            raise
        except Exception as exc:  # noqa: BLE001 -- MlflowException and friends: one line
            msg = str(getattr(exc, "message", exc)).splitlines()[0]
            raise ModelRefError(f"model {ref!r} does not resolve in the registry at {uri}: {msg}") from None
        return {"model": f"models:/{mv.name}/{mv.version}", "name": mv.name, "version": str(mv.version),
                "source": ref}
    if ref.startswith("runs:/"):
        run_id = ref[len("runs:/"):].split("/", 1)[0]
        client, uri = _registry_client(tracking_uri)
        try:
            client.get_run(run_id)
            arts = [a.path for a in client.list_artifacts(run_id, "generator")]
        except Exception as exc:  # noqa: BLE001
            msg = str(getattr(exc, "message", exc)).splitlines()[0]
            raise ModelRefError(f"model {ref!r}: no such run at {uri}: {msg}") from None
        if not arts:
            raise ModelRefError(f"model {ref!r}: run {run_id} has no logged generator")
        return {"model": ref, "name": f"run-{run_id[:8]}", "version": run_id, "source": ref}
    # a checkpoint folder, local or s3://
    files = storage.list_files(ref, storage_cfg=storage_cfg)
    if not any(f.endswith("/generator.safetensors") or f.endswith(os.sep + "generator.safetensors")
               for f in files):
        raise ModelRefError(f"model {ref!r}: not a model URI (models:/..., runs:/...) nor a checkpoint "
                            "folder holding generator.safetensors")
    parts = ref.rstrip("/").rsplit("/", 2)
    step = parts[-1].rsplit("_", 1)[-1]
    return {"model": ref, "name": "/".join(parts[-2:]), "version": str(int(step)) if step.isdigit() else parts[-1],
            "source": ref}


# ------------------------------------------------------------------- a task's model


class TaskModel:
    """One task's generator, as a replica holds it (usable without Serve: the benchmark's
    bare limit and the tests). ``restore_batch`` maps uint8 (h, w, 3) tiles to float32
    outputs in [0, 1]; a Y-channel generator restores luma and keeps the input's chroma."""

    def __init__(self, task: str, ref: Dict[str, str], tracking_uri: Optional[str] = None,
                 warm_size: int = 64, device: Optional[str] = None, forward_pixels: Optional[int] = None):
        from raygan.platform.restorer import load_generator

        self.task = task
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            restorer, config = load_generator(ref["model"], tracking_uri)
        except Exception as exc:  # noqa: BLE001 -- a vanished version, a corrupt artifact
            raise ModelRefError(f"task {task}: cannot load {ref['model']}: {exc}".splitlines()[0]) from None
        self.restorer = restorer.to(self.device).eval()
        self.config = config
        self.ref = dict(ref)
        data = restorer.family.data_cfg
        self.data_task = getattr(data, "task", None)
        if self.data_task not in SERVABLE_TASKS:
            raise ModelRefError(f"task {task}: {ref['source']} restores {self.data_task!r} data; "
                                f"endpoints serve one-image tasks only: {SERVABLE_TASKS}")
        self.data_cfg = data
        self.scale = restorer.upscale()
        self.channels = int(getattr(data, "channels", 3))
        self.lock = threading.Lock()
        self.forward_pixels = forward_pixels or (None if self.device.type == "cuda" else CPU_FORWARD_PIXELS)
        self.restore_batch([np.zeros((warm_size, warm_size, 3), np.uint8)])  # warm before traffic

    def info(self) -> Dict[str, Any]:
        from raygan.datasets.degradations import task_tag

        return {"task": self.task, "name": self.ref["name"], "version": self.ref["version"],
                "source": self.ref["source"], "model": self.ref["model"], "scale": self.scale,
                "channels": self.channels, "degradation": task_tag(self.data_cfg),
                "family": self.config.get("family")}

    @torch.no_grad()
    def restore_batch(self, tiles: List[np.ndarray]) -> List[np.ndarray]:
        """Restore uint8 (h, w, 3) tiles; tiles of one shape share forward passes of at
        most ``forward_pixels`` pixels (always at least one tile)."""
        out: List[Optional[np.ndarray]] = [None] * len(tiles)
        groups: List[List[int]] = []
        by_shape: Dict[Tuple[int, ...], List[int]] = {}
        for i, t in enumerate(tiles):
            by_shape.setdefault(tuple(t.shape), []).append(i)
        for shape, idx in by_shape.items():
            per_pass = len(idx) if not self.forward_pixels else max(1, self.forward_pixels // (shape[0] * shape[1]))
            groups.extend(idx[k:k + per_pass] for k in range(0, len(idx), per_pass))
        for idx in groups:
            x = torch.from_numpy(np.stack([tiles[i] for i in idx])).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            with self.lock:  # one forward at a time per replica (CPU threads are shared anyway)
                y = self._forward(x)
            y = y.permute(0, 2, 3, 1).float().cpu().numpy()
            for k, i in enumerate(idx):
                out[i] = y[k]
        return out  # type: ignore[return-value]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 3:
            return self.restorer(x)
        ycc = rgb_to_ycbcr(x)
        y = self.restorer(ycc[:, :1])
        chroma = ycc[:, 1:]
        if self.scale > 1:
            chroma = torch.nn.functional.interpolate(chroma, scale_factor=self.scale, mode="bicubic",
                                                     align_corners=False)
        return ycbcr_to_rgb(torch.cat([y, chroma], 1)).clamp(0, 1)

    def degrade(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` degraded as this model's training inputs were (for before/after views)."""
        from raygan.datasets import degradations as dg

        d = self.data_cfg
        if self.data_task == "jpeg":
            return dg.jpeg(rgb, int(d.quality))
        if self.data_task == "bitdepth":
            return dg.quantize(rgb, int(d.bits), d.expand)
        s = self.scale
        h, w = (rgb.shape[0] // s) * s, (rgb.shape[1] // s) * s
        return dg.bicubic_down(np.ascontiguousarray(rgb[:h, :w]), s)
