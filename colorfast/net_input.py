"""A photo of any size as the network sees it, and what the network says back, for `colorize` and its video path.

    rgb (H, W, 3) uint8 -> L, strip by strip, resized (whole image, no crop) to size x size, each axis with the
    filter its own factor calls for -> network -> ab (2, size/4, size/4) float32

The way back up to the photo's size is colorfast.full_resolution.rebuild_rgb. Photos (colorfast/photos.py)
and video frames (colorfast/video.py) share these steps, so a frame gets exactly a photo's colours.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from colorfast.full_resolution import STRIP_PIXELS, lightness_strips, resize_width

NET_STRIDE = 8                   # the network halves the side three times, so its input side is a multiple of 8


def axis_interpolation(src: int, dst: int) -> int:
    """OpenCV filter for one axis resized from src to dst px: area when it shrinks 2x or more (every source
    pixel counts: no aliasing), bilinear when it shrinks less (as pipeline.images.resize_center_crop),
    bicubic when it grows."""
    if src >= 2 * dst:
        return cv2.INTER_AREA
    return cv2.INTER_LINEAR if src > dst else cv2.INTER_CUBIC


def _resize_width(L: np.ndarray, size: int) -> np.ndarray:
    """(h, W) -> (h, size), the same bytes for a row whatever strip it is in (cv2's area filter is; its
    bilinear and bicubic ones are not, hence full_resolution.resize_width)."""
    interp = axis_interpolation(L.shape[1], size)
    if interp == cv2.INTER_AREA:
        return cv2.resize(L, (size, L.shape[0]), interpolation=interp)
    return resize_width(L, size, cubic=interp == cv2.INTER_CUBIC)


def _resize_height(L: np.ndarray, size: int) -> torch.Tensor:
    small = cv2.resize(L, (L.shape[1], size), interpolation=axis_interpolation(L.shape[0], size))
    return torch.from_numpy(np.clip(small, 0, 100))[None, None]


def net_input(L: np.ndarray, size: int) -> torch.Tensor:
    """L (H, W) float32 in L* units -> (1, 1, size, size): the whole image, no crop. Width and height are
    resized one after the other, each with its own filter, so a 200 x 2000 strip is area-averaged along its
    long side even though its short side is enlarged (one filter for both would alias one of them)."""
    return _resize_height(_resize_width(L, size), size)


def net_input_rgb(rgb: np.ndarray, size: int, strip_pixels: int = STRIP_PIXELS) -> torch.Tensor:
    """(H, W, 3) uint8 -> net_input of its L, the same tensor bit for bit, computed strip by strip so that no
    full-size float copy of the image exists (the width pass is row by row)."""
    rows = [_resize_width(L, size) for _, _, L in lightness_strips(rgb, strip_pixels)]
    return _resize_height(np.concatenate(rows), size)


def cubic_upsampling(colorizer) -> bool:
    """The colorizer's upsampling mode (colorfast.colorizer.Colorizer.upsample); bicubic for one without it."""
    return getattr(colorizer, "upsample", "bicubic") == "bicubic"


@torch.no_grad()
def predict_ab_small(colorizer, x: torch.Tensor, temperature: float | None, planes=None) -> np.ndarray:
    """(1, 1, size, size) L -> the network's ab (2, size/4, size/4) float32 on the CPU ((2, size, size) for a
    guided network). planes: hint planes at size x size (colorfast.hints.hint_planes), guided networks only."""
    if planes is None:                # colorizers that take no hints (onnx_runtime) have no `hints` argument
        return colorizer.predict_ab(x, temperature=temperature)[0].float().cpu().numpy()
    return colorizer.predict_ab(x, temperature=temperature, hints=planes)[0].float().cpu().numpy()
