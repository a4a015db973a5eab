"""The quantized ab space: bins of size 10 centred on multiples of 10 that some 8-bit sRGB colour falls in.

Computed, not copied (DESIGN.md): all 2^24 sRGB colours go through OpenCV's float Lab conversion (the same
one the pipeline uses), and every grid cell that receives at least one colour is a bin. That gives 262 bins;
the released ECCV16 model's 313 (`pts_in_hull.npy`) are an empirical superset. Takes ~0.6 s, so the result is
cached per process; the centres travel to workers inside the soft encoder, never recomputed per image.
"""
from __future__ import annotations

import functools
import hashlib

import cv2
import numpy as np

GRID = 10.0                      # bin size in ab units; centres on multiples of GRID
_OFFSET = 32                     # cell index offset: a in [-320, 320) covers any Lab a, b


def cell_index(ab: np.ndarray) -> np.ndarray:
    """ab (..., 2) -> integer cell coordinates (..., 2): the bin centred on GRID * i holds [GRID i - 5, GRID i + 5)."""
    return np.floor((np.asarray(ab, np.float64) + GRID / 2) / GRID).astype(np.int64)


@functools.lru_cache(maxsize=1)
def in_gamut_centers() -> np.ndarray:
    """(Q, 2) float32 ab centres of the in-gamut bins, sorted by a then b (the order of pts_in_hull.npy)."""
    v = np.arange(256, dtype=np.float32) / 255
    g, b = np.meshgrid(v, v, indexing="ij")
    rgb = np.empty((256 * 256, 1, 3), np.float32)                   # one red value at a time: 65,536 colours
    rgb[:, 0, 1], rgb[:, 0, 2] = g.ravel(), b.ravel()
    occupied = np.zeros((2 * _OFFSET, 2 * _OFFSET), bool)
    for r in range(256):
        rgb[:, 0, 0] = r / 255
        lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[:, 0]
        ij = cell_index(lab[:, 1:]) + _OFFSET
        occupied[ij[:, 0], ij[:, 1]] = True
    ia, ib = np.nonzero(occupied)                                   # row-major: sorted by a, then b
    centers = (np.stack([ia - _OFFSET, ib - _OFFSET], axis=1) * GRID).astype(np.float32)
    centers.setflags(write=False)                                   # shared by every caller of the cache
    return centers


def fingerprint(centers: np.ndarray) -> str:
    """Short stable id of a bin set, stored with shards so that a different bin set is never mixed in."""
    return hashlib.sha1(np.ascontiguousarray(centers, np.float32).tobytes()).hexdigest()[:12]
