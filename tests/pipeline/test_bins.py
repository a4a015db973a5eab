import cv2
import numpy as np
import pytest

from hostile_files import SHARED
from pipeline.bins import GRID, cell_index, in_gamut_centers


def test_bins_are_the_grid_cells_that_srgb_colours_fall_in():
    centers = in_gamut_centers()
    assert 200 <= len(centers) <= 330 and centers.dtype == np.float32
    assert np.all(centers % GRID == 0)
    order = np.lexsort((centers[:, 1], centers[:, 0]))
    assert np.array_equal(order, np.arange(len(centers)))             # sorted by a, then b
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (200_000, 1, 3)).astype(np.float32) / 255
    ab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[:, 0, 1:]
    cells = {tuple(c) for c in (cell_index(ab) * GRID).tolist()}
    known = {tuple(c) for c in centers.astype(int).tolist()}
    assert cells <= known                                             # every colour lands in a bin
    assert len(known - cells) < 0.2 * len(known)                      # and most bins are hit by 200k colours


def test_every_bin_is_in_the_reference_set():
    ref_path = SHARED / "reference" / "pts_in_hull.npy"
    if not ref_path.exists():
        pytest.skip("../shared/reference is absent")
    ref = {tuple(c) for c in np.load(ref_path).tolist()}
    ours = {tuple(c) for c in in_gamut_centers().astype(int).tolist()}
    assert ours <= ref, sorted(ours - ref)
