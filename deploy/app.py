"""The restoration endpoints: a Ray Serve application built from the MLflow registry.

``build_app(args)`` (the import path in ``deploy/serve_config.yaml``) makes one
``restore-<task>`` deployment per task, each holding one generator, and an ``Ingress``
deployment: FastAPI inside Serve, with OpenAPI docs at ``/docs``::

    GET  /                    a page: pick a task and a photo, see before / after
    GET  /healthz             {"status": "ok", "tasks": [...], "code": <raygan fingerprint>}  (no token)
    GET  /v1/models           the model behind each task: name, version, source, scale
    POST /v1/<task>           image bytes (raw body or multipart field "image") -> restored
    POST /v1/<task>/degrade   the same photo degraded as the model's training data was

Query options of ``POST /v1/<task>``: ``format`` png (default) | jpeg | webp, ``quality``
(JPEG/WebP), ``bits`` (the input's bit depth when a 16-bit file holds fewer bits, e.g. 12),
``tile`` (a smaller tile than the task's). Responses carry ``X-Model-Name``, ``X-Model-Version`` and
``X-Model-Task``. Errors are JSON ``{"error": "..."}`` with a 4xx code; every ``/v1`` route
needs ``Authorization: Bearer <token>``, the token read from ``RAYGAN_SERVE_TOKEN`` or the
file named by ``RAYGAN_SERVE_TOKEN_FILE`` (the Ingress refuses to start without one).

**Models.** A task's ``model`` is a model URI: ``models:/name@alias`` (e.g. ``@champion``,
what the sweeps promote), ``models:/name/<version>``, ``runs:/<id>/generator``, or a
checkpoint folder (local or ``s3://``). ``build_app`` resolves an alias to its version at
deploy time and hands it to the replicas as their ``user_config``: promoting a new champion
and deploying again rolls the replicas over to it. A replica loads and warms its generator
(:class:`TaskModel`) before it takes traffic; ``serve.run`` from Python replaced the replica
on every redeploy in the tests (a rolling update that failed no request), and where Serve
only reconfigures a running replica (a changed user_config under ``serve deploy``),
``reconfigure`` loads the new generator beside the old one and swaps it in. A reference
that does not resolve fails ``build_app`` with one line.

**Any size.** The ingress cuts an image into overlapping tiles (:mod:`raygan.deploy.tiling`)
and sends each to the task's deployment, whose ``@serve.batch`` method stacks tiles of equal
shape from concurrent requests into one forward pass. At most ``tiles_in_flight`` tiles of a
request are outstanding, so the generator's memory is bounded by the tile size.
Weights are read from safetensors only; nothing is unpickled from a request or storage.
"""



import asyncio
import hmac
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from raygan.deploy.client import TOKEN_ENV, TOKEN_FILE_ENV, token_from_env
from raygan.deploy.images import FORMATS, MIN_SIDE, BadImage, decode_image, encode_image
from raygan.deploy.tiling import TilePlan
from raygan.platform import submitted_code
from raygan.platform.errors import ModelRefError

#: data tasks a deployment can serve: one image in, one image out
SERVABLE_TASKS = ("jpeg", "bitdepth", "sr", "face_sr")
#: a CPU forward pass takes at most this many pixels: the WCDGAN demo generator restored 2.61
#: 128x128 tiles/s one at a time and 1.20/s stacked by 8 (1 thread); 64x64 tiles were as fast
#: stacked by 4 as alone
CPU_FORWARD_PIXELS = 128 * 128


# ------------------------------------------------------------------------- settings


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


# ---------------------------------------------------------------------- model refs


def _registry_client(tracking_uri: Optional[str]):
    from mlflow import MlflowClient

    from raygan.platform.config import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def resolve_model_ref(ref: str, tracking_uri: Optional[str] = None, storage_cfg: Any = None) -> Dict[str, str]:
    """``{"model": URI pinned to a version, "name", "version", "source": ref}`` or
    :class:`ModelRefError` naming what does not exist."""
    from raygan.platform import storage

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


