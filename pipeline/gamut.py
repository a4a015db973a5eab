"""Lab -> displayable sRGB without changing the lightness: out-of-gamut chroma is pulled towards gray.

Plain clipping of RGB would change the lightness of saturated pixels; here each out-of-gamut pixel's ab is
scaled towards 0 (same L, same hue) until its colour converts without clipping. Used wherever predicted
colours become an image: colorize, evaluate, the validation inside `fit` and its sample grids.
"""
from __future__ import annotations

import cv2
import numpy as np

from pipeline.images import lab_to_rgb


def _in_gamut(lab_pts: np.ndarray, tol: float) -> np.ndarray:
    """(n, 3) Lab -> (n,) bool: converting to sRGB needs no clipping (OpenCV clips, so round-trip)."""
    img = lab_pts.reshape(-1, 1, 3).astype(np.float32)
    back = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_Lab2RGB), cv2.COLOR_RGB2Lab)
    return np.abs(back - img).reshape(-1, 3).max(1) <= tol


def fit_gamut(L: np.ndarray, ab: np.ndarray, iters: int = 8, tol: float = 0.25) -> np.ndarray:
    """Scale each out-of-gamut pixel's ab towards 0 (same L, same hue) until its colour is displayable.
    L (H, W), ab (H, W, 2) float32 -> ab (H, W, 2); per-pixel bisection on the scale in [0, 1]."""
    lab = np.dstack([L, ab]).reshape(-1, 3)
    bad = ~_in_gamut(lab, tol)
    if not bad.any():
        return ab
    pts = lab[bad]
    lo, hi = np.zeros(len(pts), np.float32), np.ones(len(pts), np.float32)    # ab = 0 (gray) is in gamut
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = _in_gamut(np.column_stack([pts[:, 0], pts[:, 1:] * mid[:, None]]), tol)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    out = ab.reshape(-1, 2).copy()
    out[bad] = pts[:, 1:] * lo[:, None]
    return out.reshape(ab.shape)


def lab_to_rgb_in_gamut(L: np.ndarray, ab: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """L (H, W), ab (H, W, 2) float32 -> (H, W, 3) sRGB of `dtype` (uint8, uint16 or float in 0..1), chroma
    pulled into gamut so L is kept."""
    return lab_to_rgb(np.dstack([L, fit_gamut(L, ab)]).astype(np.float32), dtype)
