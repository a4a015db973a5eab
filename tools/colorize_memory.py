"""Peak memory (RSS) and time of `cli.py colorize` on one large photo, in a fresh process per photo.

    python tools/colorize_memory.py [--code DIR] [--sizes 5120x2880 12000x12000] [--input jpg|png]

Generates each photo (smooth colours plus pixel noise, so PNG/JPEG sizes are realistic; JPEG quality 90),
makes a tiny CE checkpoint once (2 steps on synthetic shards: the network sees 256 px whatever the photo, so
the model's size does not change the full-resolution cost), then runs `cli.py colorize PHOTO` of the code in
--code (default: this checkout; give another worktree to measure the code before a change) and reads the
child's peak RSS from os.wait4. A 256 x 256 photo first gives the fixed cost (Python, torch, the model).
Prints one JSON line per photo. Produced the colorize memory table in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parents[1]


def make_photo(path: Path, w: int, h: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    for y0 in range(0, h, 1024):                  # noise in bands: no full-size int copy here either
        band = img[y0:y0 + 1024]
        band[...] = np.clip(band.astype(np.int16) + rng.integers(-12, 13, band.shape, dtype=np.int16), 0, 255)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    assert cv2.imwrite(str(path), img, params)


def make_checkpoint(folder: Path) -> Path:
    if (folder / "run" / "last.pt").exists():
        return folder / "run" / "last.pt"
    sys.path.insert(0, str(HERE))
    from trainer.config import FitConfig
    from trainer.loop import fit
    from trainer.synthetic import write_synthetic_shards
    data = write_synthetic_shards(folder / "shards", n=8, size=64, test_every=4)
    return fit(FitConfig(data=str(data), out=str(folder / "run"), model="tiny", loss="ce", steps=2, batch_size=4,
                         crop=32, workers=0, device="cpu", lr=1e-3)) / "last.pt"


def measure(code: Path, photo: Path, ckpt: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(code / "cli.py"), "colorize", str(photo), "--checkpoint", str(ckpt),
                             "--out", str(out), "--device", "cpu"], cwd=code, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"colorize failed on {photo}:\n{output}")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "wall_s": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", type=Path, default=HERE)
    ap.add_argument("--sizes", nargs="+", default=["5120x2880", "12000x12000"])
    ap.add_argument("--input", choices=["jpg", "png"], default="jpg")
    ap.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    args = ap.parse_args()
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="colorize_memory."))
    tmp.mkdir(parents=True, exist_ok=True)
    ckpt = make_checkpoint(tmp)
    base = None
    for size in ["256x256"] + args.sizes:
        w, h = map(int, size.split("x"))
        photo = tmp / f"photo_{w}x{h}.{args.input}"
        if not photo.exists():
            make_photo(photo, w, h)
        row = {"code": str(args.code), "photo": size, "input": args.input, "megapixels": round(w * h / 1e6, 2),
               **measure(args.code.resolve(), photo, ckpt, tmp / f"out_{w}x{h}_{os.getpid()}")}
        if base is None:
            base = row["peak_rss_mb"]
        else:
            row["bytes_per_pixel_above_256px"] = round((row["peak_rss_mb"] - base) * 2**20 / (w * h), 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
