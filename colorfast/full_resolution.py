"""The network's low-resolution colours on a full-resolution photo, in horizontal strips of bounded memory.

    rgb (H, W, 3) uint8          -> L of the strip's rows                    \
    ab (2, h, w) float32 (network) -> bicubic (4 taps) or bilinear (2) ab of the strip's rows -> gamut fit -> RGB rows

Only the photo itself (3 bytes a pixel, uint8) and the output (3 more, or none when written over the input)
scale with the image; everything in float lives one strip at a time (STRIP_PIXELS pixels, ~50 MB), so a
12000 x 12000 photo needs the same working memory as a 1 MP one. The result does not depend on the strip
height: every output row is computed from the same source rows with the same operations whatever strip it
falls in (tests/colorfast/test_full_resolution.py checks this bit for bit against a single strip).

Pulling out-of-gamut colours towards gray (keeping L and hue) replaces the plain clipping of RGB, which would
change the lightness of saturated pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.gamut import _in_gamut, fit_gamut, lab_to_rgb_in_gamut  # noqa: F401  (imported from here too)
from pipeline.images import rgb_to_lab

STRIP_PIXELS = 1 << 19           # pixels per strip: ~100 bytes each in flight (L, ab, Lab, the gamut test)
CUBIC_A = -0.75                  # OpenCV's bicubic kernel (Keys with a = -0.75)


# ---- gamut: pipeline/gamut.py (shared with the scoring in trainer/) -------------------------------------


# ---- bicubic rows ---------------------------------------------------------------------------------------
def resize_taps(n_src: int, n_dst: int, cubic: bool = True, start: int = 0,
                stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Source indices and weights of outputs start..stop of a bicubic (or bilinear) resize along one axis from
    n_src to n_dst samples, with OpenCV's conventions (pixel centres aligned, a = -0.75, edges repeated).
    -> idx (n, taps) int, w (n, taps) float32; output y is sum_k w[y, k] * src[idx[y, k]].
    Written out because cv2.resize can only give a whole image: a band of rows of a larger resize cannot be
    asked for (resizing a band of source rows would change the scale and the edges), and even a width-only
    resize of a band does not give the rows of the whole image's (OpenCV's row loop rounds differently)."""
    stop = n_dst if stop is None else stop
    fy = ((np.arange(start, stop) + 0.5) * (n_src / n_dst) - 0.5).astype(np.float32)
    sy = np.floor(fy)
    x = (fy - sy).astype(np.float32)
    if cubic:
        A = np.float32(CUBIC_A)
        w0 = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A
        w1 = ((A + 2) * x - (A + 3)) * x * x + 1
        w2 = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1
        w, offsets = [w0, w1, w2, 1 - w0 - w1 - w2], np.arange(-1, 3)
    else:
        w, offsets = [1 - x, x], np.arange(2)
    idx = np.clip(sy.astype(np.int64)[:, None] + offsets, 0, n_src - 1)
    return idx, np.stack(w, axis=1).astype(np.float32)


def resize_width(a: np.ndarray, n_dst: int, cubic: bool) -> np.ndarray:
    """(h, W, ...) float32 -> (h, n_dst, ...), bicubic or bilinear along axis 1; row by row the same bytes
    whatever h is."""
    idx, w = resize_taps(a.shape[1], n_dst, cubic)
    extra = (None,) * (a.ndim - 2)
    out = a[:, idx[:, 0]] * w[(None, slice(None), 0) + extra]
    for k in range(1, w.shape[1]):
        out += a[:, idx[:, k]] * w[(None, slice(None), k) + extra]
    return out


def upsample_ab_rows(ab_wide: np.ndarray, H: int, start: int, stop: int, cubic: bool = True) -> np.ndarray:
    """Rows start..stop of the bicubic (or bilinear) upsampling of ab to H rows.
    ab_wide (h, W, 2) float32: the network's ab already resized to the full width (small: h rows).
    -> (stop - start, W, 2) float32. Each row is a fixed 4- (2-) term sum, so it is the same in any strip."""
    idx, w = resize_taps(ab_wide.shape[0], H, cubic, start, stop)
    out = ab_wide[idx[:, 0]] * w[:, 0, None, None]
    for k in range(1, w.shape[1]):
        out += ab_wide[idx[:, k]] * w[:, k, None, None]
    return out


def widen_ab(ab: np.ndarray, W: int, cubic: bool = True) -> np.ndarray:
    """ab (2, h, w) -> (h, W, 2) float32: the horizontal half of the bicubic (or bilinear) upsampling (h rows)."""
    ab = np.ascontiguousarray(np.asarray(ab, np.float32).transpose(1, 2, 0))
    return cv2.resize(ab, (W, ab.shape[0]), interpolation=cv2.INTER_CUBIC if cubic else cv2.INTER_LINEAR)


def strip_rows(W: int, strip_pixels: int = STRIP_PIXELS) -> int:
    return max(1, strip_pixels // max(1, W))


# ---- the whole image ------------------------------------------------------------------------------------
def rebuild_rgb(rgb: np.ndarray, ab: np.ndarray, out: np.ndarray | None = None,
                strip_pixels: int = STRIP_PIXELS, cubic: bool = True) -> np.ndarray:
    """The photo's lightness with the network's colours, at the photo's resolution.

    rgb (H, W, 3) uint8, uint16 or float in 0..1 (pipeline.images.white_of): the photo (only its L is used);
    ab (2, h, w) float32 in ab units: the network's output for it, upsampled bicubically (bilinearly: cubic
    False) to (H, W). Returns (H, W, 3) RGB of rgb's dtype, written into `out` when given (in out's dtype):
    `out` may be `rgb` itself (each strip's L is read before that strip is overwritten) or the colour channels
    of a larger array, e.g. rgba[..., :3]. Peak memory beyond rgb and out: about 100 * strip_pixels bytes plus
    the widened ab (h * W * 8 bytes)."""
    H, W = rgb.shape[:2]
    if out is None:
        out = np.empty((H, W, 3), rgb.dtype)
    wide = widen_ab(ab, W, cubic)
    step = strip_rows(W, strip_pixels)
    for y0 in range(0, H, step):
        y1 = min(H, y0 + step)
        L = rgb_to_lab(rgb[y0:y1])[..., 0]
        out[y0:y1] = lab_to_rgb_in_gamut(L, upsample_ab_rows(wide, H, y0, y1, cubic), out.dtype)
    return out


def lightness_strips(rgb: np.ndarray, strip_pixels: int = STRIP_PIXELS):
    """Yield (y0, y1, L (y1 - y0, W) float32) of an (H, W, 3) uint8 (uint16, float) image, one strip at a time."""
    H, W = rgb.shape[:2]
    step = strip_rows(W, strip_pixels)
    for y0 in range(0, H, step):
        y1 = min(H, y0 + step)
        yield y0, y1, rgb_to_lab(rgb[y0:y1])[..., 0]
