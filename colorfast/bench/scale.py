"""`cli.py bench scale`: do preprocessing, verification and the shard loader scale linearly with the images?

Generates N small synthetic colour JPEGs into a temporary folder (deleted afterwards) and, at N/4 and at N,
preprocesses them (`folder` dataset, --size 64 so 20,000 images take a minute or two on two cores), runs a deep
`verify` over the shards, and reads the train split through the trainer's loader (trainer.data.ShardDataset +
make_loader: measuring the pair is the point, hence this module's place on the top floor). For each it reports
the rate per image and the peak resident memory of this process and all its children (loky or DataLoader
workers). Equal rates and equal peaks at both sizes mean that nothing holds all samples in memory or does
per-image work that grows with N.

With `loader_n` (run_loader_scale), the loader alone at loader_n / 8 and loader_n samples (a million: ImageNet's
training split), in shard files written directly: one real shard (preprocessed from these synthetic JPEGs at
--size 32) copied loader_n / 256 times, the N/8 folder hard-linked to the first eighth of them. Preprocessing a
million JPEGs on two cores would take over an hour and measure nothing new; the loader's memory depends on the
number of files and samples, not on their pixels. Peak RSS of this process and its DataLoader workers, and the
rate, for the same work at both sizes (8 epochs of N/8, 1 epoch of N).

Noise control: a warm-up run on 16 images first (numba compilation, loky start-up); a run's fixed cost
(listing, bins, the soft encoder's table) is left out of the "steady" preprocess rate, measured between the
first and last shard's completion; the loader does the same work at both sizes (4 epochs of N/4, 1 of N),
twice in alternation, and keeps the best rate, with its worker start-up (first batch) timed apart.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import psutil

from pipeline.config import PrepConfig
from trainer.data import EpochSampler, ShardDataset, make_loader


def make_image(rng: np.random.Generator, px: int) -> np.ndarray:
    """A (px, px..1.25 px, 3) uint8 RGB image: a two-colour gradient with three flat rectangles of random colour,
    so every image has chroma (none is skipped as grayscale) and JPEG has edges to encode."""
    h, w = px, px + int(rng.integers(0, px // 4 + 1))
    c0, c1 = rng.integers(0, 256, (2, 3))
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    img = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).astype(np.uint8).copy()
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        img[y:y + int(rng.integers(8, h // 2)), x:x + int(rng.integers(8, w // 2))] = rng.integers(0, 256, 3)
    return img


def make_images(folder, n: int, px: int = 96, seed: int = 0, start: int = 0) -> list[Path]:
    """Write images start..start+n-1 as JPEGs `folder/d{i // 1000:03d}/img_{i:06d}.jpg` (1,000 per subfolder, like
    a real collection); image i depends only on (seed, i), so any two calls agree. ~0.3 ms an image."""
    folder = Path(folder)
    paths = []
    for i in range(start, start + n):
        rng = np.random.default_rng((seed, i))
        path = folder / f"d{i // 1000:03d}" / f"img_{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(make_image(rng, px), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        path.write_bytes(buf.tobytes())
        paths.append(path)
    return paths


class PeakRSS:
    """Context manager sampling the summed RSS of this process and all its descendants every `interval` s.
    RSS counts shared library pages once per process, so it overstates the total; it is the same overstatement
    at both sizes, which is what the comparison needs."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._me = psutil.Process()

    def sample(self) -> int:
        total = 0
        for p in [self._me, *self._me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:                    # a worker that exited between listing and reading
                pass
        return total

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.sample())

    def __enter__(self):
        self.peak = self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.sample())

    @property
    def peak_mb(self) -> float:
        return round(self.peak / 2 ** 20, 1)


def bench_preprocess(cfg: PrepConfig) -> dict:
    from pipeline.preprocess import run
    with PeakRSS() as mem:
        t = time.perf_counter()
        result = run(cfg, progress=False)
        seconds = time.perf_counter() - t
    assert result.skipped == 0, result.summary()          # every synthetic image is a valid colour image
    return {"images": result.seen, "seconds": round(seconds, 2), "images_per_s": round(result.seen / seconds, 1),
            "steady_images_per_s": steady_rate(cfg.out), "peak_rss_mb": mem.peak_mb}


def steady_rate(folder) -> float | None:
    """Images per second between the first and the last shard file's completion (their mtimes), which leaves
    out a run's fixed costs (listing, the bin set, the soft encoder's lookup table, ~2 s) and the first shard."""
    from pipeline.contract import read_manifest
    shards = read_manifest(folder)["shards"]
    done = sorted((Path(folder, s["file"]).stat().st_mtime, s["count"]) for s in shards)
    if len(done) < 3:
        return None
    return round(sum(c for _, c in done[1:]) / (done[-1][0] - done[0][0]), 1)


