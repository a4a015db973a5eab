"""On-disk format of a shard folder (DESIGN.md, "Data contract").

The only pipeline module that trainer/ imports for shards, so it needs nothing beyond numpy, h5py and the
standard library. A folder holds `manifest.json`, `prior.npz` and shard files `*.h5` with the datasets

    L       uint8   (N, S, S)            L* = value * L_SCALE
    ab      float16 (N, 2, S/4, S/4)     ground-truth ab at target resolution (area-averaged)
    nn_idx  uint16  (N, K, S/4, S/4)     indices into prior.centers, nearest first
    nn_w    float16 (N, K, S/4, S/4)     Gaussian soft-encoding weights, summing to 1 over K
    key     utf-8   (N,)                 source path relative to the dataset root

Format 2 stores the same arrays, bit for bit, through a lossless HDF5 filter chosen by name from STORAGE (the
shard's attrs["storage"]); format 1 stored them uncompressed and still reads. Compression is invisible to a
reader: h5py decompresses each chunk. Only the zstd and blosc options need the hdf5plugin package, which is
imported when a shard that uses one is written or opened, so the built-in default keeps this module on numpy
and h5py alone.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)       # 1: uncompressed (no attrs["storage"]); 2: a STORAGE filter per dataset
L_SCALE = 100.0 / 255.0          # stored uint8 L -> L*; writer and reader must agree, so it lives here
TARGET_STRIDE = 4                # targets are at 1/4 of the input side
MANIFEST = "manifest.json"
PRIOR = "prior.npz"
DATASETS = ("L", "ab", "nn_idx", "nn_w", "key")
ARRAYS = DATASETS[:4]

# Lossless filters per array (h5py create_dataset keywords), by name; docs/benchmarks.md, "Shard storage", has
# bytes per sample, loader and write cost of each (tools/storage_options.py). shuffle groups the bytes of each
# 16-bit value, so the near-constant high bytes of nn_idx (< Q) and of float16 values compress.
_GZIP1 = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
_LZF = {"compression": "lzf", "shuffle": True}
_PLUGIN = {"zstd": ("Zstd", {"clevel": 1}), "blosc-lz4": ("Blosc", {"cname": "lz4", "clevel": 5, "shuffle": 1}),
           "blosc-zstd": ("Blosc", {"cname": "zstd", "clevel": 1, "shuffle": 1})}
STORAGE: dict[str, dict[str, dict]] = {
    "none": {a: {} for a in ARRAYS},                         # format 1's layout
    "lzf": {a: _LZF for a in ARRAYS},
    "gzip": {a: _GZIP1 for a in ARRAYS},
    "gzip-targets": {"L": {}, **{a: _GZIP1 for a in ARRAYS[1:]}},
    "lzf-targets": {"L": {}, **{a: _LZF for a in ARRAYS[1:]}},
    **{name: {a: {"plugin": name} for a in ARRAYS} for name in _PLUGIN},
    "zstd-targets": {"L": {}, **{a: {"plugin": "zstd"} for a in ARRAYS[1:]}},
    "blosc-mixed": {"L": {"plugin": "blosc-lz4"}, **{a: {"plugin": "blosc-zstd"} for a in ARRAYS[1:]}},
}
DEFAULT_STORAGE = "zstd-targets"  # the smallest whose loader keeps >= 4,000 samples/s with 2 workers here


_UMASK = os.umask(0)
os.umask(_UMASK)                           # read once: os.umask can only be read by setting it


class ShardFormatError(ValueError):
    """A shard folder or file that does not follow this contract (missing, truncated, other version)."""


@contextlib.contextmanager
def atomic_write(path, suffix: str = ".tmp"):
    """Yield a temporary path beside `path`; on success fsync and rename it over `path`, else remove it.
    A reader therefore sees either the old complete file or the new complete one, never a partial one.
    `suffix` ends the temporary name (writers that pick the format by extension, such as cv2.imwrite, need
    the real one at its end)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; shards are shared, like any file we write
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
    """L* -> stored uint8: round(L* / L_SCALE), half to even, saturated (float32 multiply, as OpenCV's
    convertScaleAbs does it, so that the pipeline's fast path gives the same bytes)."""
    return np.clip(np.rint(np.asarray(L, np.float32) * np.float32(1 / L_SCALE)), 0, 255).astype(np.uint8)


