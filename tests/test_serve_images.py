"""What the endpoints do with every kind of upload (raygan.deploy.images): a 4xx with one
line, or a sensible conversion; never an unhandled exception."""
import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from raygan.deploy.images import BadImage, decode_image, encode_image

MAX = 4_000_000


def png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(w=64, h=48) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def bomb_png(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (the pixels are never sent)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("body,status,words", [
    (b"", 400, "empty"),
    (b"hello, not an image", 415, "not an image"),
    (png(photo())[:200], 400, "truncated"),
    (bomb_png(100_000, 100_000), 413, "too large"),
    (bomb_png(40_000, 1), 413, "px a side"),
    (png(photo(4, 4)), 422, "too small"),
])
def test_bad_uploads_are_a_4xx_with_one_line(body, status, words):
    with pytest.raises(BadImage) as err:
        decode_image(body, MAX)
    assert err.value.status == status and words in err.value.message and "\n" not in err.value.message


def test_an_animated_gif_is_refused_naming_its_frames():
    frames = [photo().convert("P"), photo(64, 48).transpose(Image.FLIP_LEFT_RIGHT).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(BadImage, match="animated image \\(2 frames\\)") as err:
        decode_image(buf.getvalue(), MAX)
    assert err.value.status == 422


def test_modes_are_converted_sensibly():
    rgb = photo()
    ref = np.asarray(rgb)
    # RGB PNG: the pixels, exactly
    d = decode_image(png(rgb), MAX)
    assert np.array_equal(d.rgb, ref) and not d.gray
    # grayscale: restored as RGB, answered in grayscale
    d = decode_image(png(rgb.convert("L")), MAX)
    assert d.gray and d.rgb.shape == (48, 64, 3) and np.array_equal(d.rgb[..., 0], np.asarray(rgb.convert("L")))
    # RGBA: composited on white (a transparent pixel becomes white)
    rgba = rgb.convert("RGBA")
    rgba.putpixel((0, 0), (10, 20, 30, 0))
    d = decode_image(png(rgba), MAX)
    assert tuple(d.rgb[0, 0]) == (255, 255, 255) and np.array_equal(d.rgb[1:, 1:], ref[1:, 1:])
    # palette and CMYK: converted to RGB
    assert decode_image(png(rgb.convert("P")), MAX).rgb.shape == (48, 64, 3)
    cmyk = decode_image(encoded(rgb.convert("CMYK"), "JPEG", quality=95), MAX)
    assert np.abs(cmyk.rgb.astype(int) - ref).mean() < 20
    # 16-bit: scaled to 8 bits (65535 -> 255); `bits` says how many bits the data use
    a16 = (np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16)
    d = decode_image(png(Image.fromarray(a16)), MAX)
    assert d.gray and d.rgb[..., 0].max() == round(a16.max() / 65535 * 255)
    a12 = (a16 >> 4).astype(np.uint16)
    d12 = decode_image(png(Image.fromarray(a12)), MAX, bits=12)
    assert abs(int(d12.rgb[..., 0].max()) - round(a12.max() / 4095 * 255)) <= 1


def test_exif_orientation_is_applied():
    img = photo(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    d = decode_image(encoded(img, "JPEG", exif=exif.tobytes(), quality=95), MAX)
    assert d.rgb.shape == (64, 48, 3)


@pytest.mark.parametrize("fmt,magic", [("png", b"\x89PNG"), ("jpeg", b"\xff\xd8"), ("webp", b"RIFF")])
def test_encode_formats(fmt, magic):
    body, media = encode_image(np.asarray(photo()), fmt)
    assert body.startswith(magic) and media == f"image/{fmt}"
    assert Image.open(io.BytesIO(body)).size == (64, 48)
    gray, _ = encode_image(np.asarray(photo()), fmt, gray=True)
    g = Image.open(io.BytesIO(gray))
    assert g.mode == ("RGB" if fmt == "webp" else "L")  # WebP has no grayscale mode
    assert np.ptp(np.asarray(g.convert("RGB")).astype(int), axis=2).max() <= 2
