"""Restore photos without a server: ``raygan restore --model URI IN OUT``.

The endpoint's own pieces, in one process: the model reference resolves as a deployment's
does (:func:`raygan.deploy.app.resolve_model_ref`: ``models:/name@alias``,
``models:/name/<version>``, ``runs:/<id>/generator``, a checkpoint folder), the generator
is held as a replica holds it (:class:`raygan.deploy.app.TaskModel`: a Y-channel model
restores luma and keeps the chroma; the GPU when there is one), an upload is decoded as the
ingress decodes it (:func:`raygan.deploy.images.decode_image`: EXIF orientation applied,
16-bit scaled to 8 bits, alpha composited on white, grayscale answered in grayscale), and
any size goes through the same overlapping tiles (:func:`raygan.deploy.tiling.restore_tiled`).

``IN`` is a file or a folder (images by extension, recursively; hidden files skipped);
``OUT`` the output file, or a folder (relative paths kept, the extension from the format).
An output never replaces an input: such a plan is refused before anything is restored.
A file that fails is reported in one line and the others go on.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from raygan.deploy.client import IMAGE_EXTS, OUT_EXT
from raygan.deploy.images import BadImage, decode_image, encode_image

#: the endpoints' tile and overlap (deploy/serve_config.yaml); a family whose generator's
#: memory grows faster than the tile's pixels gets the smaller tile its task has there
TILE, OVERLAP = 256, 32
TILE_BY_FAMILY = {"dagan": 96}  # DAGAN's attention: memory grows with the tile's pixels squared
#: offline there is no request to bound, only memory: the float32 result of a 200 MP photo
#: is 2.4 GB
MAX_PIXELS = 200_000_000


class RestorePlanError(ValueError):
    """The inputs and outputs given cannot be restored as asked (missing input, an output
    that would replace an input, an unknown format)."""


def _format_of(path: Path) -> Optional[str]:
    ext = path.suffix.lower()
    return next((f for f, e in OUT_EXT.items() if e == ext or (f == "jpeg" and ext == ".jpeg")), None)


def plan_outputs(src: Any, dst: Any, fmt: Optional[str] = None) -> Tuple[List[Tuple[Path, Path]], str]:
    """``([(input, output), ...], format)`` for a file or a folder ``src``.

    A file goes to ``dst`` (its extension decides the format unless ``fmt`` is given), or
    into ``dst`` when that is a folder. A folder's images go to the same relative paths
    under ``dst`` with the format's extension (``a.jpg`` and ``a.png`` side by side become
    ``a_jpg.png`` and ``a_png.png``). Raises :class:`RestorePlanError` when ``src`` holds no
    image or an output would be one of the inputs."""
    if fmt is not None and fmt not in OUT_EXT:
        raise RestorePlanError(f"--format must be one of {', '.join(sorted(OUT_EXT))}, got {fmt!r}")
    into_folder = str(dst).endswith(("/", os.sep))  # Path() drops a trailing slash
    src, dst = Path(src), Path(dst)
    if src.is_file():
        if dst.is_dir() or into_folder:
            fmt = fmt or "png"
            pairs = [(src, dst / (src.stem + OUT_EXT[fmt]))]
        else:
            fmt = fmt or _format_of(dst) or "png"
            if _format_of(dst) is None:
                dst = dst.with_name(dst.name + OUT_EXT[fmt])
            pairs = [(src, dst)]
    elif src.is_dir():
        fmt = fmt or "png"
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                       and not any(part.startswith(".") for part in p.relative_to(src).parts))
        if not files:
            raise RestorePlanError(f"{src} holds no images ({', '.join(sorted(IMAGE_EXTS))})")
        outs: Dict[Path, List[Path]] = {}
        for p in files:
            outs.setdefault((dst / p.relative_to(src)).with_suffix(OUT_EXT[fmt]), []).append(p)
        pairs = []
        for out, group in outs.items():
            for p in group:
                name = out if len(group) == 1 else out.with_name(f"{p.stem}_{p.suffix[1:].lower()}{OUT_EXT[fmt]}")
                pairs.append((p, name))
        pairs.sort()
    else:
        raise RestorePlanError(f"{src} does not exist")
    inputs = {p.resolve() for p, _ in pairs}
    clash = [(p, o) for p, o in pairs if o.resolve() in inputs]
    if clash:
        p, o = clash[0]
        raise RestorePlanError(f"{len(clash)} output(s) would replace an input (e.g. {o} is the input "
                               f"{p}); inputs are never overwritten: give another OUT or --format")
    return pairs, fmt


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BadImage):
        return exc.message
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _write(out: Path, body: bytes) -> None:
    """Write ``out`` whole or not at all (a temporary file beside it, then a rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        tmp.write_bytes(body)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_model(model: str, tracking_uri: Optional[str] = None, device: Optional[str] = None):
    """The model a deployment of ``model`` would hold (:class:`TaskModel`)."""
    from raygan.deploy.app import TaskModel, resolve_model_ref

    ref = resolve_model_ref(model, tracking_uri)
    return TaskModel("restore", ref, tracking_uri, device=device)


def restore_paths(model: Any, src: str, dst: str, *, fmt: Optional[str] = None, quality: int = 95,
                  tile: Optional[int] = None, overlap: int = OVERLAP, bits: Optional[int] = None,
                  threads: Optional[int] = None, device: Optional[str] = None,
                  tracking_uri: Optional[str] = None, max_pixels: int = MAX_PIXELS,
                  progress: Optional[bool] = None,
                  report: Optional[Callable[[str, str], None]] = None) -> Dict[str, Any]:
    """Restore ``src`` (file or folder) into ``dst`` with ``model`` (a URI or a loaded
    :class:`TaskModel`). Returns ``{"restored", "failed": [(input, message)], "outputs",
    "model", "version", "device", "threads", "tile"}``; ``report(input, message)`` is called
    per failed file (default: one line on stderr). Raises :class:`RestorePlanError` (bad
    paths) and :class:`raygan.platform.core.errors.ModelRefError` before restoring anything."""
    import torch
    from PIL import Image
    from tqdm import tqdm

    from raygan.deploy.tiling import restore_tiled

    pairs, fmt = plan_outputs(src, dst, fmt)
    if not threads:  # all the cores this process may use
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, int(threads)))
    if isinstance(model, str):
        model = load_model(model, tracking_uri, device)
    tile = int(tile or TILE_BY_FAMILY.get(str(model.config.get("family")), TILE))
    if not 0 <= overlap < tile:
        raise RestorePlanError(f"--overlap must be in [0, tile={tile}), got {overlap}")
    progress = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=len(pairs), unit="img", desc="restore", disable=not progress, file=sys.stderr)

    def default_report(path: str, message: str) -> None:
        (tqdm.write if progress else print)(f"restore: {path}: {message}", file=sys.stderr)

    report = report or default_report
    summary: Dict[str, Any] = {"restored": 0, "failed": [], "outputs": [], "model": model.ref["model"],
                               "version": model.ref["version"], "device": str(model.device),
                               "threads": torch.get_num_threads(), "tile": tile}
    saved_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max(int(max_pixels), saved_limit or 0)  # the bomb check is ours
    try:
        for inp, out in pairs:
            try:
                decoded = decode_image(inp.read_bytes(), max_pixels, bits)
                rgb = restore_tiled(decoded.rgb, model.restore_batch, tile, overlap, model.scale, batch=8)
                body, _ = encode_image(rgb, fmt, quality, decoded.gray)
                _write(out, body)
                summary["restored"] += 1
                summary["outputs"].append(str(out))
            except (BadImage, OSError, ValueError, RuntimeError, MemoryError) as exc:
                summary["failed"].append((str(inp), _one_line(exc)))
                report(str(inp), _one_line(exc))
            bar.update(1)
    finally:
        Image.MAX_IMAGE_PIXELS = saved_limit
        bar.close()
    return summary