def _rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """BT.601 studio range (MATLAB rgb2ycbcr) of (B, 3, H, W) in [0, 1], in [0, 1]."""
    m = x.new_tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
    off = x.new_tensor([16.0, 128.0, 128.0]).view(1, 3, 1, 1)
    return (torch.einsum("ij,bjhw->bihw", m, x) + off) / 255.0


def _ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    m = torch.linalg.inv(x.new_tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0],
                                       [112.0, -93.786, -18.214]]))
    off = x.new_tensor([16.0, 128.0, 128.0]).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", m, x * 255.0 - off)


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
        ycc = _rgb_to_ycbcr(x)
        y = self.restorer(ycc[:, :1])
        chroma = ycc[:, 1:]
        if self.scale > 1:
            chroma = torch.nn.functional.interpolate(chroma, scale_factor=self.scale, mode="bicubic",
                                                     align_corners=False)
        return _ycbcr_to_rgb(torch.cat([y, chroma], 1)).clamp(0, 1)

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


# ---------------------------------------------------------------------- deployments


def _deployments():
    """The Serve deployment classes (built lazily so that importing this module, e.g. for
    :class:`TaskModel` or :func:`resolve_model_ref`, does not import Ray Serve)."""
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from ray import serve
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @serve.deployment(name="restore")
    class RestoreDeployment:
        """One task's replica: its generator (reloaded in place when the user_config names
        another version) and the tile batcher."""

        def __init__(self, task: str, settings: Dict[str, Any]):
            submitted_code.check_running(os.environ.get(submitted_code.CODE_ENV))
            self.task, self.settings = task, ServeSettings(**settings)
            self.model: Optional[TaskModel] = None
            self.batches = {"batches": 0, "tiles": 0, "largest_batch": 0}  # what @serve.batch formed
            self.restore_tiles.set_max_batch_size(self.settings.max_batch_size)
            self.restore_tiles.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s)

        def reconfigure(self, config: Dict[str, str]) -> None:
            if self.model is not None and self.model.ref.get("model") == config.get("model"):
                return
            # load and warm the new generator beside the old one, then swap: requests in
            # flight finish on the old one, none waits on a half-loaded model
            self.model = TaskModel(self.task, config, self.settings.tracking_uri, self.settings.warm_size,
                                   forward_pixels=self.settings.forward_pixels)

        def check_health(self) -> None:
            if self.model is None:
                raise RuntimeError(f"task {self.task}: no generator loaded")

        async def info(self) -> Dict[str, Any]:
            return {**self.model.info(), **self.batches, "code": submitted_code.fingerprint(),
                    "replica": serve.get_replica_context().replica_id.unique_id}

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
        async def restore_tiles(self, tiles: List[np.ndarray]) -> List[Tuple[np.ndarray, str]]:
            model = self.model
            b = self.batches
            b.update(batches=b["batches"] + 1, tiles=b["tiles"] + len(tiles),
                     largest_batch=max(b["largest_batch"], len(tiles)))
            outs = await asyncio.to_thread(model.restore_batch, list(tiles))
            # float16 halves what crosses Ray's object store (error < 1/2000: below a uint8 level)
            return [(o.astype(np.float16), model.ref["version"]) for o in outs]

        async def degrade(self, rgb: np.ndarray) -> np.ndarray:
            return await asyncio.to_thread(self.model.degrade, rgb)

    api = FastAPI(title="raygan restoration endpoints",
                  description="GAN image restoration: JPEG artifacts, bit depth, super-resolution. "
                              "Send image bytes; get the restored image.", version="1")

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):  # 404 / 405 from routing, our own raises
        return error(exc.status_code, str(exc.detail))

    @api.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return error(422, "; ".join(parts)[:500] or "invalid request")

    @api.exception_handler(BadImage)
    async def _bad_image(request, exc):
        return error(exc.status, exc.message)

    @api.exception_handler(Exception)
    async def _unexpected(request, exc):  # a bug or a dead replica: still JSON, never a page
        return error(500, f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300])

    image_body = {"requestBody": {"required": True, "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                           "properties": {"image": {"type": "string", "format": "binary"}}}},
    }}}
    image_response = {"content": {m: {} for _, m in FORMATS.values()}, "description": "the image"}
    errors = {code: {"description": why, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"error": {"type": "string"}}}}}}
        for code, why in ((400, "empty, truncated or corrupt"), (401, "missing or wrong bearer token"),
                          (404, "unknown task"), (413, "too many pixels or bytes"),
                          (415, "not an image"), (422, "invalid option or image"))}

    @serve.deployment(name="Ingress")
    @serve.ingress(api)
    class Ingress:
        def __init__(self, models: Dict[str, Any], settings: Dict[str, Any]):
            submitted_code.check_running(os.environ.get(submitted_code.CODE_ENV))
            self.models = models
            self.settings = ServeSettings(**settings)
            self.token = read_token()
            self._info: Dict[str, Dict[str, Any]] = {}

        # -- helpers ----------------------------------------------------------------
        def _auth(self, request: Request) -> None:
            given = request.headers.get("authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.token.encode()):
                raise StarletteHTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

        def _handle(self, task: str):
            if task not in self.models:
                raise StarletteHTTPException(404, f"unknown task {task!r}; tasks: {sorted(self.models)}")
            return self.models[task]

        async def _body(self, request: Request) -> bytes:
            limit = self.settings.max_body_bytes
            length = request.headers.get("content-length")
            if length and length.isdigit() and int(length) > limit:
                raise BadImage(413, f"request body of {length} bytes; at most {limit}")
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                try:
                    form = await request.form(max_files=1, max_fields=8)
                except Exception as exc:  # noqa: BLE001 -- malformed multipart
                    raise BadImage(400, f"malformed multipart body: {exc}"[:300]) from None
                upload = form.get("image")
                if upload is None or isinstance(upload, str):
                    raise BadImage(422, "multipart body without a file field 'image'")
                data = await upload.read(limit + 1)
            else:
                data = bytearray()
                async for chunk in request.stream():
                    data += chunk
                    if len(data) > limit:
                        break
                data = bytes(data)
            if len(data) > limit:
                raise BadImage(413, f"request body over {limit} bytes")
            return data

        async def _decoded(self, request: Request, bits: Optional[int]):
            data = await self._body(request)
            return await run_in_threadpool(decode_image, data, self.settings.max_pixels, bits)

        async def _refresh(self, task: str) -> Dict[str, Any]:
            """The task model's name, version and scale (cached: one round trip per model
            version, not per request)."""
            self._info[task] = await self.models[task].info.remote()
            return self._info[task]

        # -- routes -----------------------------------------------------------------
        @api.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def page(self):
            return HTMLResponse(page_html())

        @api.get("/healthz")
        async def healthz(self):
            return {"status": "ok", "tasks": sorted(self.models), "code": submitted_code.fingerprint()}

        @api.get("/v1/models", responses={401: errors[401]})
        async def list_models(self, request: Request):
            self._auth(request)
            infos = await asyncio.gather(*(self._refresh(t) for t in sorted(self.models)))
            return {"models": list(infos)}

        @api.post("/v1/{task}/degrade", openapi_extra=image_body,
                  responses={200: image_response, **errors})
        async def degrade(self, task: str, request: Request,
                          bits: Optional[int] = Query(None, ge=1, le=16)):
            self._auth(request)
            handle = self._handle(task)
            decoded = await self._decoded(request, bits)
            info = self._info.get(task) or await self._refresh(task)
            side, scale = min(decoded.rgb.shape[:2]), info["scale"]
            if side < MIN_SIDE * scale:  # checked here: an error raised in a replica is a 500
                raise BadImage(422, f"image too small to downscale x{scale}: {side} px; at least "
                                    f"{MIN_SIDE * scale} px a side")
            low = await handle.degrade.remote(decoded.rgb)
            body, media = await run_in_threadpool(encode_image, low, "png", 95, decoded.gray)
            return Response(body, media_type=media, headers={"X-Model-Task": task})

        @api.post("/v1/{task}", openapi_extra=image_body, responses={200: image_response, **errors})
        async def restore(self, task: str, request: Request,
                          format: str = Query("png", pattern="^(png|jpeg|webp)$"),
                          quality: int = Query(95, ge=1, le=100),
                          bits: Optional[int] = Query(None, ge=1, le=16),
                          tile: Optional[int] = Query(None, ge=32, le=2048)):
            self._auth(request)
            handle = self._handle(task)
            decoded = await self._decoded(request, bits)
            info = self._info.get(task) or await self._refresh(task)
            rgb = decoded.rgb
            out_pixels = rgb.shape[0] * rgb.shape[1] * info["scale"] ** 2
            if out_pixels > self.settings.max_pixels:
                raise BadImage(413, f"the x{info['scale']} result of {rgb.shape[1]}x{rgb.shape[0]} would be "
                                    f"{out_pixels} pixels; this server makes at most {self.settings.max_pixels}")
            # the task's tile is a ceiling: a client may ask for smaller tiles, never larger
            # (generator memory grows with the tile; DAGAN's attention with its square)
            ceiling = self.settings.tasks[task].get("tile", self.settings.tile)
            plan = TilePlan(rgb.shape[0], rgb.shape[1], min(tile or ceiling, ceiling),
                            self.settings.tile_overlap, info["scale"])
            gate = asyncio.Semaphore(self.settings.tiles_in_flight)
            versions = set()

            async def one(i: int, t: np.ndarray) -> None:
                async with gate:
                    out, version = await handle.restore_tiles.remote(np.ascontiguousarray(t))
                versions.add(version)
                plan.add(i, out)

            await asyncio.gather(*(one(i, t) for i, t in enumerate(plan.tiles(rgb))))
            body, media = await run_in_threadpool(encode_image, plan.result(), format, quality, decoded.gray)
            version = max(versions, key=lambda v: (len(v), v))
            if version != info["version"]:  # the replicas moved to another model: re-read it
                info = await self._refresh(task)
            return Response(body, media_type=media, headers={
                "X-Model-Name": info["name"], "X-Model-Version": version, "X-Model-Task": task,
                "X-Tiles": str(len(plan))})

    return RestoreDeployment, Ingress


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


def page_html() -> str:
    try:
        return (resources.files("raygan.deploy") / "static" / "index.html").read_text()
    except (FileNotFoundError, OSError):
        return "<!doctype html><title>raygan</title><p>The page is missing from this install."


def build_app(args: Dict[str, Any]):
    """The Serve application of ``args`` (see :class:`ServeSettings`); model references are
    resolved here, so one that does not exist fails the deploy with one line. This is the
    import path of ``deploy/serve_config.yaml``: Serve calls an application builder with the
    config's ``args`` as its one parameter, and applies the config's ``deployments`` itself."""
    return build_application(args)


def build_application(args: Optional[Dict[str, Any]] = None,
                      deployment_options: Optional[Dict[str, Dict[str, Any]]] = None):
    """:func:`build_app` with ``deployment_options`` (name -> ``.options()`` kwargs, the
    ``deployments`` entries of a Serve config) applied here, for programmatic runs
    (:mod:`raygan.deploy.serving`), where no Serve config file does it."""
    from raygan.platform.config import resolve_tracking_uri

    settings = ServeSettings.from_args(args)
    # an absolute URI: replicas need not share the deployer's working directory
    settings.tracking_uri = resolve_tracking_uri(settings.tracking_uri)
    opts = {k: {o: v for o, v in d.items() if o != "name"} for k, d in (deployment_options or {}).items()}
    RestoreDeployment, Ingress = _deployments()
    bound = {}
    for task, spec in settings.tasks.items():
        ref = resolve_model_ref(spec["model"], settings.tracking_uri)
        name = f"restore-{task}"
        bound[task] = RestoreDeployment.options(name=name, user_config=ref, **opts.get(name, {})).bind(
            task, asdict(settings))
    return Ingress.options(**opts.get("Ingress", {})).bind(bound, asdict(settings))
