"""The Serve application's ``args`` (``applications[].args`` of ``deploy/serve_config.yaml``),
validated: what every deployment of the application is built from; and the bearer token,
which comes from the cluster's environment, never from the config."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional

from raygan.deploy.client import TOKEN_ENV, TOKEN_FILE_ENV, token_from_env


@dataclass
class ServeSettings:
    """``args`` of the application in serve_config.yaml (unknown keys are refused)."""

    #: task name -> {model: <model URI>, tile: <px, optional>}: one deployment per task
    tasks: Dict[str, Dict[str, str]] = field(default_factory=dict)
    tile: int = 256             # tile side in pixels (tasks.<task>.tile sets one task's)
    tile_overlap: int = 32      # pixels shared by neighbouring tiles, cross-faded
    max_pixels: int = 40_000_000  # most pixels in the input and in the output (413 beyond)
    max_body_bytes: int = 100 * 1024 * 1024  # largest request body (413 beyond)
    max_batch_size: int = 8     # tiles @serve.batch stacks across requests
    batch_wait_timeout_s: float = 0.01  # how long a batch waits to fill
    tiles_in_flight: int = 8    # tiles of one request outstanding at a time
    tracking_uri: Optional[str] = None  # MLflow registry (None: MLFLOW_TRACKING_URI, else local sqlite)
    warm_size: int = 64         # side of the blank image a replica restores before taking traffic
    #: most pixels in one forward pass (None: all of a batch on a GPU, CPU_FORWARD_PIXELS on
    #: a CPU, where a stacked forward is slower per image: see TaskModel.restore_batch)
    forward_pixels: Optional[int] = None

    @classmethod
    def from_args(cls, args: Optional[Dict[str, Any]]) -> "ServeSettings":
        args = dict(args or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise ValueError(f"serve args: unknown key(s) {unknown}; known: {sorted(known)}")
        s = cls(**args)
        if not s.tasks or not isinstance(s.tasks, dict):
            raise ValueError("serve args: `tasks` must map task names to {model: <model URI>}")
        for task, spec in s.tasks.items():
            if not str(task).replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"serve args: task name {task!r}: use letters, digits, '-' and '_'")
            if not isinstance(spec, dict) or not isinstance(spec.get("model"), str) or set(spec) - {"model", "tile"}:
                raise ValueError(f"serve args: tasks.{task} must be {{model: <model URI>, tile: <px, optional>}}, "
                                 f"got {spec!r}")
            if "tile" in spec and (not isinstance(spec["tile"], int) or spec["tile"] <= s.tile_overlap):
                raise ValueError(f"serve args: tasks.{task}.tile must be an integer > tile_overlap, got {spec['tile']!r}")
        for name in ("tile", "max_pixels", "max_body_bytes", "max_batch_size", "tiles_in_flight", "warm_size"):
            if int(getattr(s, name)) <= 0:
                raise ValueError(f"serve args: {name} must be > 0, got {getattr(s, name)!r}")
        if not 0 <= int(s.tile_overlap) < int(s.tile):
            raise ValueError(f"serve args: tile_overlap must be in [0, tile), got {s.tile_overlap}")
        return s


def read_token() -> str:
    """The bearer token, read as the client reads it (:func:`raygan.deploy.client.token_from_env`:
    ``$RAYGAN_SERVE_TOKEN``, else the file ``$RAYGAN_SERVE_TOKEN_FILE``); an error without one."""
    try:
        token = token_from_env()
    except ValueError as exc:
        raise RuntimeError(f"{TOKEN_FILE_ENV}: cannot read the token: {exc}") from None
    if not token:
        raise RuntimeError(f"no bearer token configured: set {TOKEN_ENV} or {TOKEN_FILE_ENV} "
                           "in the environment of the Ray cluster")
    return token
