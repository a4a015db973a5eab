"""Fixture trees of hostile image files (DESIGN.md, "Real data on disk is hostile"), shared by the pipeline tests.
Not a conftest.py: tests/conftest.py owns that module name; tests import what they need from here."""
import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

SHARED = Path(__file__).resolve().parents[3] / "shared"     # same as tests/conftest.py


def photo(name="astronaut", h=96, w=128) -> np.ndarray:
    """A colour photo from skimage's data, resized to (h, w, 3) uint8 RGB."""
    return cv2.resize(getattr(skdata, name)(), (w, h), interpolation=cv2.INTER_AREA)


def jpeg_bytes(rgb, quality=95, **pil_kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, **pil_kwargs)
    return buf.getvalue()


def exif_with_orientation(k: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = k
    return exif.tobytes()


def write_hostile(folder: Path, ext=".jpg") -> dict:
    """Write the hostile set into `folder`; returns {relative name: expected outcome}, where the outcome is
    "ok" or the ImageError/skip kind the pipeline must report. Every name ends in `ext` (SUN397 style)."""
    folder.mkdir(parents=True, exist_ok=True)
    src = photo("chelsea")
    out = {}

    def put(name, payload, outcome):
        (folder / (name + ext)).write_bytes(payload)
        out[name + ext] = outcome

    put("photo", jpeg_bytes(photo("astronaut")), "ok")
    buf = io.BytesIO(); Image.fromarray(photo("coffee")).save(buf, "PNG"); put("png_named", buf.getvalue(), "ok")
    buf = io.BytesIO(); Image.fromarray(photo("rocket")).save(buf, "BMP"); put("bitmap", buf.getvalue(), "ok")
    buf = io.BytesIO(); Image.fromarray(src).convert("P", palette=Image.Palette.ADAPTIVE).save(buf, "GIF")
    put("palette_gif", buf.getvalue(), "ok")
    full = jpeg_bytes(photo("astronaut", 120, 160))
    put("truncated", full[: len(full) // 2], "truncated")
    put("empty", b"", "empty")
    buf = io.BytesIO(); Image.fromarray(src).convert("CMYK").save(buf, "JPEG", quality=95)
    put("cmyk", buf.getvalue(), "ok")
    rgba = np.dstack([photo("coffee"), np.tile(np.linspace(0, 255, 128).astype(np.uint8), (96, 1))])
    buf = io.BytesIO(); Image.fromarray(rgba, "RGBA").save(buf, "PNG"); put("rgba", buf.getvalue(), "ok")
    ok, enc = cv2.imencode(".png", photo("rocket")[..., ::-1].astype(np.uint16) * 257)
    put("deep16", enc.tobytes(), "ok")
    put("rotated", jpeg_bytes(photo("astronaut", 96, 128), exif=exif_with_orientation(6)), "ok")
    gray = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
    put("gray3", jpeg_bytes(np.dstack([gray] * 3)), "grayscale")
    put("gray16", cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes(), "grayscale")
    buf = io.BytesIO(); Image.fromarray(photo("coffee", 12, 16)).save(buf, "PNG"); put("tiny", buf.getvalue(), "too small")
    put("not_an_image", b"hello, I am a text file\n" * 4, "unknown format")
    return out


@pytest.fixture
def hostile(tmp_path):
    """(folder, {name: outcome}) of the hostile set, names ending in .jpg."""
    folder = tmp_path / "hostile"
    return folder, write_hostile(folder)


def png16_gray_alpha(gray: np.ndarray, alpha: np.ndarray) -> bytes:
    """A 16-bit gray+alpha PNG (colour type 4), written by hand: neither OpenCV nor Pillow writes one."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    h, w = gray.shape
    pixels = np.dstack([gray, alpha]).astype(">u2")
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))          # filter 0 on every row
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def write_deep_gray(folder: Path) -> dict:
    """Single-channel images deeper than 8 bits (and 16-bit ones with alpha), the depth each file declares being
    what decides their 8-bit values; returns {name: expected (H, W) or (H, W, 3) uint8 decode}. The "dark" ones
    hold 0..255 in 16 bits: almost black, which a decoder that looks at the values takes for a full-range image."""
    folder.mkdir(parents=True, exist_ok=True)
    v = cv2.cvtColor(photo("chelsea"), cv2.COLOR_RGB2GRAY)             # (96, 128) uint8, 8..255
    ramp = np.tile(np.linspace(0, 65535, v.shape[1]).astype(np.uint16), (v.shape[0], 1))
    dark = v.astype(np.uint16)                                          # 16-bit values 8..255
    out = {}

    def put(name, payload, expected):
        (folder / name).write_bytes(payload)
        out[name] = expected

    put("dark16.png", cv2.imencode(".png", dark)[1].tobytes(), np.rint(dark / 257).astype(np.uint8))
    put("gray16.png", cv2.imencode(".png", dark * 257)[1].tobytes(), v)
    put("gray16.tif", cv2.imencode(".tiff", dark * 257)[1].tobytes(), v)
    put("dark16.tif", cv2.imencode(".tiff", dark)[1].tobytes(), np.rint(dark / 257).astype(np.uint8))
    put("gray16_alpha.png", png16_gray_alpha(dark * 257, ramp), v)
    put("dark16_alpha.png", png16_gray_alpha(dark, ramp), np.zeros_like(v))   # 16 -> 8 bits keeps the high byte
    rgba = np.dstack([photo("coffee")[..., ::-1].astype(np.uint16) * 257, ramp])  # OpenCV writes BGRA
    put("rgba16.png", cv2.imencode(".png", rgba)[1].tobytes(), photo("coffee"))
    buf = io.BytesIO()
    Image.fromarray((v.astype(np.float64) * ((2 ** 31 - 1) / 255)).astype(np.int32), "I").save(buf, "TIFF")
    put("int32.tif", buf.getvalue(), v)
    buf = io.BytesIO()
    Image.fromarray(v.astype(np.float32) / 255, "F").save(buf, "TIFF")
    put("float32.tif", buf.getvalue(), v)
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def deflated_zeros(n: int) -> bytes:
    """Raw deflate data of n zero bytes, made in milliseconds: after a full flush a compressor starts afresh, so
    every 1 MiB block of zeros compresses to the same bytes, written once and repeated."""
    block = 1 << 20
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = packer.compress(b"\0" * block) + packer.flush(zlib.Z_FULL_FLUSH)
    return piece * (n // block) + packer.compress(b"\0" * (n % block)) + packer.flush()


def png_bomb(w: int = 20000, h: int = 20000) -> bytes:
    """A black w x h RGB PNG of a little over 1 KB per MB of pixels (20000 x 20000: 1.2 MB, 1.2 GB of pixels)."""
    n = h * (1 + 3 * w)                                       # a filter byte and the pixels of each row
    idat = b"\x78\xda" + deflated_zeros(n) + struct.pack(">I", (n % 65521) << 16 | 1)   # Adler-32 of n zeros
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def zip_bomb(name: str = "train2017/000000000001.jpg", declared: int = 1 << 20, inflated: int = 2 << 30) -> bytes:
    """A zip of one deflated entry whose headers declare `declared` bytes but whose data inflates to `inflated`
    zero bytes (~2 MB packed for 2 GiB); the recorded CRC-32 is that of the declared size's zeros."""
    data, raw = deflated_zeros(inflated), name.encode()
    crc = zlib.crc32(b"\0" * declared)
    fields = struct.pack("<HHHHHIIIHH", 20, 0, 8, 0, 0, crc, len(data), declared, len(raw), 0)
    local = b"PK\x03\x04" + fields + raw
    central = b"PK\x01\x02" + struct.pack("<H", 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, 0) + raw
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end
