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


def test_a_colour_belongs_to_the_cell_of_its_nearest_multiple_of_10():
    """Cells are rounded, not floored: [10 i - 5, 10 i + 5) belongs to the bin centred on 10 i."""
    ab = np.array([[4.9, -4.9], [5.0, -5.0], [-5.1, 14.99], [98.2, -107.9], [0.0, 0.0]])
    assert cell_index(ab).tolist() == [[0, 0], [1, 0], [-1, 1], [10, -11], [0, 0]]


def test_the_bin_set_is_exactly_the_rounded_cells_of_srgb():
    """262 bins; the extreme sRGB colours (magenta's a ~98, blue's b ~-108, green's a ~-86) have bins of their
    own at the edge, and every colour is within half a cell (5 ab units per axis) of a bin centre."""
    centers = in_gamut_centers()
    assert len(centers) == 262
    corners = np.array([[[255, 0, 255], [0, 0, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0]]], np.float32) / 255
    ab = cv2.cvtColor(corners, cv2.COLOR_RGB2Lab)[0, :, 1:]
    known = {tuple(c) for c in centers.astype(int).tolist()}
    for colour in ab:
        nearest = tuple((np.round(colour / GRID) * GRID).astype(int).tolist())
        assert nearest in known, (colour, nearest)
    rgb = np.random.default_rng(1).integers(0, 256, (100_000, 1, 3)).astype(np.float32) / 255
    ab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)[:, 0, 1:]
    d = np.abs(ab[:, None, :] - centers[None, ::1, :]).max(-1).min(1)            # Chebyshev distance to a bin
    assert d.max() <= GRID / 2 + 1e-4
    assert {tuple(c) for c in centers.max(0).astype(int).reshape(1, 2).tolist()} == {(100, 90)}
    assert tuple(centers.min(0).astype(int).tolist()) == (-90, -110)