def bench_verify(folder) -> dict:
    """`cli.py verify` (deep: every chunk's checksum) over the folder; it must pass and stream in flat memory."""
    from pipeline.contract import read_manifest
    from pipeline.verify import verify_folder
    with PeakRSS() as mem:
        t = time.perf_counter()
        problems = verify_folder(folder)
        seconds = time.perf_counter() - t
    assert problems == [], problems[:5]
    samples = sum(s["count"] for s in read_manifest(folder)["shards"])
    return {"seconds": round(seconds, 2), "samples_per_s": round(samples / seconds, 1), "peak_rss_mb": mem.peak_mb}


def bench_loader(folder, batch_size: int, workers: int, crop: int, epochs: int = 1) -> dict:
    """`epochs` epochs of the train split through the trainer's loader, built as `fit` builds it (persistent
    workers, EpochSampler). The first batch (worker start-up) is timed apart."""
    ds = ShardDataset(folder, "train", crop=crop, flip=True, seed=0)
    sampler = EpochSampler(ds, seed=0)
    loader = make_loader(ds, batch_size, sampler, workers)
    samples, first_s, seconds = 0, 0.0, 0.0
    with PeakRSS() as mem:
        for epoch in range(epochs):
            sampler.set_position(epoch)
            ds.epoch = epoch
            t0 = time.perf_counter()
            batches = iter(loader)
            if epoch == 0:
                next(batches)
                first_s = time.perf_counter() - t0
                t0 = time.perf_counter()
            samples += sum(len(batch["key"]) for batch in batches)
            seconds += time.perf_counter() - t0
        del batches, loader                          # stop the persistent workers before the next measurement
    ds.close()
    return {"epochs": epochs, "samples": samples, "first_batch_s": round(first_s, 2), "seconds": round(seconds, 2),
            "samples_per_s": round(samples / seconds, 1), "peak_rss_mb": mem.peak_mb}