def uint8_to_l(u: np.ndarray) -> np.ndarray:
    return np.asarray(u, np.float32) * np.float32(L_SCALE)


def _filters(storage: str, array: str) -> dict:
    """h5py keywords of `array`'s filter under a STORAGE option; registers hdf5plugin's filters if it needs them."""
    if storage not in STORAGE:
        raise ValueError(f"unknown shard storage {storage!r}; known: {sorted(STORAGE)}")
    spec = STORAGE[storage][array]
    if "plugin" not in spec:
        return spec
    import hdf5plugin                                          # registers zstd and blosc with HDF5
    cls, kwargs = _PLUGIN[spec["plugin"]]
    return {**getattr(hdf5plugin, cls)(**kwargs), "shuffle": cls != "Blosc"}   # blosc shuffles by itself


def write_shard(path, L, ab, nn_idx, nn_w, keys, attrs: dict | None = None, storage: str = DEFAULT_STORAGE) -> None:
    """Write one shard atomically, one HDF5 chunk per sample (random access reads one chunk per array)
    with fletcher32 checksums so that a flipped bit is an error on read, not a silently wrong target, each
    array through `storage`'s lossless filter (STORAGE).
    The file is built in memory and written with plain file I/O: HDF5 reports a full disk from inside its
    close as a RuntimeError and leaves a broken handle that crashes the interpreter at exit, whereas a
    Python write raises a clean OSError (ENOSPC) and the temporary file is removed."""
    N, S = L.shape[0], L.shape[1]
    T, K = S // TARGET_STRIDE, nn_idx.shape[1]
    assert L.shape == (N, S, S) and L.dtype == np.uint8, (L.shape, L.dtype)
    assert ab.shape == (N, 2, T, T) and ab.dtype == np.float16, (ab.shape, ab.dtype)
    assert nn_idx.shape == (N, K, T, T) and nn_idx.dtype == np.uint16, (nn_idx.shape, nn_idx.dtype)
    assert nn_w.shape == nn_idx.shape and nn_w.dtype == np.float16, (nn_w.shape, nn_w.dtype)
    assert len(keys) == N
    buf = io.BytesIO()
    with h5py.File(buf, "w") as h:
        for name, arr in (("L", L), ("ab", ab), ("nn_idx", nn_idx), ("nn_w", nn_w)):
            filters = _filters(storage, name) if N else {}
            h.create_dataset(name, data=arr, chunks=(1, *arr.shape[1:]) if N else None, fletcher32=bool(N),
                             **filters)
        h.create_dataset("key", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
        h.attrs["format_version"] = FORMAT_VERSION
        h.attrs["storage"] = storage
        h.attrs["count"] = N
        for k, v in (attrs or {}).items():
            h.attrs[k] = v if isinstance(v, (str, int, float, bool, np.number)) else json.dumps(v)
    with atomic_write(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def _open_lean(path: Path) -> h5py.File:
    """Read-only HDF5 handle with no chunk cache and a small metadata cache. A loader worker keeps every shard it
    has read open, so what one handle holds is what grows with the dataset (bench scale): each sample is one
    chunk, read once per epoch, so HDF5's default 1 MiB chunk cache per dataset only holds dead chunks (~2.5 MB
    a shard), and its metadata cache starts at 2 MiB where a shard's index needs a few KiB (~1.0 -> ~0.6 MB)."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    mdc_nelmts, _, _, w0 = fapl.get_cache()
    fapl.set_cache(mdc_nelmts, 0, 0, w0)
    mdc = fapl.get_mdc_config()
    mdc.set_initial_size, mdc.initial_size = True, 32 * 1024
    mdc.min_size, mdc.max_size = 16 * 1024, 64 * 1024
    fapl.set_mdc_config(mdc)
    return h5py.File(h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=fapl))


class Shard:
    """One open shard file. Open once per process (h5py handles must not cross a fork) and index it."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.h5 = _open_lean(self.path)
        except OSError as e:
            raise ShardFormatError(f"{self.path}: not a readable HDF5 shard ({e})") from e
        version = self.h5.attrs.get("format_version")
        missing = [d for d in DATASETS if d not in self.h5]
        self.storage = str(self.h5.attrs.get("storage", "none"))
        if version not in READABLE_VERSIONS or missing or self.storage not in STORAGE:
            self.h5.close()
            raise ShardFormatError(f"{self.path}: format version {version} (this colorfast reads "
                                   f"{', '.join(map(str, READABLE_VERSIONS))}), storage {self.storage!r}, "
                                   f"missing datasets {missing}; preprocess again")
        for name in ARRAYS:
            _filters(self.storage, name)                       # a plugin filter must be registered before reads
        self.L, self.ab, self.nn_idx, self.nn_w = (self.h5[d] for d in ARRAYS)
        self._spaces = None

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

    def sample(self, i: int) -> tuple[np.ndarray, ...]:
        """(L, ab, nn_idx, nn_w) of sample 0 <= i < len, whole: one chunk read per array through h5py's low-level
        API, which skips the selection parsing of ds[i] (~25% of a loader's read of a 256 px sample). Checksums
        and filters apply as for any read: a damaged chunk raises OSError."""
        if self._spaces is None:              # per dataset: id, file space (re-selected per read), memory space
            self._spaces = [(d.id, d.id.get_space(), h5py.h5s.create_simple(d.shape[1:]), d.shape[1:], d.dtype)
                            for d in (self.L, self.ab, self.nn_idx, self.nn_w)]
        out = []
        for dsid, fspace, mspace, shape, dtype in self._spaces:
            fspace.select_hyperslab((i, *(0,) * len(shape)), (1, *shape))
            arr = np.empty(shape, dtype)
            dsid.read(mspace, fspace, arr)
            out.append(arr)
        return tuple(out)

    def close(self) -> None:
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_shard(path) -> Shard:
    return Shard(path)


def smoothed_prior(counts: np.ndarray, centers: np.ndarray, sigma: float) -> np.ndarray:
    """counts (Q,) -> prob (Q,) float64 summing to 1: the nearest-bin histogram smoothed by a Gaussian of `sigma`
    ab units over the bin centres (Q, 2). No counts at all gives the uniform distribution. Part of the contract,
    like the weights: the pipeline builds prior.npz with it and verification recomputes it."""
    counts = np.asarray(counts, np.float64)
    if counts.sum() <= 0:
        return np.full(len(counts), 1.0 / len(counts))
    c = np.asarray(centers, np.float64)
    d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)                   # (Q, Q) squared ab distances
    prob = np.exp(-d2 / (2 * sigma ** 2)) @ (counts / counts.sum())
    return prob / prob.sum()


def rebalancing_weights(prob: np.ndarray, lam: float) -> np.ndarray:
    """prob (Q,) -> weights (Q,) = ((1 - lam) prob + lam / Q)^-1, scaled so that sum(prob * weights) = 1: rare
    colours weigh more, common ones less. Part of the contract: the pipeline writes it, verification checks it."""
    if not 0 <= lam <= 1:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    w = 1.0 / ((1 - lam) * prob + lam / len(prob))
    return w / (prob * w).sum()


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
        """Read prior.npz. A missing or damaged file (a flipped byte fails the zip's CRC-32 as BadZipFile, a cut
        one as EOFError or ValueError) raises ShardFormatError naming the file and what to do."""
        try:
            with np.load(path) as z:
                return cls(centers=z["centers"].astype(np.float32), counts=z["counts"], prob=z["prob"],
                           weights=z["weights"], lam=float(z["lam"]), sigma=float(z["sigma"]))
        except FileNotFoundError as e:
            raise ShardFormatError(f"{path}: no prior here; run `cli.py preprocess` first") from e
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise ShardFormatError(f"{path}: not a readable prior ({type(e).__name__}: {e}); rerun the "
                                   "`cli.py preprocess` command that built this folder: it rebuilds prior.npz "
                                   "from the shards") from e


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ShardFormatError(f"{path}: no readable manifest ({e}); run `cli.py preprocess` first") from e
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ShardFormatError(f"{path}: format version {manifest.get('format_version')}; this colorfast reads "
                               f"versions {', '.join(map(str, READABLE_VERSIONS))}; preprocess again")
    return manifest


def write_manifest(folder, manifest: dict) -> None:
    with atomic_write(Path(folder) / MANIFEST) as tmp:
        tmp.write_text(json.dumps({"format_version": FORMAT_VERSION, **manifest}, indent=1))


def shard_paths(folder, split: str | None = None) -> list[Path]:
    """Shard files of a folder, in manifest order; `split` ('train', 'test') keeps one split."""
    manifest = read_manifest(folder)
    return [Path(folder) / s["file"] for s in manifest["shards"] if split is None or s["split"] == split]


# ---- verification: is a folder safe to train from? -------------------------------------------------------
VERIFY_BLOCK = 64                # samples per read while verifying: one fletcher32-checked chunk each, ~10 MB at S=256
PRIOR_TOL = 1e-4                 # of prob's peak. Another float path (trainer/synthetic.py's) differs by ~3e-9; the
                                 # raw histogram by 0.54, and sigma 4.5 instead of 5 by 0.16 (the sample's prior)
WEIGHT_SUM_TOL = 2e-3            # float16 weights in [0, 1] round by <= 2^-12 each, so K of them sum to 1 +- ~1e-3


def verify_folder(folder, deep: bool = True, progress: bool = False) -> list[str]:
    """Check a shard folder against its manifest and this contract; return the problems, each naming the file.
    An empty list means the folder is safe to train from. Checked: the manifest is readable and its counts
    reconcile (seen = written + skipped, every shard's count = its file's length), every listed shard opens
    with the contract's datasets, shapes and dtypes, no unlisted *.h5 sits in the folder, keys are unique,
    and prior.npz is self-consistent. With `deep`, every chunk of every dataset is read, which makes HDF5
    check its fletcher32 checksum, and the values are checked: finite ab, nn_w >= 0 summing to 1 over K,
    nn_idx < Q, and the prior's counts equal the histogram of the train shards' nearest bins (nn_idx[:, 0]).
    Reads stream VERIFY_BLOCK samples at a time, so memory stays flat however big the folder."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ShardFormatError as e:
        return [str(e)]
    problems = _verify_manifest(folder, manifest)
    prior_path = folder / PRIOR
    try:
        prior = Prior.load(prior_path)
        problems += [f"{prior_path}: {p}" for p in _prior_problems(prior)]
    except ShardFormatError as e:
        prior = None
        problems.append(str(e))
    Q = prior.Q if prior is not None else None
    config = manifest.get("config") or {}
    entries = [s for s in manifest.get("shards", []) if isinstance(s, dict) and "file" in s]
    if progress:
        from tqdm import tqdm                  # optional: only the CLI asks for a bar
        entries = tqdm(entries, desc="verify", unit="shard")
    seen_keys: dict[str, str] = {}
    train_counts = np.zeros(Q or 0, np.int64)  # histogram of nn_idx[:, 0] over the train shards, as the prior's
    counts_complete = deep and prior is not None and prior.counts.shape == (Q,)
    geometry = None                            # (S, K) of the first shard; all shards must agree
    for entry in entries:
        path = folder / entry["file"]
        if not path.is_file():
            problems.append(f"{path}: listed in {MANIFEST} but missing")
            counts_complete = False
            continue
        try:
            shard = Shard(path)
        except ShardFormatError as e:
            problems.append(str(e))
            counts_complete = False
            continue
        with shard:
            shard_problems = _shard_layout_problems(shard, entry, config)
            if not shard_problems:
                geometry = geometry or (shard.size, shard.knn)
                if (shard.size, shard.knn) != geometry:
                    shard_problems.append(f"size {shard.size} and knn {shard.knn} differ from the folder's "
                                          f"first shard ({geometry[0]}, {geometry[1]})")
            keys, key_problem = _read_keys(shard)
            shard_problems += [key_problem] if key_problem else []
            for k in keys:
                if k in seen_keys:
                    shard_problems.append(f"key {k!r} also stored in {seen_keys[k]}")
                    break
                seen_keys[k] = entry["file"]
            if deep and not shard_problems:
                is_train = entry.get("split") == "train" and counts_complete
                shard_problems += _shard_data_problems(shard, keys, Q, train_counts if is_train else None)
        problems += [f"{path}: {p}" for p in shard_problems]
        counts_complete = counts_complete and not shard_problems
    if counts_complete and not np.array_equal(train_counts, prior.counts):
        problems.append(f"{prior_path}: counts differ from the nearest bins (nn_idx[:, 0]) of the train shards "
                        f"in {int((train_counts != prior.counts).sum())} of {Q} bins (a prior from another run?)")
    return problems


def require_verified(folder, deep: bool = True) -> None:
    """Raise ShardFormatError listing every problem of verify_folder(folder); return quietly on a good folder."""
    problems = verify_folder(folder, deep=deep)
    if problems:
        raise ShardFormatError(f"{folder} failed verification ({len(problems)} problem(s)). "
                               f"{repair_advice(folder, problems)}:\n  " + "\n  ".join(problems))


def repair_advice(folder, problems: list[str]) -> str:
    """What to do about verify_folder(folder)'s problems, matched to the files they name (each problem starts
    with its file's path): a folder without a readable manifest is not complete; damaged shards must be deleted
    before a rerun (a rerun keeps every shard whose attrs match); missing shards, the prior and the manifest are
    rebuilt by the rerun; files the manifest does not list are the user's to move."""
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except ShardFormatError:
        return (f"Not a complete shard folder (no readable {MANIFEST}): rerun the `cli.py preprocess` "
                "command that writes into it (it keeps the shards already complete), or preprocess into a fresh "
                "folder")
    names = lambda path: any(p.startswith(f"{path}:") for p in problems)
    listed = {folder / s["file"] for s in manifest.get("shards") or [] if isinstance(s, dict) and "file" in s}
    damaged = sorted(p for p in listed if p.is_file() and names(p))
    missing = sorted(p for p in listed if not p.is_file())
    strays = sorted(p for p in folder.rglob("*.h5") if p not in listed and names(p))
    advice = []
    if damaged or missing or names(folder / MANIFEST) or names(folder / PRIOR):
        rebuilt = ["those shards, "] * bool(damaged) + ["the missing shards, "] * bool(missing)
        advice.append(("Delete the shard files named above, then rerun" if damaged else "Rerun")
                      + " the same `cli.py preprocess` command (it keeps the complete shards and rebuilds "
                      + "".join(rebuilt) + f"{PRIOR} and {MANIFEST}), or preprocess into a fresh folder")
    if strays:
        advice.append(f"{'m' if advice else 'M'}ove or delete the {len(strays)} *.h5 file(s) that {MANIFEST} "
                      "does not list")
    return "; ".join(advice) or "Preprocess into a fresh folder"


def describe_folder(folder) -> str:
    """One line for a folder that passed verify_folder: samples per split, skips, Q."""
    manifest = read_manifest(folder)
    splits: dict[str, int] = {}
    for s in manifest["shards"]:
        splits[s["split"]] = splits.get(s["split"], 0) + s["count"]
    return (f"{sum(splits.values())} samples in {len(manifest['shards'])} shards "
            f"({', '.join(f'{k} {v}' for k, v in sorted(splits.items()))}), "
            f"{manifest['counts']['skipped']} inputs skipped, Q={Prior.load(Path(folder) / PRIOR).Q}")


def _verify_manifest(folder: Path, manifest: dict) -> list[str]:
    """Counts that must reconcile, and files on disk that the manifest does not list."""
    where = folder / MANIFEST
    problems = []
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not all(isinstance(s, dict) and "file" in s for s in shards):
        return [f"{where}: 'shards' must be a list of {{file, split, count}}"]
    counts = manifest.get("counts") or {}
    seen, written, skipped = (counts.get(k) for k in ("seen", "written", "skipped"))
    if not all(isinstance(c, int) for c in (seen, written, skipped)):
        problems.append(f"{where}: counts {counts} lack integer seen/written/skipped")
    else:
        if seen != written + skipped:
            problems.append(f"{where}: counts do not reconcile: seen {seen} != written {written} "
                            f"+ skipped {skipped}")
        listed = sum(int(s.get("count", -1)) for s in shards)
        if listed != written:
            problems.append(f"{where}: shards list {listed} samples in all but counts.written is {written}")
        if isinstance(manifest.get("skipped"), list) and len(manifest["skipped"]) != skipped:
            problems.append(f"{where}: {len(manifest['skipped'])} skipped inputs listed but counts.skipped "
                            f"is {skipped}")
    names = [s["file"] for s in shards]
    if len(set(names)) != len(names):
        problems.append(f"{where}: a shard file is listed twice")
    for stray in sorted(set(folder.rglob("*.h5")) - {folder / n for n in names}):
        problems.append(f"{stray}: *.h5 file not listed in {MANIFEST} (left from another run?); "
                        "delete it or preprocess again")
    return problems


def _prior_problems(p: Prior) -> list[str]:
    Q = p.Q
    if p.centers.shape != (Q, 2) or p.counts.shape != (Q,) or p.prob.shape != (Q,) or p.weights.shape != (Q,):
        return [f"shapes centers {p.centers.shape}, counts {p.counts.shape}, prob {p.prob.shape}, "
                f"weights {p.weights.shape} do not agree on Q = {Q}"]
    if not (np.all(np.isfinite(p.prob)) and np.all(np.isfinite(p.weights)) and np.all(p.prob >= 0)):
        return ["prob or weights hold negative or non-finite values"]
    problems = []
    if np.any(p.counts < 0):
        problems.append("negative counts")
    if abs(p.prob.sum() - 1) > 1e-6:
        problems.append(f"prob sums to {p.prob.sum():.8f}, not 1")
    if abs((p.prob * p.weights).sum() - 1) > 1e-5:
        problems.append(f"sum(prob * weights) = {(p.prob * p.weights).sum():.8f}, not 1")
    if not 0 <= p.lam <= 1:
        problems.append(f"lam = {p.lam} outside [0, 1]")
    else:
        ref = rebalancing_weights(p.prob, p.lam)
        err = np.abs(ref - p.weights).max() / ref.max()
        if err > 1e-4:
            problems.append(f"weights differ from ((1 - lam) prob + lam / Q)^-1 normalised by {err:.2e} "
                            "(relative)")
    if not (np.isfinite(p.sigma) and p.sigma > 0):
        problems.append(f"sigma = {p.sigma} is not a positive width")
    elif not np.any(p.counts < 0):
        ref = smoothed_prior(p.counts, p.centers, p.sigma)
        err = np.abs(ref - p.prob).max() / ref.max()
        if err > PRIOR_TOL:
            problems.append(f"prob differs from counts smoothed by a Gaussian of sigma {p.sigma:g} by {err:.2e} "
                            "(relative to its peak): not the smoothed prior of these counts")
    return problems


def _shard_layout_problems(shard: Shard, entry: dict, config: dict) -> list[str]:
    """Shapes, dtypes and counts from metadata alone (no data read)."""
    N, S, K = len(shard), shard.size, shard.knn
    T = S // TARGET_STRIDE
    expected = {"L": ((N, S, S), np.uint8), "ab": ((N, 2, T, T), np.float16),
                "nn_idx": ((N, K, T, T), np.uint16), "nn_w": ((N, K, T, T), np.float16)}
    problems = [f"{name} is {ds.dtype} {ds.shape}, expected {np.dtype(dtype)} {shape}"
                for name, (shape, dtype) in expected.items()
                for ds in [shard.h5[name]] if ds.shape != shape or ds.dtype != dtype]
    if shard.h5["key"].shape != (N,):
        problems.append(f"key has shape {shard.h5['key'].shape}, expected ({N},)")
    if entry.get("count") != N:
        problems.append(f"holds {N} samples but {MANIFEST} lists {entry.get('count')}")
    count = shard.h5.attrs.get("count")
    if count is not None and int(count) != N:
        problems.append(f"attrs count {count} != {N} samples stored")
    for name, value in (("size", S), ("knn", K)):
        if name in config and config[name] != value:
            problems.append(f"{name} {value} differs from the manifest config's {config[name]}")
    for name in ("L", "ab", "nn_idx", "nn_w"):
        if N and not shard.h5[name].fletcher32:
            problems.append(f"{name} carries no fletcher32 checksum")
    return problems


def _read_keys(shard: Shard) -> tuple[list[str], str | None]:
    try:
        return shard.keys(), None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return [], f"key unreadable ({type(e).__name__}: {e})"


def _shard_data_problems(shard: Shard, keys: list[str], Q: int | None, counts: np.ndarray | None = None) -> list[str]:
    """Read every chunk (checksums) and check values, VERIFY_BLOCK samples at a time; first problem per dataset.
    `counts` (Q,), if given, accumulates the histogram of the nearest bins nn_idx[:, 0]."""
    problems: dict[str, str] = {}
    for lo in range(0, len(shard), VERIFY_BLOCK):
        hi = min(lo + VERIFY_BLOCK, len(shard))
        block = {}
        for name in ("L", "ab", "nn_idx", "nn_w"):
            if name in problems:
                continue
            try:
                block[name] = shard.h5[name][lo:hi]
            except OSError as e:                 # fletcher32 mismatch, or a chunk that is not there
                i = _first_bad_sample(shard.h5[name], lo, hi)
                problems[name] = (f"{name} sample {i} (key {keys[i] if i < len(keys) else '?'!r}) unreadable: "
                                  f"checksum mismatch or damaged chunk ({e})")
        if "ab" in block and not np.all(np.isfinite(block["ab"])):
            problems.setdefault("ab values", f"ab holds non-finite values in samples {lo}..{hi - 1}")
        if "nn_w" in block:
            w = block["nn_w"].astype(np.float32)
            err = np.abs(w.sum(1) - 1).max() if w.size else 0.0
            if not np.all(np.isfinite(w)) or (w.size and w.min() < 0) or err > WEIGHT_SUM_TOL:
                problems.setdefault("nn_w values", f"nn_w in samples {lo}..{hi - 1} is negative, non-finite or "
                                                   f"does not sum to 1 over K (max error {err:.4f})")
        if "nn_idx" in block and Q is not None and block["nn_idx"].size and block["nn_idx"].max() >= Q:
            problems.setdefault("nn_idx values", f"nn_idx in samples {lo}..{hi - 1} reaches "
                                                 f"{block['nn_idx'].max()}, but the prior has Q = {Q} bins")
        elif "nn_idx" in block and counts is not None:
            counts += np.bincount(block["nn_idx"][:, 0].ravel(), minlength=len(counts))
    return list(problems.values())


def _first_bad_sample(ds, lo: int, hi: int) -> int:
    """Index of the first sample in [lo, hi) whose chunk fails to read (one chunk per sample)."""
    for i in range(lo, hi):
        try:
            ds[i]
        except OSError:
            return i
    return lo
