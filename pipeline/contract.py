"""On-disk format of a shard folder (DESIGN.md, "Data contract").

The only pipeline module that trainer/ imports for shards, so it needs nothing beyond numpy, h5py and the
standard library. A folder holds `manifest.json`, `prior.npz` and shard files `*.h5` with the datasets

    L       uint8   (N, S, S)            L* = value * L_SCALE
    ab      float16 (N, 2, S/4, S/4)     ground-truth ab at target resolution (area-averaged)
    nn_idx  uint16  (N, K, S/4, S/4)     indices into prior.centers, nearest first
    nn_w    float16 (N, K, S/4, S/4)     Gaussian soft-encoding weights, summing to 1 over K
    key     utf-8   (N,)                 source path relative to the dataset root
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 1
L_SCALE = 100.0 / 255.0          # stored uint8 L -> L*; writer and reader must agree, so it lives here
TARGET_STRIDE = 4                # targets are at 1/4 of the input side
MANIFEST = "manifest.json"
PRIOR = "prior.npz"
DATASETS = ("L", "ab", "nn_idx", "nn_w", "key")


class ShardFormatError(ValueError):
    """A shard folder or file that does not follow this contract (missing, truncated, other version)."""


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path beside `path`; on success fsync and rename it over `path`, else remove it.
    A reader therefore sees either the old complete file or the new complete one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def l_to_uint8(L: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(L, np.float32) / L_SCALE), 0, 255).astype(np.uint8)


def uint8_to_l(u: np.ndarray) -> np.ndarray:
    return np.asarray(u, np.float32) * np.float32(L_SCALE)


def write_shard(path, L, ab, nn_idx, nn_w, keys, attrs: dict | None = None) -> None:
    """Write one shard atomically, one HDF5 chunk per sample (random access reads one chunk per array)
    with fletcher32 checksums so that a flipped bit is an error on read, not a silently wrong target."""
    N, S = L.shape[0], L.shape[1]
    T, K = S // TARGET_STRIDE, nn_idx.shape[1]
    assert L.shape == (N, S, S) and L.dtype == np.uint8, (L.shape, L.dtype)
    assert ab.shape == (N, 2, T, T) and ab.dtype == np.float16, (ab.shape, ab.dtype)
    assert nn_idx.shape == (N, K, T, T) and nn_idx.dtype == np.uint16, (nn_idx.shape, nn_idx.dtype)
    assert nn_w.shape == nn_idx.shape and nn_w.dtype == np.float16, (nn_w.shape, nn_w.dtype)
    assert len(keys) == N
    with atomic_write(path) as tmp:
        with h5py.File(tmp, "w") as h:
            for name, arr in (("L", L), ("ab", ab), ("nn_idx", nn_idx), ("nn_w", nn_w)):
                h.create_dataset(name, data=arr, chunks=(1, *arr.shape[1:]) if N else None, fletcher32=bool(N))
            h.create_dataset("key", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
            h.attrs["format_version"] = FORMAT_VERSION
            h.attrs["count"] = N
            for k, v in (attrs or {}).items():
                h.attrs[k] = v if isinstance(v, (str, int, float, bool, np.number)) else json.dumps(v)


class Shard:
    """One open shard file. Open once per process (h5py handles must not cross a fork) and index it."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise ShardFormatError(f"{self.path}: not a readable HDF5 shard ({e})") from e
        version = self.h5.attrs.get("format_version")
        missing = [d for d in DATASETS if d not in self.h5]
        if version != FORMAT_VERSION or missing:
            self.h5.close()
            raise ShardFormatError(f"{self.path}: format version {version} (expected {FORMAT_VERSION}), "
                                   f"missing datasets {missing}")
        self.L, self.ab, self.nn_idx, self.nn_w = (self.h5[d] for d in DATASETS[:4])

    def __len__(self) -> int:
        return self.L.shape[0]

    @property
    def size(self) -> int:
        return self.L.shape[1]

    @property
    def knn(self) -> int:
        return self.nn_idx.shape[1]

    @property
    def attrs(self) -> dict:
        return dict(self.h5.attrs)

    def keys(self) -> list[str]:
        return [k.decode() if isinstance(k, bytes) else str(k) for k in self.h5["key"][:]]

    def read(self, i) -> dict:
        """Arrays of sample i (or a slice), as stored."""
        return {d: getattr(self, d)[i] for d in DATASETS[:4]}

    def close(self) -> None:
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_shard(path) -> Shard:
    return Shard(path)


@dataclass(frozen=True)
class Prior:
    """Empirical class prior over the ab bins and its rebalancing weights (DESIGN.md, "The recipe")."""
    centers: np.ndarray      # (Q, 2) float32, ab bin centres
    counts: np.ndarray       # (Q,) int64, nearest-bin counts over the training split's target pixels
    prob: np.ndarray         # (Q,) float64, smoothed prior, sums to 1
    weights: np.ndarray      # (Q,) float64, ((1 - lam) p + lam / Q)^-1 scaled so that sum(prob * weights) = 1
    lam: float
    sigma: float

    @property
    def Q(self) -> int:
        return len(self.centers)

    def save(self, path) -> None:
        with atomic_write(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, centers=self.centers.astype(np.float32), counts=self.counts.astype(np.int64),
                         prob=self.prob, weights=self.weights, lam=self.lam, sigma=self.sigma)

    @classmethod
    def load(cls, path) -> "Prior":
        try:
            with np.load(path) as z:
                return cls(centers=z["centers"].astype(np.float32), counts=z["counts"], prob=z["prob"],
                           weights=z["weights"], lam=float(z["lam"]), sigma=float(z["sigma"]))
        except (OSError, KeyError, ValueError) as e:
            raise ShardFormatError(f"{path}: not a readable prior ({e})") from e


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardFormatError(f"{path}: no readable manifest ({e}); run `cli.py preprocess` first") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ShardFormatError(f"{path}: format version {manifest.get('format_version')}, "
                               f"expected {FORMAT_VERSION}; preprocess again")
    return manifest


def write_manifest(folder, manifest: dict) -> None:
    with atomic_write(Path(folder) / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=1))


def shard_paths(folder, split: str | None = None) -> list[Path]:
    """Shard files of a folder, in manifest order; `split` ('train', 'test') keeps one split."""
    manifest = read_manifest(folder)
    return [Path(folder) / s["file"] for s in manifest["shards"] if split is None or s["split"] == split]
