"""`cli.py bench memory`: peak memory (RSS) and time of `colorize` on large photos, in a fresh process per photo.

Generates each photo (smooth colours plus pixel noise, so PNG/JPEG sizes are realistic; JPEG quality 90), makes a
tiny CE checkpoint unless one is given (2 steps on synthetic shards: the network sees 256 px whatever the photo,
so the model's size does not change the full-resolution cost), runs `python -m colorfast colorize PHOTO` and
reads the child's peak RSS from os.wait4. A 256 x 256 photo first gives the fixed cost (Python, torch, the
model); each larger photo's figure above it, per pixel, is what colorize holds per pixel of a photo.
(Until issue 20 this was tools/colorize_memory.py, which could also run another checkout's code.)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

PACKAGE_ROOT = Path(__file__).resolve().parents[2]     # the folder holding colorfast/ (and cli.py in a clone)


def make_photo(path: Path, w: int, h: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for y0 in range(0, h, 1024):                  # noise in bands: no full-size int copy here either
        band = img[y0:y0 + 1024]
        band[...] = np.clip(band.astype(np.int16) + rng.integers(-12, 13, band.shape, dtype=np.int16), 0, 255)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if not cv2.imwrite(str(path), img, params):
        raise OSError(f"{path}: cannot write the generated photo")


def tiny_checkpoint(folder: Path) -> Path:
    from trainer.config import FitConfig
    from trainer.loop import fit
    from trainer.synthetic import write_synthetic_shards
    data = write_synthetic_shards(folder / "shards", n=8, size=64, test_every=4)
    return fit(FitConfig(data=str(data), out=str(folder / "run"), model="tiny", loss="ce", steps=2, batch_size=4,
                         crop=32, workers=0, device="cpu", lr=1e-3)) / "last.pt"


def measure(photo: Path, checkpoint: str, out: Path) -> dict:
    """One `colorize` of one photo in a fresh process -> its peak RSS and wall time."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "colorfast", "colorize", str(photo), "--checkpoint", checkpoint,
                             "--out", str(out), "--device", "cpu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        last = output.strip().splitlines()[-1] if output.strip() else f"exit status {status}"
        raise RuntimeError(f"colorize failed on {photo.name}: {last}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 2)}


def bench_memory(sizes=((5120, 2880), (12000, 12000)), fmt: str = "jpg", checkpoint: str = "", echo=print) -> dict:
    """-> {"checkpoint", "input", "photos": [{"photo", "megapixels", "peak_rss_mb", "wall_s",
    "bytes_per_pixel_above_256px"}]}; a line per photo as it is measured."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    try:
        ckpt = checkpoint or str(tiny_checkpoint(tmp))
        rows, base = [], None
        for w, h in [(256, 256), *sizes]:
            photo = tmp / f"photo_{w}x{h}.{fmt}"
            make_photo(photo, w, h)
            row = {"photo": f"{w}x{h}", "megapixels": round(w * h / 1e6, 2), **measure(photo, ckpt, tmp / "out")}
            photo.unlink()
            if base is None:
                base = row["peak_rss_mb"]
            else:
                row["bytes_per_pixel_above_256px"] = round((row["peak_rss_mb"] - base) * 2 ** 20 / (w * h), 1)
            echo(f"{row['photo']:>12s} {row['megapixels']:7.2f} MP  peak RSS {row['peak_rss_mb']:8.1f} MB  "
                 f"{row['wall_s']:6.2f} s")
            rows.append(row)
        return {"checkpoint": checkpoint or "tiny (2 steps, synthetic)", "input": fmt, "photos": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
