"""Full-resolution reconstruction in strips: the same bytes as one strip, bounded memory, no aliasing."""
import cv2
import numpy as np
import pytest
import torch

from pipeline.images import rgb_to_lab
from colorfast.photos import colorize_rgb
from colorfast.net_input import net_input, net_input_rgb
from colorfast.full_resolution import rebuild_rgb, resize_width, upsample_ab_rows, widen_ab


def photo(h, w, seed):
    """Smooth colours with saturated patches (so the gamut fit has work to do) and fine detail in L."""
    rng = np.random.default_rng(seed)
    rgb = cv2.resize(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-20, 21, (h, w, 1))
    return np.clip(rgb.astype(int) + noise, 0, 255).astype(np.uint8)


def test_strips_give_the_same_bytes_as_one_strip():
    H, W = 203, 157                                       # 7 rows a strip: 29 strips, the last one short
    rgb = photo(H, W, 0)
    ab = (np.random.default_rng(1).standard_normal((2, 16, 16)) * 70).astype(np.float32)   # many out of gamut
    whole = rebuild_rgb(rgb, ab, strip_pixels=H * W)
    for rows in (1, 7, 64, 202):
        assert np.array_equal(rebuild_rgb(rgb, ab, strip_pixels=rows * W), whole), rows
    inplace = rgb.copy()
    assert rebuild_rgb(inplace, ab, out=inplace, strip_pixels=7 * W) is inplace
    assert np.array_equal(inplace, whole)                 # writing over the input reads each L before
    dL = np.abs(rgb_to_lab(whole)[..., 0] - rgb_to_lab(rgb)[..., 0])
    assert dL.max() < 1.0                                 # lightness kept


@pytest.mark.parametrize("h, H, W", [(16, 203, 157), (64, 2000, 200), (16, 10, 30), (64, 64, 64)])
def test_row_bands_are_opencvs_bicubic_resize(h, H, W):
    """The hand-written vertical pass is OpenCV's INTER_CUBIC (same taps, same edges), so its rows can be
    asked for band by band; it differs from cv2.resize only by float rounding."""
    ab = (np.random.default_rng(h + H).standard_normal((2, h, h)) * 40).astype(np.float32)
    ref = cv2.resize(ab.transpose(1, 2, 0), (W, H), interpolation=cv2.INTER_CUBIC)
    wide = widen_ab(ab, W)
    bands = np.concatenate([upsample_ab_rows(wide, H, y0, min(H, y0 + 9)) for y0 in range(0, H, 9)])
    assert np.abs(bands - ref).max() < 1e-3
    L = np.ascontiguousarray(ab[0, :, : min(h, W)])
    for interp, cubic in ((cv2.INTER_LINEAR, False), (cv2.INTER_CUBIC, True)):     # the width pass of net_input
        assert np.abs(resize_width(L, W, cubic) - cv2.resize(L, (W, h), interpolation=interp)).max() < 1e-3


class MeanColorizer:
    """Stands in for a network: ab from the L it is given (a smooth function), so a wrong input shows."""
    def predict_ab(self, L, temperature=0.38):
        small = torch.nn.functional.avg_pool2d(L, 4)
        return torch.cat([small - 50, 50 - small], dim=1) * 0.8


def test_colorize_rgb_is_the_same_in_strips_and_never_makes_a_full_size_float_L():
    rgb = photo(301, 77, 2)
    L = rgb_to_lab(rgb)[..., 0]
    assert torch.equal(net_input_rgb(rgb, 64, strip_pixels=5 * 77), net_input(L, 64))
    m = MeanColorizer()
    assert np.array_equal(colorize_rgb(m, rgb, 64, strip_pixels=5 * 77), colorize_rgb(m, rgb, 64, strip_pixels=10**9))


@pytest.mark.parametrize("shape", [(2000, 200), (200, 2000)])
def test_long_thin_stripes_are_averaged_not_aliased(shape):
    """A 200 x 2000 image of 1-px stripes (L 0 and 100, true mean 50): the long side shrinks 7.8x and must be
    area-averaged even though the short side is enlarged. One bicubic resize gave L from 0.3 to 99.7."""
    H, W = shape
    stripes = np.zeros((H, W), np.uint8)
    if H > W:
        stripes[1::2] = 255
    else:
        stripes[:, 1::2] = 255
    rgb = np.repeat(stripes[..., None], 3, axis=2)
    x = net_input_rgb(rgb, 256)
    assert x.shape == (1, 1, 256, 256)
    assert float(x.min()) > 47 and float(x.max()) < 53, (float(x.min()), float(x.max()))
