"""Test photos with smooth colour (no texture): a 3 x 4 grid of random colours resized bicubically."""
import cv2
import numpy as np


def smooth_rgb(h, w, seed):
    small = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
