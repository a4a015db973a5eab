"""`cli.py bench preprocess`: is preprocessing near the speed of JPEG decoding alone, and is its memory flat?

In one run, on the same files, with the same worker processes (pipeline.parallel) and shard-sized tasks:
- decode-only: every file decoded at full resolution by pipeline.images.load_rgb, nothing else;
- pipeline: pipeline.preprocess.run end to end (decode, crop, Lab, soft encoding, HDF5 writes, manifest,
  prior), into a fresh folder;
at two dataset sizes (N/2 and N), sampling the resident memory of this process and all its children every
20 ms. Besides wall-clock images/s, the CPU time of the processes involved is compared (cpu_ratio): on a
machine shared with other jobs, that is the steadier measure of the work each side does. A warm-up on a few images first starts the workers and loads numba's compiled kernel, so both
measurements are steady-state. Without a dataset, N realistic JPEGs (1024x768, about a SUN397 photo, unless `photo` says otherwise) are generated from the
scikit-image colour photos (random crops, scales, flips and exposure jitter, quality 90).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from pipeline.bench_scale import PeakRSS
from pipeline.config import PrepConfig
from pipeline.datasets import list_dataset
from pipeline.images import load_rgb
from pipeline.parallel import imap_unordered
from pipeline.preprocess import ShardSpec, plan_shards, run

BENCH_SHARD = 32                  # inputs per task, for both measurements: several tasks per worker
SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
           "retina.jpg", "ihc.png")          # the colour photos of scikit-image's data folder


def synth_jpegs(folder: Path, n: int, seed: int = 0, w: int = 640, h: int = 480) -> Path:
    """Write n JPEGs of w x h made from random crops of the skimage colour photos into folder/<photo>/."""
    import skimage
    rng = np.random.default_rng(seed)
    photos = [load_rgb(Path(skimage.__file__).parent / "data" / name) for name in SOURCES]
    for i in range(n):
        src = photos[i % len(photos)]
        H, W = src.shape[:2]
        s = rng.uniform(0.55, 1.0) * min(H / h, W / w)                  # crop of the photo's aspect w:h
        ch, cw = int(h * s), int(w * s)
        y, x = rng.integers(0, H - ch + 1), rng.integers(0, W - cw + 1)
        img = cv2.resize(src[y:y + ch, x:x + cw, :3], (w, h), interpolation=cv2.INTER_AREA if s > 1 else cv2.INTER_CUBIC)
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = np.clip(img.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.normal(0, 2, img.shape), 0, 255)
        out = folder / Path(SOURCES[i % len(photos)]).stem / f"{i:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), img.astype(np.uint8)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def _decode_shard(spec: ShardSpec, root: str) -> int:
    for key in spec.keys:
        try:
            load_rgb(Path(root) / key)
        except ValueError:
            pass
    return len(spec.keys)


def cpu_seconds() -> float:
    """User + system CPU time of this process and its live children (the persistent loky workers): the
    CPU cost of a measurement, which other jobs sharing the machine inflate much less than wall time."""
    import psutil
    total = 0.0
    for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def bench_preprocess(dataset: str | None, root: str, images: int, jobs: int, size: int,
                     photo: tuple[int, int] = (1024, 768), echo=print) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        if not dataset:
            echo(f"generating {images} {photo[0]}x{photo[1]} JPEGs in {tmp / 'images'} ...")
            dataset, root = "folder", str(synth_jpegs(tmp / "images", images, w=photo[0], h=photo[1]))
        base = PrepConfig(dataset=dataset, root=root, size=size, jobs=jobs, shard_size=BENCH_SHARD)
        workers = base.workers
        # warm-up: one-image tasks, several per worker, so that every worker has imported its modules and
        # loaded numba's compiled kernel before anything is timed
        run(replace(base, limit=4 * workers, shard_size=1, out_dir=str(tmp / "warmup")), progress=False)
        figures = {"dataset": dataset, "size": size, "jobs": workers}
        for tag, n in (("small", images // 2), ("large", images)):
            listing = list_dataset(dataset, root, base.partition, base.test_fraction, "all", n)
            specs = plan_shards(listing, BENCH_SHARD)
            with PeakRSS(interval=0.02) as mem_decode:
                t0, c0 = time.perf_counter(), cpu_seconds()
                done = sum(imap_unordered(_decode_shard, specs, str(listing.root), workers))
                t_decode, c_decode = time.perf_counter() - t0, cpu_seconds() - c0
            with PeakRSS(interval=0.02) as mem_pipe:
                t0, c0 = time.perf_counter(), cpu_seconds()
                result = run(replace(base, limit=n, out_dir=str(tmp / f"out_{tag}")), progress=False)
                t_pipe, c_pipe = time.perf_counter() - t0, cpu_seconds() - c0
            assert done == result.seen == len(listing.items), (done, result.seen)
            decode_s, pipe_s = done / t_decode, result.seen / t_pipe
            echo(f"{tag:5s} N={result.seen:5d}: decode-only {decode_s:7.1f} img/s, pipeline {pipe_s:7.1f} img/s "
                 f"(ratio {pipe_s / decode_s:.2f}; CPU ms/img {1e3 * c_decode / done:.2f} vs "
                 f"{1e3 * c_pipe / result.seen:.2f}, ratio {c_decode / c_pipe:.2f}; {result.written} written), "
                 f"peak RSS {mem_pipe.peak_mb:.0f} MB (decode-only {mem_decode.peak_mb:.0f} MB)")
            figures.update({f"n_{tag}": result.seen, f"decode_img_s_{tag}": round(decode_s, 1),
                            f"pipeline_img_s_{tag}": round(pipe_s, 1), f"peak_rss_mb_{tag}": mem_pipe.peak_mb,
                            f"cpu_ratio_{tag}": round(c_decode / c_pipe, 3)})
            shutil.rmtree(tmp / f"out_{tag}", ignore_errors=True)
        figures.update(pipeline_img_s=figures["pipeline_img_s_large"], decode_img_s=figures["decode_img_s_large"],
                       ratio=round(figures["pipeline_img_s_large"] / figures["decode_img_s_large"], 3),
                       peak_rss_mb=max(figures["peak_rss_mb_small"], figures["peak_rss_mb_large"]))
        return figures
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
