"""tools/knn_mass.py, the measurement behind the --knn default: the kernel mass beyond the K nearest bins against
closed forms on a regular 10-unit grid of bins, and the tool's report on the bundled photos."""
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("knn_mass", ROOT / "tools" / "knn_mass.py")
knn_mass = importlib.util.module_from_spec(spec)
spec.loader.exec_module(knn_mass)

GRID = np.array([(a, b) for a in range(-100, 101, 10) for b in range(-100, 101, 10)], np.float64)


def _closed_form(point, k, sigma=5.0):
    d2 = np.sort(((GRID - point) ** 2).sum(1))
    w = np.exp(-d2 / (2 * sigma ** 2))
    return 1 - w[:k].sum() / w.sum()


@pytest.mark.parametrize("point", [(0.0, 0.0), (5.0, 5.0), (3.0, -1.0)])
def test_mass_beyond_k_matches_the_kernel_on_a_regular_grid(point):
    res = knn_mass.truncation(np.array([point]), GRID, [1, 5, 10, len(GRID)], sigma=5.0)
    for k in (1, 5, 10):
        assert res[k]["mass"][0] == pytest.approx(_closed_form(np.array(point), k), rel=1e-9, abs=1e-12)
    assert res[len(GRID)]["mass"][0] == pytest.approx(0.0, abs=1e-12)           # all bins: nothing dropped
    assert res[len(GRID)]["shift"][0] == pytest.approx(0.0, abs=1e-9)


def test_at_a_bin_centre_k5_drops_the_diagonals_and_keeps_the_mean():
    """At a bin centre the 5 nearest are the bin and its 4 edge neighbours (weights 1 and e^-2); the 4 diagonals
    (e^-4) and beyond are dropped; by symmetry the mean does not move."""
    res = knn_mass.truncation(np.array([[0.0, 0.0]]), GRID, [5], sigma=5.0)
    kept = 1 + 4 * math.exp(-2)
    assert res[5]["mass"][0] > 4 * math.exp(-4) / (kept + 4 * math.exp(-4)) * 0.99
    assert res[5]["shift"][0] == pytest.approx(0.0, abs=1e-9)


def test_the_tool_reports_mass_and_cost_on_the_bundled_photos():
    out = subprocess.run([sys.executable, "tools/knn_mass.py", "--k", "5", "10", "--repeat", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("sample") and "target pixels, Q = " in lines[0]
    masses = [float(ln.split("mean ")[1].split(",")[0]) for ln in lines if "kernel mass beyond" in ln]
    assert len(masses) == 2 and 0 < masses[1] < masses[0] < 0.2            # K = 10 drops less than K = 5
    assert sum("shard bytes per sample" in ln and "ms/image" in ln for ln in lines) == 2
