"""Hostile inputs and faults, round three (issue 19), preprocessing side: file names that are not UTF-8,
decompression bombs, files that are not regular files, HDF5_PLUGIN_PATH set as README advises, temporary files
of other programs, workers orphaned by a killed run, and tar names stored twice."""
import json
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


# ---- decompression bombs ----------------------------------------------------------------------------------
def _jpeg_declaring(w: int, h: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to declare w x h pixels."""
    import struct

    from hostile_files import jpeg_bytes, photo
    data = bytearray(jpeg_bytes(photo("coffee")))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


BOMBS = """
import resource, sys
from pathlib import Path
from pipeline.config import PrepConfig
from pipeline.datasets import list_dataset
from pipeline.preprocess import encode_image
cfg = PrepConfig(size=64)
print(encode_image(Path(sys.argv[1]) / "bomb.png", cfg))
listing = list_dataset("coco", sys.argv[1])
key = "train2017/000000000001.jpg"
print(encode_image(Path(sys.argv[1]) / key, cfg, listing.members[key]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def test_bombs_are_skipped_before_they_are_inflated_or_decoded(tmp_path):
    """A 1.2 MB PNG declaring 20000 x 20000 px (decoded by OpenCV after Pillow refused it: 2.3 GB of peak RSS),
    and a zip entry declaring 1 MiB that inflates to 2 GiB (inflated whole before any check: 4.1 GB): skipped
    with their reasons, in a process that stays small."""
    from hostile_files import png_bomb, zip_bomb
    (tmp_path / "bomb.png").write_bytes(png_bomb(20000, 20000))
    (tmp_path / "train2017.zip").write_bytes(zip_bomb("train2017/000000000001.jpg", 1 << 20, 2 << 30))
    proc = subprocess.run([sys.executable, "-c", BOMBS, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=_env(False), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png, zipped, peak_mib = proc.stdout.strip().splitlines()
    assert png.startswith("too large: png of 400.0 MP, over --max-pixels 178,956,970"), png
    assert zipped.startswith("undecodable:") and "inflates past the 1,048,576 bytes its header declares" in zipped
    assert int(peak_mib) < 400, f"peak RSS {peak_mib} MiB"


def test_max_pixels_skips_by_the_header_of_every_format_and_the_run_goes_on(tmp_path):
    from PIL import Image

    from hostile_files import jpeg_bytes, photo, png_bomb
    from pipeline.config import PrepConfig
    from pipeline.preprocess import run
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        (photos / f"{i}.jpg").write_bytes(jpeg_bytes(photo(name)))                      # 128 x 96 px
    (photos / "big.jpg").write_bytes(_jpeg_declaring(12000, 11000))          # the JPEG fast path (OpenCV)
    (photos / "big.png").write_bytes(png_bomb(12500, 12000))                  # 150 MP: under the default
    Image.fromarray(photo("rocket", 200, 300)).save(photos / "wide.bmp")      # 60,000 px
    cfg = PrepConfig(dataset="folder", root=str(photos), out_dir=str(tmp_path / "a"), size=64, jobs=1,
                     max_pixels=50_000)
    result = run(cfg, progress=False)
    reasons = {s["key"]: s["reason"] for s in json.loads((tmp_path / "a" / "manifest.json").read_text())["skipped"]}
    assert result.written == 3 and set(reasons) == {"big.jpg", "big.png", "wide.bmp"}, reasons
    assert reasons["big.jpg"].startswith("too large: jpeg of 12000x11000 px = 132.0 MP, over --max-pixels 50,000")
    assert reasons["big.png"].startswith("too large: png of 12500x12000 px = 150.0 MP, over --max-pixels 50,000")
    assert reasons["wide.bmp"].startswith("too large: bmp of 300x200 px = 0.1 MP, over --max-pixels 50,000")
    # the CLI's option, and a recorded config
    proc = _cli("preprocess", "folder", "--root", photos, "--out", tmp_path / "b", "--size", 64, "--jobs", 1,
                "--max-pixels", 70_000, env=_env(False))
    assert proc.returncode == 0 and "4 written, 2 skipped" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]["max_pixels"] == 70_000
