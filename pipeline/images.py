"""Decoding hostile image files into RGB arrays, and the colour conversions the pipeline and colorize share.

Imports only numpy, OpenCV and Pillow, so the trainer's `colorize` can use it without faiss or joblib.

Decoding is by content, never by extension (SUN397 names PNG, BMP and GIF files `.jpg`):
- plain JPEGs (RGB or grayscale) go through OpenCV, the fastest decoder here; everything else (CMYK JPEGs,
  PNG of any depth, BMP, GIF, TIFF, WebP) through Pillow;
- EXIF orientation is applied to both, so arrays come out the way a photo viewer shows them;
- alpha is dropped, not composited: the colour under a transparent pixel is kept. That is what Pillow's
  `convert("RGB")` and torchvision's loader do, and what the outside checker decodes; compositing on white
  would teach the model that transparent regions are white;
- deeper images are scaled to 8 bits by their bit depth, never by their values (16-bit: v / 257 for gray, the
  high byte for colour and alpha images, as Pillow and OpenCV do; float: 0..1), so a dark 16-bit scan stays
  dark; CMYK goes through Pillow's conversion, palettes are expanded.
A file that cannot give a correct image raises ImageError with a reason a user can act on: missing, empty,
truncated, unknown format, undecodable, not a regular file, too large.

Hostile sizes: nothing is decoded before its width and height are read from its header (Pillow's Image.open
parses the header only) and found within `max_pixels` (a 380 KB PNG can declare 20000 x 20000 px, 1.2 GB of
pixels); a file whose header Pillow cannot read is not decoded at all, since no decoder could say its size
first. Reads are bounded: only regular files are opened (a FIFO would block, /dev/zero never ends), and only
what their size says, at most `max_input_bytes(max_pixels)`.
"""
from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
GRAY_CHROMA = 5.0                # ab units; a pixel with chroma sqrt(a^2 + b^2) above this carries colour
GRAY_FRACTION = 0.001            # grayscale: at most this fraction of (64 px) pixels above GRAY_CHROMA
_SIGNATURES = (                  # (magic prefix, format name); WebP also needs "WEBP" at offset 8
    (b"\xff\xd8\xff", "jpeg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"BM", "bmp"), (b"GIF87a", "gif"),
    (b"GIF89a", "gif"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"), (b"RIFF", "webp"),
)


MAX_PIXELS = 178_956_970       # width x height above which an image is refused undecoded: twice Pillow's
                                # MAX_IMAGE_PIXELS, where Pillow itself raises DecompressionBombError (~13,400 px
                                # square; 537 MB as 8-bit RGB). preprocess --max-pixels changes it


class ImageError(ValueError):
    """A file that cannot become a correct RGB image; str(e) starts with a short kind ("truncated: ...")."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def sniff_format(data: bytes) -> str | None:
    """Format name from the first bytes, or None."""
    for magic, name in _SIGNATURES:
        if data.startswith(magic) and (name != "webp" or data[8:12] == b"WEBP"):
            return name
    return None


def max_input_bytes(max_pixels: int) -> int:
    """The most bytes read for one input: an image of max_pixels in the widest layout decoded here (float32
    RGBA TIFF, 16 bytes a pixel), plus 64 MiB of metadata (EXIF, ICC, a phone's video appended to a JPEG)."""
    return 16 * max_pixels + (64 << 20)


def read_input(path, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path` (links followed), at most its size when opened; ImageError when
    it is missing, not a regular file (a FIFO, a device: reading would block or never end) or over max_bytes.
    O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError("missing", f"{path} does not exist") from None
    except OSError as e:                               # a socket (ENXIO), no permission, ...
        raise ImageError("unreadable", f"{path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError("missing", f"{path} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not a regular file", f"{path} is {_file_kind(st.st_mode)}")
        if st.st_size > max_bytes:
            raise ImageError("too large", f"{path}: {st.st_size:,} bytes, more than an image of --max-pixels "
                                          f"takes ({max_bytes:,})")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(st.st_size)                  # what it holds now; a file still growing is cut there
    except OSError as e:
        raise ImageError("unreadable", f"{path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), f"not a file (mode {mode:o})")


def load_rgb(path, min_side: int | None = None, data: bytes | None = None,
             max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `path` (or `data`, its bytes already read, e.g. from inside a tar) by content into (H, W, 3)
    uint8 RGB, EXIF orientation applied.
    `min_side`: JPEGs whose shorter side is at least 2x (4x, 8x) this are decoded at 1/2 (1/4, 1/8) scale by
    libjpeg's DCT scaling, which low-passes like an area average and costs a fraction of a full decode.
    `max_pixels`: an image declaring more (width x height, from its header) is refused before any decoding."""
    path = Path(path)
    data = read_input(path, max_input_bytes(max_pixels)) if data is None else data
    if not data:
        raise ImageError("empty", "0 bytes")
    fmt = sniff_format(data[:16])
    if fmt is None:
        raise ImageError("unknown format", f"first bytes {data[:8].hex()} are no JPEG/PNG/BMP/GIF/TIFF/WebP")
    if fmt == "jpeg" and not _jpeg_complete(data):
        raise ImageError("truncated", f"JPEG of {len(data)} bytes ends before its end-of-image marker")
    _allow_in_pillow(max_pixels)
    checked = False
    try:
        with Image.open(io.BytesIO(data)) as im:            # reads the header only
            _check_pixels(im.size, max_pixels, fmt)
            checked = True
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            if fmt == "jpeg" and im.mode in ("RGB", "L"):
                rgb = _decode_jpeg_cv2(data, min(im.size), min_side)
            else:
                im.load()
                rgb = pil_to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:     # over twice Pillow's limit, which is at least max_pixels
        found = re.search(r"\((\d+) pixels\)", str(e))           # Pillow names the pixels, not the sides
        size = f"{int(found[1]) / 1e6:.1f} MP" if found else "more pixels than Pillow opens"
        raise ImageError("too large", f"{fmt} of {size}, over --max-pixels {max_pixels:,}: not decoded (a "
                                      "decompression bomb, or raise the limit)") from None
    except (OSError, SyntaxError, ValueError) as e:
        if "truncated" in str(e):
            raise ImageError("truncated", f"{fmt}: {_plain(e)}") from None
        if not checked:   # OpenCV might decode it, but nothing can tell its size first: a bomb would go through
            raise ImageError("undecodable", f"{fmt}: Pillow cannot read its header ({_plain(e)}), so its size "
                                            "cannot be checked before decoding") from None
        rgb, orientation = _decode_cv2_fallback(data, fmt, _plain(e)), 1
    if rgb.ndim != 3 or rgb.shape[2] != 3 or 0 in rgb.shape:
        raise ImageError("undecodable", f"{fmt}: decoded to shape {rgb.shape}")
    return orient(rgb, orientation)


def _check_pixels(size: tuple[int, int], max_pixels: int, fmt: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ImageError("too large", f"{fmt} of {w}x{h} px = {w * h / 1e6:.1f} MP, over --max-pixels "
                                      f"{max_pixels:,}: not decoded (a decompression bomb, or raise the limit)")


def _allow_in_pillow(max_pixels: int) -> None:
    """Let Pillow open the header of every image up to max_pixels: it raises DecompressionBombError above twice
    its MAX_IMAGE_PIXELS before the size can be read. Raised only, never lowered (a process-wide setting that
    other Pillow users share); _check_pixels is the limit that applies here."""
    if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _plain(e: Exception) -> str:
    """An exception's message without object addresses, so that manifests are the same from run to run."""
    return re.sub(r" ?<[^<>]* at 0x[0-9a-fA-F]+>", "", str(e)) or type(e).__name__


def _decode_cv2_fallback(data: bytes, fmt: str, why: str) -> np.ndarray:
    """OpenCV as the second decoder for what Pillow rejects (some TIFF and WebP variants)."""
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    if rgb is None:
        raise ImageError("undecodable", f"{fmt}: {why}; OpenCV cannot decode it either")
    return rgb


def _jpeg_complete(data: bytes) -> bool:
    """True when an end-of-image marker follows the main image's first start-of-scan. Entropy-coded data
    stuffs every 0xFF, so FF D9 after the scan starts is the real EOI (trailing bytes after it are allowed);
    walking the marker segments first skips an EXIF thumbnail's own SOS/EOI inside APP1."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:                                   # fill byte
            pos += 1
            continue
        if marker == 0xDA:                                   # start of scan: compressed data follows
            return data.rfind(b"\xff\xd9", pos) > pos
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:         # markers without a length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _decode_jpeg_cv2(data: bytes, short_side: int, min_side: int | None) -> np.ndarray:
    flags, scale = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION, 1
    if min_side:
        scale = next((f for f in (8, 4, 2) if short_side // f >= min_side), 1)
    if scale > 1:       # the REDUCED_COLOR_* flags imply BGR; their scale bits combine with COLOR_RGB instead
        flags |= {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                  8: cv2.IMREAD_REDUCED_GRAYSCALE_8}[scale]
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if rgb is None:
        raise ImageError("undecodable", "jpeg: OpenCV could not decode it")
    return rgb


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8. Alpha is dropped (see the module docstring)."""
    if im.mode == "RGB":
        return np.asarray(im)
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):  # 16-bit (or deeper) single channel
        g = np.clip(np.rint(np.asarray(im, dtype=np.float32) * np.float32(255 / _full_scale(im))), 0, 255)
        return np.repeat(g.astype(np.uint8)[..., None], 3, axis=2)
    if im.mode in ("RGBA", "RGBa", "RGBX", "LA", "La", "PA", "P", "L", "1", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))
    raise ImageError("undecodable", f"unsupported image mode {im.mode}")


def _full_scale(im: Image.Image) -> float:
    """The value that means white in a deep single-channel image, from its declared bit depth, never from its
    pixels: a dark 16-bit scan holding 0..255 is near black (0..1 in 8 bits), not a full-range 8-bit image.
    I;16*: 16 bits. I: 32-bit integers, unless the file says fewer bits (TIFF BitsPerSample, SampleFormat 2 =
    signed) or cannot hold more (PNG, whose 16-bit gray older Pillow versions open as I). F: float, 0..1, the
    convention of float images (OpenCV, scikit-image, GIMP's float TIFF)."""
    if im.mode == "F":
        return 1.0
    if im.mode.startswith("I;16") or im.format == "PNG":
        return 65535.0
    tags = getattr(im, "tag_v2", None) or {}
    bits, fmt = tags.get(258, 32), tags.get(339, 1)
    bits, fmt = (v[0] if isinstance(v, tuple) else v for v in (bits, fmt))
    return 2.0 ** (int(bits) - (int(fmt) == 2)) - 1


def orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) as Pillow's ImageOps.exif_transpose does; (H, W, 3) -> (H', W', 3)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
           7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1], 8: lambda a: np.rot90(a, 1)}
    op = ops.get(orientation)
    return np.ascontiguousarray(op(rgb)) if op else rgb


def resize_center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3): the centred square of side min(H, W), resized. Same as resizing the
    shorter side to `size` and then centre-cropping, up to a sub-pixel crop offset, and cheaper because the
    discarded margins are never resampled.
    Shrinking by 2x or more uses INTER_AREA, which averages every input pixel (no aliasing). A smaller factor,
    which is what a JPEG decoded at reduced scale leaves (libjpeg's DCT scaling has already low-passed it), uses
    bilinear: against an area resize of the full-resolution decode it is as close or closer (1024x768 photos:
    48.5 vs 45.2 dB PSNR; 640x480: 40.6 both); on a full decode shrunk 1.46x (500x375 photos) it is within
    46 dB of INTER_AREA; and OpenCV's INTER_AREA by a non-integer factor under 2 costs 4-7x more (0.5-0.8 ms
    at 256 px)."""
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    square = rgb[y0:y0 + s, x0:x0 + s]
    if s == size:
        return np.ascontiguousarray(square)
    interpolation = cv2.INTER_AREA if s >= 2 * size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def white_of(dtype) -> float:
    """The value that means white in an sRGB array of `dtype`: 255 (uint8), 65535 (uint16), 1.0 (float, the
    convention of scikit-image, OpenCV and matplotlib). ValueError for any other dtype: reading an int64 or
    bool array on one of these scales would give a wrong image, not an error."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8 or dtype == np.uint16:
        return float(np.iinfo(dtype).max)
    if dtype.kind == "f":
        return 1.0
    raise ValueError(f"an sRGB image is uint8 (0..255), uint16 (0..65535) or float (0..1), not {dtype}")


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) sRGB, uint8, uint16 or float in 0..1 (white_of) -> (H, W, 3) float32 CIE Lab (D65; L in
    0..100, a and b about -110..110), through OpenCV's float path (the 8-bit path quantizes a and b to whole
    units). Scaled by the dtype's white: a float image read as 0..255 would come out black."""
    return cv2.cvtColor(np.multiply(rgb, np.float32(1 / white_of(rgb.dtype)), dtype=np.float32), cv2.COLOR_RGB2Lab)


def lab_to_rgb(lab: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """(H, W, 3) float32 Lab -> (H, W, 3) sRGB of `dtype` (uint8, uint16 or float in 0..1, white_of);
    out-of-gamut colours are clipped."""
    rgb = cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB)
    white = white_of(dtype)
    if white == 1.0:
        return np.clip(rgb, 0, 1).astype(dtype, copy=False)
    return np.clip(np.rint(rgb * np.float32(white)), 0, white).astype(dtype)


def is_gray_ab(ab: np.ndarray, threshold: float = GRAY_CHROMA, fraction: float = GRAY_FRACTION) -> bool:
    """ab (..., 2) at low resolution: True when at most `fraction` of the pixels have chroma above
    `threshold`. A grayscale photo stored as three equal channels (or a JPEG of one) stays below."""
    ab = np.asarray(ab, np.float32)
    a, b = ab[..., 0], ab[..., 1]
    coloured = np.count_nonzero(a * a + b * b > threshold * threshold)
    return coloured <= fraction * a.size


def is_grayscale(rgb: np.ndarray, threshold: float = GRAY_CHROMA) -> bool:
    """(H, W, 3) uint8 -> True when the image carries no usable colour, judged by chroma at <= 64 px, not by
    the file's mode (many grayscale photos are saved as RGB)."""
    h, w = rgb.shape[:2]
    f = max(h, w) / 64
    small = cv2.resize(rgb, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA) \
        if f > 1 else rgb
    return is_gray_ab(rgb_to_lab(small)[..., 1:], threshold)
