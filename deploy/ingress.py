"""The ``Ingress`` deployment: FastAPI inside Serve. It checks the token, decodes the image,
cuts it into tiles for the task's replicas, blends their results and encodes the answer; the
routes are listed in :mod:`raygan.deploy.app`. Errors are JSON ``{"error": ...}``, never a
page or a traceback."""


import asyncio
import hmac
import os
from importlib import resources
from typing import Any, Dict, Optional

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from raygan.deploy.images import FORMATS, MIN_SIDE, BadImage, decode_image, encode_image
from raygan.deploy.settings import ServeSettings, read_token
from raygan.deploy.tiling import TilePlan
from raygan.platform.core import submitted_code


# defined before the deployment: Serve serializes the Ingress class when it is decorated,
# with the module-level names its methods use at that moment
def page_html() -> str:
    try:
        return (resources.files("raygan.deploy") / "static" / "index.html").read_text()
    except (FileNotFoundError, OSError):
        return "<!doctype html><title>raygan</title><p>The page is missing from this install."


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
