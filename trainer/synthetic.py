"""Small synthetic shard folders for tests and benchmarks, written through pipeline.contract exactly as
`cli.py preprocess` would lay them out, without importing the pipeline's heavy modules (faiss, numba).

Images are smooth random colour fields (a few random colours, bicubically upsampled) so that every pixel
has a real ab value and the soft targets are computed honestly (brute-force nearest bins, Gaussian weights).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline import contract


def gamut_centers(grid: float = 10.0) -> np.ndarray:
    """Centres (Q, 2) float32 of the grid cells that some 8-bit sRGB colour falls in (a 64^3 subsample)."""
    v = np.linspace(0, 1, 64, dtype=np.float32)
    rgb = np.stack(np.meshgrid(v, v, v, indexing="ij"), -1).reshape(-1, 1, 3)
    ab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3)[:, 1:]
    cells = np.unique(np.round(ab / grid).astype(np.int64), axis=0)
    return (cells * grid).astype(np.float32)


def soft_encode(ab: np.ndarray, centers: np.ndarray, k: int, sigma: float = 5.0, chunk: int = 1 << 16):
    """ab (P, 2) -> idx (P, k) uint16 nearest first, w (P, k) float16 Gaussian weights summing to 1.
    Brute force over all bins, `chunk` pixels at a time so the (chunk, Q) distance matrix stays small."""
    if len(ab) > chunk:
        parts = [soft_encode(ab[i:i + chunk], centers, k, sigma, chunk) for i in range(0, len(ab), chunk)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    ab = ab.astype(np.float32)
    d2 = (ab ** 2).sum(1, keepdims=True) - 2 * ab @ centers.T + (centers ** 2).sum(1)     # (P, Q)
    idx = np.argpartition(d2, k - 1, axis=1)[:, :k]
    dk = np.take_along_axis(d2, idx, 1)
    order = np.argsort(dk, 1)
    idx, dk = np.take_along_axis(idx, order, 1), np.take_along_axis(dk, order, 1)
    w = np.exp(-(dk - dk[:, :1]) / (2 * sigma ** 2))          # shift by the nearest: same ratios, no underflow
    return idx.astype(np.uint16), (w / w.sum(1, keepdims=True)).astype(np.float16)


def make_prior(nearest: np.ndarray, centers: np.ndarray, sigma: float = 5.0, lam: float = 0.5) -> contract.Prior:
    """Prior from the nearest-bin indices of all training target pixels, Gaussian-smoothed in ab space."""
    Q = len(centers)
    counts = np.bincount(nearest.ravel().astype(np.int64), minlength=Q)
    prob = contract.smoothed_prior(counts, centers, sigma)           # the contract's formulas, as preprocess uses
    return contract.Prior(centers=centers, counts=counts, prob=prob, weights=contract.rebalancing_weights(prob, lam),
                          lam=lam, sigma=sigma)


def random_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size, 3) float32 RGB in 0..1: smooth fields of 3x3 random colours."""
    small = rng.random((n, 3, 3, 3), dtype=np.float32)
    return np.stack([np.clip(cv2.resize(s, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1) for s in small])


def write_synthetic_shards(folder, n: int = 64, size: int = 64, knn: int = 5, per_shard: int = 32,
                           test_every: int = 0, seed: int = 0) -> Path:
    """A complete shard folder (manifest, prior, shards) of n synthetic images; every `test_every`-th image
    goes to the test split (0: all train). Returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    centers = gamut_centers()
    T = size // contract.TARGET_STRIDE
    shards, nearest = [], []
    for split in ("train", "test"):
        ids = [i for i in range(n) if (test_every and i % test_every == 0) == (split == "test")]
        for s0 in range(0, len(ids), per_shard):
            chunk = ids[s0:s0 + per_shard]
            lab = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2LAB) for im in random_images(len(chunk), size, rng)])
            L = contract.l_to_uint8(lab[..., 0])                                             # (N, S, S)
            ab = lab[..., 1:].reshape(len(chunk), T, 4, T, 4, 2).mean((2, 4)).astype(np.float16)  # (N, T, T, 2)
            idx, w = soft_encode(ab.reshape(-1, 2), centers, knn)           # encode what is stored: float16 ab
            to_nchw = lambda a: np.ascontiguousarray(a.reshape(len(chunk), T, T, -1).transpose(0, 3, 1, 2))
            name = f"{split}-{len(shards):05d}.h5"
            contract.write_shard(folder / name, L, to_nchw(ab), to_nchw(idx), to_nchw(w),
                                 [f"synthetic/{i:06d}.png" for i in chunk],
                                 attrs={"split": split, "config": {"size": size, "knn": knn, "sigma": 5.0}})
            shards.append({"file": name, "split": split, "count": len(chunk)})
            if split == "train":
                nearest.append(idx[:, 0])
    prior = make_prior(np.concatenate(nearest) if nearest else np.zeros(0, np.int64), centers)
    prior.save(folder / contract.PRIOR)
    contract.write_manifest(folder, {
        "dataset": "synthetic", "root": "", "config": {"size": size, "knn": knn, "sigma": 5.0, "seed": seed},
        "shards": shards, "skipped": [], "counts": {"seen": n, "written": n, "skipped": 0}})
    return folder
