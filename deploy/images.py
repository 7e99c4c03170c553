"""Request images in and out of the endpoints: decode anything a client may send, safely.

Every way a body can be wrong ends in :class:`BadImage` with an HTTP status and one line,
never in an unhandled exception (the ingress turns it into a JSON 4xx):

=========================================  =====  =========================================
body                                        code   result
=========================================  =====  =========================================
empty                                       400    "empty request body"
not an image (or a format PIL cannot read)  415    names the formats accepted
truncated / corrupt pixel data              400    "truncated or corrupt image"
more than ``max_pixels`` (decompression     413    checked from the header, before any pixel
bomb), or a side over ``MAX_SIDE``                 is decoded
animated (GIF/APNG/WebP with >1 frame)      422    "send a single frame"
smaller than ``MIN_SIDE`` on a side          422
16-bit (I;16, I), float (F)                  --    scaled to 8 bits (``bits`` tells the range)
grayscale (L, 1, LA)                         --    restored as RGB, returned grayscale
RGBA / LA / PA (alpha)                       --    composited on white
palette (P), CMYK, YCbCr, LAB, HSV           --    converted to RGB
=========================================  =====  =========================================

EXIF orientation is applied (what a phone shows is what is restored). Nothing is unpickled:
PIL parses only image formats.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: sides below this are refused (the generators' reflect padding needs a few pixels)
MIN_SIDE = 8
#: a side above this is refused whatever the pixel count (a 1 x 10^8 strip is not a photo)
MAX_SIDE = 32768
FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}


class BadImage(ValueError):
    """A request image the server will not restore: ``status`` is the HTTP code to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Decoded:
    rgb: np.ndarray          # (H, W, 3) uint8
    gray: bool               # the upload was grayscale: answer in grayscale
    source_mode: str         # PIL mode as uploaded, e.g. "RGBA", "I;16"


def _to_8bit(img: Image.Image, bits: Optional[int]) -> Image.Image:
    """16-bit / 32-bit / float images to 8-bit "L": ``bits`` is the range used (default
    16 for I;16 and I, i.e. values up to 65535; floats are taken as [0, 1])."""
    a = np.asarray(img)
    if img.mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    top = float((1 << int(bits)) - 1) if bits else 65535.0
    a = np.clip(a.astype(np.float64), 0, top) / top
    return Image.fromarray((a * 255 + 0.5).astype(np.uint8), "L")


def decode_image(data: bytes, max_pixels: int, bits: Optional[int] = None) -> Decoded:
    """Bytes of an uploaded image -> :class:`Decoded`, or :class:`BadImage`."""
    if not data:
        raise BadImage(400, "empty request body: send the image bytes (or multipart field 'image')")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise BadImage(415, "not an image PIL can read (send PNG, JPEG, WebP, TIFF, BMP or GIF)") from None
        raise BadImage(413, f"image too large: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- a malformed header in any plugin
        raise BadImage(400, f"corrupt image header: {type(exc).__name__}: {exc}"[:300]) from None
    if w * h > max_pixels or max(w, h) > MAX_SIDE:
        raise BadImage(413, f"image too large: {w}x{h} = {w * h} pixels; this server takes at most "
                            f"{max_pixels} pixels and {MAX_SIDE} px a side")
    if min(w, h) < MIN_SIDE:
        raise BadImage(422, f"image too small: {w}x{h}; at least {MIN_SIDE} px a side")
    if getattr(img, "n_frames", 1) > 1:
        raise BadImage(422, f"animated image ({img.n_frames} frames): send a single frame")
    mode = img.mode
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
            try:
                img = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 -- malformed EXIF: keep the pixels as stored
                pass
            if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                img = _to_8bit(img, bits)
            gray = img.mode in ("1", "L", "LA")
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(white, rgba)
            rgb = np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except BadImage:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, KeyError,
            MemoryError, ZeroDivisionError, AttributeError, struct.error) as exc:
        raise BadImage(400, f"truncated or corrupt image: {type(exc).__name__}: {exc}"[:300]) from None
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BadImage(415, f"unsupported image layout {rgb.shape} (mode {mode})")
    return Decoded(rgb=rgb, gray=gray, source_mode=mode)


def encode_image(rgb: np.ndarray, fmt: str = "png", quality: int = 95, gray: bool = False) -> Tuple[bytes, str]:
    """(bytes, media type) of ``rgb`` (H, W, 3) uint8 in ``fmt`` (png, jpeg, webp)."""
    if fmt not in FORMATS:
        raise BadImage(422, f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    pil_format, media = FORMATS[fmt]
    img = Image.fromarray(rgb, "RGB")
    if gray:
        img = img.convert("L")
    buf = io.BytesIO()
    kwargs = {"quality": int(quality)} if pil_format in ("JPEG", "WEBP") else {"compress_level": 3}
    img.save(buf, pil_format, **kwargs)
    return buf.getvalue(), media
