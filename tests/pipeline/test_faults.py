"""Hostile inputs and faults, round three (issue 19), preprocessing side: file names that are not UTF-8,
decompression bombs, files that are not regular files, HDF5_PLUGIN_PATH set as README advises, temporary files
of other programs, workers orphaned by a killed run, and tar names stored twice."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _env(plugin_path: bool) -> dict:
    import hdf5plugin
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HDF5_PLUGIN_PATH", None)
    if plugin_path:
        env["HDF5_PLUGIN_PATH"] = hdf5plugin.PLUGIN_PATH
    return env


ROUND_TRIP = """
import numpy as np, sys
from pipeline import contract
rng = np.random.default_rng(0)
arr = dict(L=rng.integers(0, 256, (2, 16, 16), dtype=np.uint8), ab=rng.normal(0, 30, (2, 2, 4, 4)).astype(np.float16),
           nn_idx=rng.integers(0, 262, (2, 5, 4, 4)).astype(np.uint16),
           nn_w=rng.random((2, 5, 4, 4)).astype(np.float16), keys=["a.jpg", "b.jpg"])
for storage in contract.STORAGE:
    contract.write_shard(f"{sys.argv[1]}/{storage}.h5", **arr, storage=storage)
    with contract.open_shard(f"{sys.argv[1]}/{storage}.h5") as sh:
        for name in contract.ARRAYS:
            np.testing.assert_array_equal(sh.read(slice(None))[name], arr[name])
print("round trip ok")
"""


@pytest.mark.parametrize("plugin_path", [False, True], ids=["plain", "HDF5_PLUGIN_PATH"])
def test_every_storage_writes_with_or_without_hdf5_plugin_path(tmp_path, plugin_path):
    """README tells plain-h5py readers to set HDF5_PLUGIN_PATH to hdf5plugin's folder; with it set, HDF5 found
    blosc there as a bare plugin whose calls into HDF5 were never wired up, and every blosc write failed."""
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=_env(plugin_path), cwd=ROOT)
    assert proc.returncode == 0 and "round trip ok" in proc.stdout, proc.stderr[-2000:]
    # and the CLI of the issue: preprocess --storage blosc-lz4, then a plain-h5py read of what it wrote
    from hostile_files import jpeg_bytes, photo
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        (photos / f"{i}.jpg").write_bytes(jpeg_bytes(photo(name)))
    out = tmp_path / "out"
    proc = _cli("preprocess", "folder", "--root", photos, "--out", out, "--size", 64, "--jobs", 1,
                "--storage", "blosc-lz4", env=_env(plugin_path))
    assert proc.returncode == 0 and "3 written" in proc.stdout, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
