"""`cli.py bench preprocess`: is preprocessing near the speed of JPEG decoding alone, and is its memory flat?

In one run, on the same files, with the same worker processes (pipeline.parallel) and shard-sized tasks:
- decode-only: every file decoded at full resolution by pipeline.images.load_rgb, nothing else;
- pipeline: pipeline.preprocess.run end to end (decode, crop, Lab, soft encoding, HDF5 writes, manifest,
  prior), into a fresh folder;
at two dataset sizes (N/2 and N), sampling the resident memory of this process and all its children every
20 ms. Besides wall-clock images/s, the CPU time of the processes involved is compared (cpu_ratio): on a
machine shared with other jobs, that is the steadier measure of the work each side does; the larger size's
user and system time, page faults and the machine's I/O wait per side say where a gap comes from (the code,
the kernel's memory and page-cache work, or the disk). A warm-up on a few images first starts the workers
and loads numba's compiled kernel, so both measurements are steady-state. Without a dataset, N realistic JPEGs
(1024x768, about a SUN397 photo, unless `photo` says otherwise) are generated from the scikit-image colour
photos (random crops, scales, flips and exposure jitter, quality 90).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from colorfast.bench.scale import PeakRSS
from pipeline.config import PrepConfig
from pipeline.datasets import list_dataset
from pipeline.images import load_rgb
from pipeline.keys import name_of_key
from pipeline.parallel import imap_unordered
from pipeline.plan import ShardSpec, plan_shards
from pipeline.preprocess import run

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
            load_rgb(Path(root) / name_of_key(key))
        except ValueError:
            pass
    return len(spec.keys)


@dataclass(frozen=True)
class Usage:
    """CPU use of this process and its live children (the persistent loky workers), and the machine's I/O wait:
    what a measurement cost besides its wall time. On a machine shared with other jobs the CPU time is the
    steadier measure of the work each side does; user vs system time and page faults say whether that work is
    the code's or the kernel's (memory, page cache), and I/O wait whether the disk held the run back."""
    user: float                  # seconds
    system: float                # seconds
    minor_faults: int            # Linux only (/proc/PID/stat), else 0
    iowait: float                # seconds, summed over all CPUs; Linux only, else 0
    per_process: tuple = ()      # ((pid, user, system, faults), ...): what a difference is taken over

    @classmethod
    def now(cls) -> "Usage":
        import psutil
        rows = []
        for p in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                t = p.cpu_times()
                rows.append((p.pid, t.user, t.system, _minor_faults(p.pid)))
            except psutil.Error:
                pass
        return cls(sum(r[1] for r in rows), sum(r[2] for r in rows), sum(r[3] for r in rows),
                   getattr(psutil.cpu_times(), "iowait", 0.0), tuple(rows))

    def __sub__(self, other: "Usage") -> "Usage":
        """Over the processes alive at the end: one that started in between counts whole, one that ended in
        between (an idle worker of an earlier pool timing out) is left out rather than made negative. The
        kernel's iowait counter can step back, hence the floor at 0."""
        before = {pid: (u, s, f) for pid, u, s, f in other.per_process}
        user = system = 0.0
        faults = 0
        for pid, u, s, f in self.per_process:
            u0, s0, f0 = before.get(pid, (0.0, 0.0, 0))
            user, system, faults = user + u - u0, system + s - s0, faults + f - f0
        return Usage(user, system, faults, max(0.0, self.iowait - other.iowait))

    @property
    def cpu(self) -> float:
        return self.user + self.system


def _minor_faults(pid: int) -> int:
    try:                                 # field 10, minflt; the name in (...) may hold spaces
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    except (OSError, IndexError, ValueError):            # gone, or exiting as we read (an idle pool worker)
        return 0


def _measure(fn) -> tuple[object, float, Usage, float]:
    """fn() -> (its result, wall seconds, Usage spent, peak RSS MB of this process and its children)."""
    with PeakRSS(interval=0.02) as mem:
        t0, u0 = time.perf_counter(), Usage.now()
        result = fn()
        wall, used = time.perf_counter() - t0, Usage.now() - u0
    return result, wall, used, mem.peak_mb


def _per_image(tag: str, n: int, wall: float, used: Usage) -> dict:
    cores = os.cpu_count() or 1
    return {f"{tag}_img_s": round(n / wall, 1), f"{tag}_cpu_ms": round(1e3 * used.cpu / n, 3),
            f"{tag}_user_ms": round(1e3 * used.user / n, 3), f"{tag}_sys_ms": round(1e3 * used.system / n, 3),
            f"{tag}_faults": round(used.minor_faults / n, 1),
            f"{tag}_iowait_share": round(used.iowait / (wall * cores), 3)}


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
            done, t_dec, u_dec, mem_dec = _measure(
                lambda: sum(imap_unordered(_decode_shard, specs, str(listing.root), workers)))
            result, t_pipe, u_pipe, mem_pipe = _measure(
                lambda: run(replace(base, limit=n, out_dir=str(tmp / f"out_{tag}")), progress=False))
            assert done == result.seen == len(listing.items), (done, result.seen)
            dec, pipe = _per_image("decode", done, t_dec, u_dec), _per_image("pipeline", result.seen, t_pipe, u_pipe)
            # CPU times tick in 10 ms steps: a tiny run (the tests') can show none at all on one side
            cpu_ratio = round(u_dec.cpu / u_pipe.cpu, 3) if u_pipe.cpu > 0 else None
            cpu_ratio_text = "n/a" if cpu_ratio is None else f"{cpu_ratio:.2f}"
            echo(f"{tag:5s} N={result.seen:5d}: decode-only {dec['decode_img_s']:7.1f} img/s, pipeline "
                 f"{pipe['pipeline_img_s']:7.1f} img/s (ratio {pipe['pipeline_img_s'] / dec['decode_img_s']:.2f}; "
                 f"CPU ms/img {dec['decode_cpu_ms']:.2f} vs {pipe['pipeline_cpu_ms']:.2f}, ratio "
                 f"{cpu_ratio_text}; {result.written} written), peak RSS {mem_pipe:.0f} MB "
                 f"(decode-only {mem_dec:.0f} MB)\n"
                 f"      system ms/img {dec['decode_sys_ms']:.2f} vs {pipe['pipeline_sys_ms']:.2f}, page faults/img "
                 f"{dec['decode_faults']:.0f} vs {pipe['pipeline_faults']:.0f}, I/O wait "
                 f"{100 * dec['decode_iowait_share']:.0f}% vs {100 * pipe['pipeline_iowait_share']:.0f}% of the cores")
            figures.update({f"n_{tag}": result.seen, f"decode_img_s_{tag}": dec["decode_img_s"],
                            f"pipeline_img_s_{tag}": pipe["pipeline_img_s"], f"peak_rss_mb_{tag}": mem_pipe,
                            f"cpu_ratio_{tag}": cpu_ratio})
            if tag == "large":                                     # the steady state: its breakdown too
                figures.update({k: v for k, v in {**dec, **pipe}.items() if not k.endswith("_img_s")})
            shutil.rmtree(tmp / f"out_{tag}", ignore_errors=True)
        figures.update(pipeline_img_s=figures["pipeline_img_s_large"], decode_img_s=figures["decode_img_s_large"],
                       ratio=round(figures["pipeline_img_s_large"] / figures["decode_img_s_large"], 3),
                       peak_rss_mb=max(figures["peak_rss_mb_small"], figures["peak_rss_mb_large"]))
        return figures
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