def shard_copies(base, dst, n: int, link_from=None) -> int:
    """A shard folder of about n samples made of copies of `base`'s first train shard (same arrays, same keys:
    the loader does not read keys twice) and its prior; files are hard links into `link_from` where it has them.
    Returns the samples written."""
    from pipeline.contract import MANIFEST, PRIOR, read_manifest, write_manifest
    entry = next(s for s in read_manifest(base)["shards"] if s["split"] == "train")
    files = max(1, n // entry["count"])
    dst = Path(dst)
    dst.mkdir(parents=True)
    shutil.copy(Path(base) / PRIOR, dst / PRIOR)
    shards = []
    for j in range(files):
        name = f"train-{j:05d}.h5"
        if link_from is not None and (Path(link_from) / name).exists():
            os.link(Path(link_from) / name, dst / name)
        else:
            shutil.copyfile(Path(base) / entry["file"], dst / name)
        shards.append({"file": name, "split": "train", "count": entry["count"]})
    manifest = read_manifest(base)
    written = files * entry["count"]
    write_manifest(dst, {**{k: v for k, v in manifest.items() if k not in ("format_version", MANIFEST)},
                         "shards": shards, "skipped": [], "counts": {"seen": written, "written": written, "skipped": 0}})
    return written


def run_loader_scale(n: int = 1_000_000, size: int = 32, batch_size: int = 64, workers: int = 2, workdir: str = "",
                     echo=print) -> dict:
    """The loader alone at n / 8 and n samples (module docstring): rate and peak RSS at both."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-loader-scale-", dir=workdir or None))
    try:
        make_images(tmp / "images", 320)
        from pipeline.preprocess import run
        run(PrepConfig(dataset="folder", root=str(tmp / "images"), out_dir=str(tmp / "base"), size=size,
                       split="train", jobs=2), progress=False)
        t = time.perf_counter()
        big = shard_copies(tmp / "base", tmp / "big", n)
        small = shard_copies(tmp / "base", tmp / "small", n // 8, link_from=tmp / "big")
        disk = sum(p.stat().st_size for p in (tmp / "big").glob("*.h5"))
        files = len(list((tmp / "big").glob("*.h5")))
        echo(f"wrote {big} samples in {files} shard files ({disk / 2 ** 30:.2f} GiB) in {time.perf_counter() - t:.1f} s")
        sizes = {}
        for count, folder, epochs in ((small, tmp / "small", 8), (big, tmp / "big", 1)):
            t = time.perf_counter()
            ShardDataset(folder, "train", crop=size)
            index_s = time.perf_counter() - t
            sizes[str(count)] = load = {**bench_loader(folder, batch_size, workers, crop=size, epochs=epochs),
                                        "shard_files": len(list(folder.glob("*.h5"))), "index_s": round(index_s, 2),
                                        "loadavg_1min": round(os.getloadavg()[0], 2)}
            echo(f"N={count} in {load['shard_files']} files: loader {load['samples_per_s']} samples/s over "
                 f"{epochs} epoch(s), peak RSS {load['peak_rss_mb']} MB (loadavg {load['loadavg_1min']})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    a, b = sizes[str(small)], sizes[str(big)]
    return {"bench": "loader_scale", "n": big, "size": size, "loader_workers": workers, "batch_size": batch_size,
            "sizes": sizes, "ratio_big_over_small": {
                "loader_samples_per_s": round(b["samples_per_s"] / a["samples_per_s"], 3),
                "loader_peak_rss": round(b["peak_rss_mb"] / a["peak_rss_mb"], 3)}}


def run_scale(n: int = 20000, size: int = 64, px: int = 96, jobs: int = 2, shard_size: int = 256,
              batch_size: int = 64, workers: int = 2, workdir: str = "", echo=print) -> dict:
    """Preprocess, verify and the loader at N/4 and N images; returns the figures (see the module docstring)."""
    if n < 4 * batch_size * 4:
        raise ValueError(f"--n must be at least {16 * batch_size} (4 loader batches at N/4), got {n}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=workdir or None))
    try:
        t = time.perf_counter()
        make_images(tmp / "images", n, px)
        echo(f"generated {n} images of {px} px in {time.perf_counter() - t:.1f} s under {tmp}")
        base = PrepConfig(dataset="folder", size=size, shard_size=shard_size, jobs=jobs)
        warm = replace(base, root=str(tmp / "warm"), out_dir=str(tmp / "warm-shards"))
        make_images(warm.root, 16, px, seed=1)
        bench_preprocess(warm)                                  # compiles numba, starts the loky workers
        # One phase at a time over both sizes, so each phase's peak starts from the same process state (the
        # loader imports torch into this process, which would otherwise count against the larger preprocess).
        counts = (n // 4, n)
        outs = {c: tmp / f"shards-{c}" for c in counts}
        sizes = {str(c): {} for c in counts}
        for c in counts:
            cfg = replace(base, root=str(tmp / "images"), out_dir=str(outs[c]), limit=c)
            sizes[str(c)]["preprocess"] = prep = bench_preprocess(cfg)
            echo(f"N={c}: preprocess {prep['images_per_s']} img/s end to end, {prep['steady_images_per_s']} img/s "
                 f"steady, peak RSS {prep['peak_rss_mb']} MB")
        for c in counts:
            sizes[str(c)]["verify"] = check = bench_verify(outs[c])
            echo(f"N={c}: verify {check['samples_per_s']} samples/s, peak RSS {check['peak_rss_mb']} MB")
        # The same work at both sizes, twice in alternation: best rate, highest peak. One epoch of N/4 small
        # images lasts about a second, too short to trust once on a shared machine.
        loads = {c: [] for c in counts}
        for _ in range(2):
            for c in counts:
                loads[c].append(load := bench_loader(outs[c], batch_size, workers, crop=size, epochs=n // c))
                echo(f"N={c}: loader {load['samples_per_s']} samples/s over {load['epochs']} epoch(s), "
                     f"peak RSS {load['peak_rss_mb']} MB")
        for c in counts:
            best = max(loads[c], key=lambda r: r["samples_per_s"])
            sizes[str(c)]["loader"] = {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in loads[c])}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    small, big = sizes[str(n // 4)], sizes[str(n)]

    def ratio(part, key):
        a, b = small[part][key], big[part][key]
        return round(b / a, 3) if a and b else None          # steady rate: None below 3 shards
    return {"bench": "scale", "n": n, "size": size, "image_px": px, "jobs": jobs, "loader_workers": workers,
            "batch_size": batch_size, "sizes": sizes,
            "ratio_big_over_small": {"preprocess_images_per_s": ratio("preprocess", "images_per_s"),
                                     "preprocess_steady_images_per_s": ratio("preprocess", "steady_images_per_s"),
                                     "preprocess_peak_rss": ratio("preprocess", "peak_rss_mb"),
                                     "verify_samples_per_s": ratio("verify", "samples_per_s"),
                                     "verify_peak_rss": ratio("verify", "peak_rss_mb"),
                                     "loader_samples_per_s": ratio("loader", "samples_per_s"),
                                     "loader_peak_rss": ratio("loader", "peak_rss_mb")}}

