"""Restore images through the endpoints (:mod:`raygan.deploy.app`): a Python client and a CLI.

    export RAYGAN_SERVE_TOKEN=...            # or RAYGAN_SERVE_TOKEN_FILE=path, or --token-file
    python -m raygan.deploy.client --url http://127.0.0.1:8000 --task jpeg photo.jpg restored.png
    python -m raygan.deploy.client --task jpeg --format webp --tile 256 photos/ restored/
    python -m raygan.deploy.client --models

A folder is restored recursively (images by extension, relative paths kept, the extension
taken from ``--format``), a few files at a time; a file that fails is reported and skipped.
Exit status 0 when everything was restored, 1 otherwise, with one line per error.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import httpx

TOKEN_ENV, TOKEN_FILE_ENV = "RAYGAN_SERVE_TOKEN", "RAYGAN_SERVE_TOKEN_FILE"
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
OUT_EXT = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


class ServeError(Exception):
    """An error answer of the endpoints: ``status`` (HTTP code) and ``message`` (its JSON "error")."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status, self.message = status, message


def token_from_env(token_file: Optional[str] = None) -> Optional[str]:
    """``token_file``'s content, else ``$RAYGAN_SERVE_TOKEN``, else ``$RAYGAN_SERVE_TOKEN_FILE``'s."""
    path = token_file or (None if os.environ.get(TOKEN_ENV, "").strip() else os.environ.get(TOKEN_FILE_ENV))
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as exc:
            raise ValueError(f"token file {path}: {exc.strerror or exc}") from None
    return os.environ.get(TOKEN_ENV, "").strip() or None


class RestoreClient:
    """``RestoreClient("http://127.0.0.1:8000").restore("a.jpg", "jpeg")`` -> (bytes, headers).
    Thread-safe (one pooled :class:`httpx.Client`); usable as a context manager."""

    def __init__(self, url: str = "http://127.0.0.1:8000", token: Optional[str] = None, timeout: float = 300.0):
        token = token or token_from_env()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RestoreClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                message = str(r.json()["error"])
            except Exception:  # noqa: BLE001 -- not our JSON (a proxy's page, a 5xx)
                message = r.text.strip().splitlines()[0][:300] if r.text.strip() else r.reason_phrase
            raise ServeError(r.status_code, message)
        return r

    def health(self) -> Dict:
        return self._check(self.http.get("/healthz")).json()

    def models(self) -> list:
        """The model behind each task: name, version, source, scale, ..."""
        return self._check(self.http.get("/v1/models")).json()["models"]

    def restore(self, image: Union[bytes, str, Path], task: str, format: str = "png",
                tile: Optional[int] = None, quality: Optional[int] = None) -> Tuple[bytes, Dict[str, str]]:
        """The restored image's bytes and the response headers (X-Model-Name, X-Model-Version, ...)."""
        data = image if isinstance(image, (bytes, bytearray)) else Path(image).read_bytes()
        params = {"format": format, **({"tile": tile} if tile else {}), **({"quality": quality} if quality else {})}
        r = self._check(self.http.post(f"/v1/{task}", content=bytes(data), params=params,
                                       headers={"Content-Type": "application/octet-stream"}))
        return r.content, dict(r.headers)

    def restore_file(self, src: Union[str, Path], dst: Union[str, Path], task: str, **options) -> Dict[str, str]:
        body, headers = self.restore(src, task, **options)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        Path(dst).write_bytes(body)
        return headers

    def restore_folder(self, src_dir: Union[str, Path], dst_dir: Union[str, Path], task: str,
                       format: str = "png", concurrency: int = 4, progress: bool = True, **options) -> Dict:
        """Every image under ``src_dir`` to the same relative path under ``dst_dir``;
        ``{"restored": n, "failed": [(path, message), ...]}``."""
        from tqdm import tqdm

        src_dir, dst_dir = Path(src_dir), Path(dst_dir)
        files = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        summary: Dict = {"restored": 0, "failed": []}

        def one(p: Path) -> None:
            dst = (dst_dir / p.relative_to(src_dir)).with_suffix(OUT_EXT[format])
            self.restore_file(p, dst, task, format=format, **options)

        with ThreadPoolExecutor(max(1, concurrency)) as pool, \
                tqdm(total=len(files), unit="img", disable=not progress, desc=task) as bar:
            futures = {pool.submit(one, p): p for p in files}
            for fut in as_completed(futures):
                try:
                    fut.result()
                    summary["restored"] += 1
                except (ServeError, httpx.HTTPError, OSError) as exc:
                    summary["failed"].append((str(futures[fut]), _one_line(exc)))
                bar.update(1)
        return summary


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, (ServeError, ValueError)):
        return str(exc)
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m raygan.deploy.client", description=__doc__.split("\n")[0])
    p.add_argument("src", nargs="?", help="an image file or a folder of images")
    p.add_argument("dst", nargs="?", help="the output file (or folder, for a folder or to keep the name)")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--task", help="the endpoint: jpeg, dequantize, sr, face-sr, ... (see --models)")
    p.add_argument("--format", default="png", choices=sorted(OUT_EXT))
    p.add_argument("--tile", type=int, default=None, help="tile size (server default: its config's)")
    p.add_argument("--quality", type=int, default=None, help="JPEG/WebP quality of the answer")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight for a folder")
    p.add_argument("--token-file", default=None, help=f"file holding the token (default: ${TOKEN_ENV} / ${TOKEN_FILE_ENV})")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--models", action="store_true", help="list the served models and exit")
    args = p.parse_args(argv)
    if not args.models and not (args.src and args.dst and args.task):
        p.error("give --task SRC DST (or --models)")
    try:
        client = RestoreClient(args.url, token_from_env(args.token_file), args.timeout)
        with client:
            if args.models:
                for m in client.models():
                    print(f"{m['task']}: {m['name']} v{m['version']} ({m.get('family')}, x{m.get('scale')}, "
                          f"{m.get('degradation')}) from {m['source']}")
                return 0
            src, dst = Path(args.src), Path(args.dst)
            options = {"format": args.format, "tile": args.tile, "quality": args.quality}
            if src.is_dir():
                summary = client.restore_folder(src, dst, args.task, concurrency=args.concurrency,
                                                progress=sys.stderr.isatty(), **options)
                for path, message in summary["failed"]:
                    print(f"client: {path}: {message}", file=sys.stderr)
                print(f"restored {summary['restored']} image(s) into {dst}, {len(summary['failed'])} failed")
                return 1 if summary["failed"] else 0
            if dst.is_dir():
                dst = dst / (src.stem + OUT_EXT[args.format])
            headers = client.restore_file(src, dst, args.task, **options)
            print(f"{src} -> {dst} ({headers.get('x-model-name')} v{headers.get('x-model-version')}, "
                  f"{headers.get('x-tiles')} tile(s))")
            return 0
    except (ServeError, httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        print(f"client: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
