"""What K nearest bins keep of a target pixel's soft encoding, and what K costs: the figures behind `--knn`.

    python tools/knn_mass.py [--root DIR] [--k 5 10] [--sigma 5] [--repeat 20]

Over every target pixel of real photos (the bundled sample set, scikit-image's colour photos, or every image
under --root), as `preprocess` stores them (4x4 area-mean ab, float16): the full Gaussian kernel
exp(-d^2 / 2 sigma^2) over all of our computed in-gamut bins, and the share of its mass that lies beyond the
K nearest bins (what a K-truncated, renormalised target drops), with how far that moves the target's mean ab.
Then the cost of each K: shard bytes per sample and preprocessing time per image of a real `preprocess` run
(one process, the default storage), and the soft encoding alone per image. Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import preprocess                              # noqa: E402
from pipeline.bins import in_gamut_centers                    # noqa: E402
from pipeline.config import PrepConfig                        # noqa: E402
from pipeline.datasets import list_dataset                    # noqa: E402


def stored_targets(cfg: PrepConfig) -> list[np.ndarray]:
    """The stored ab (2, T, T) float16 of every usable photo of cfg's dataset (grayscale and unreadable skipped)."""
    listing = list_dataset(cfg.dataset, cfg.root)
    out = []
    for key, _ in listing.items:
        res = preprocess.encode_image(listing.root / key, cfg)
        if not isinstance(res, str):
            out.append(res[1])
    return out


def truncation(ab: np.ndarray, centers: np.ndarray, ks, sigma: float) -> dict:
    """ab (P, 2) -> per pixel, for each K: the kernel mass beyond the K nearest bins (share of the total over
    all bins) and |mean ab of the K-truncated target - mean ab of the full kernel| in ab units."""
    d2 = ((ab[:, None, :] - centers[None]) ** 2).sum(-1)                       # (P, Q)
    order = np.argsort(d2, axis=1, kind="stable")
    d2s = np.take_along_axis(d2, order, 1)
    w = np.exp(-(d2s - d2s[:, :1]) / (2 * sigma ** 2))                         # relative to the nearest: no underflow
    total = w.sum(1)
    full_mean = (w[..., None] * centers[order]).sum(1) / total[:, None]
    res = {}
    for k in ks:
        wk = w[:, :k]
        mean_k = (wk[..., None] * centers[order[:, :k]]).sum(1) / wk.sum(1, keepdims=True)
        res[k] = {"mass": 1 - wk.sum(1) / total, "shift": np.linalg.norm(mean_k - full_mean, axis=1)}
    return res


def describe(x: np.ndarray) -> str:
    return f"mean {x.mean():.4f}, median {np.median(x):.4f}, p95 {np.percentile(x, 95):.4f}, max {x.max():.4f}"


def preprocess_cost(cfg: PrepConfig, repeat: int) -> dict:
    """A real one-process `preprocess` run of cfg (after one warm-up), and the soft encoding alone per image."""
    tmp = Path(tempfile.mkdtemp(prefix="knn_mass_"))
    try:
        runs = []
        for i in range(2):                                    # the first builds the encoder's table and warms numba
            out = tmp / f"run{i}"
            res = preprocess.run(PrepConfig(**{**cfg.as_dict(), "out_dir": str(out), "jobs": 1}), progress=False)
            runs.append(res.seconds / res.seen)
        nbytes = sum(p.stat().st_size for p in out.glob("*.h5"))
        ab = np.stack(stored_targets(cfg))
        enc = preprocess._encoder(cfg.knn, cfg.sigma)
        enc.encode(ab[:1])
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            enc.encode(ab)
            times.append((time.perf_counter() - t0) / len(ab))
        return {"bytes_per_sample": nbytes / res.written, "s_per_image": runs[1], "encode_s": statistics.median(times),
                "samples": res.written}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="", help="a folder of photos (default: the bundled sample set)")
    ap.add_argument("--k", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--sigma", type=float, default=PrepConfig.sigma)
    ap.add_argument("--repeat", type=int, default=20, help="timed soft encodings of the whole set, per K")
    args = ap.parse_args()
    cfg = PrepConfig(dataset="folder" if args.root else "sample", root=args.root, sigma=args.sigma)
    ab = np.concatenate([a.astype(np.float64).reshape(2, -1).T for a in stored_targets(cfg)])   # (P, 2)
    centers = in_gamut_centers().astype(np.float64)
    print(f"{cfg.dataset} {args.root}: {len(ab)} target pixels, Q = {len(centers)} bins, sigma {args.sigma}")
    parts = [truncation(ab[i:i + 8192], centers, args.k, args.sigma) for i in range(0, len(ab), 8192)]
    for k in args.k:
        mass = np.concatenate([p[k]["mass"] for p in parts])
        shift = np.concatenate([p[k]["shift"] for p in parts])
        print(f"K = {k:2d}: kernel mass beyond the {k} nearest bins: {describe(mass)}")
        print(f"        |mean ab of the K-target - of the full kernel| (ab units): {describe(shift)}")
    for k in args.k:
        c = preprocess_cost(PrepConfig(**{**cfg.as_dict(), "knn": k}), args.repeat)
        print(f"K = {k:2d}: shard bytes per sample {c['bytes_per_sample'] / 1024:.1f} KiB ({c['samples']} samples), "
              f"preprocess {c['s_per_image'] * 1e3:.1f} ms/image (1 process), soft encoding alone "
              f"{c['encode_s'] * 1e3:.2f} ms/image")


if __name__ == "__main__":
    main()
