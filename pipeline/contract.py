"""On-disk format of a shard folder (DESIGN.md, "Data contract").

The only pipeline module that trainer/ reads shards through (pipeline/verify.py, which checks a folder against
this contract, is the other one it imports), so it needs nothing beyond numpy, h5py and the standard library.
A folder holds `manifest.json`, `prior.npz` and shard files `*.h5` with the datasets

    L       uint8   (N, S, S)            L* = value * L_SCALE
    ab      float16 (N, 2, S/4, S/4)     ground-truth ab at target resolution (area-averaged)
    nn_idx  uint16  (N, K, S/4, S/4)     indices into prior.centers, nearest first
    nn_w    float16 (N, K, S/4, S/4)     Gaussian soft-encoding weights, summing to 1 over K
    key     utf-8   (N,)                 source path relative to the dataset root (pipeline.keys: a name that
                                         is not UTF-8 is escaped, reversibly)

and, in shards written since inputs are recorded, `sources`, a table (compound dtype SOURCE_DTYPE) with one row
per input the shard was made from (every listed key, the skipped ones included, in plan order):

    key               utf-8   the input's key
    size              int64   its bytes (a file's size, an archive member's); -1: not there when written
    mtime_ns          int64   the file's modification time; -1 for an archive member
    digest            utf-8   blake2b-128 (hex) of the bytes that were decoded; "" when they could not be read
    archive           utf-8   absolute path of the tar or zip holding it; "" for a plain file
    archive_size      int64   that archive's size and modification time (its identity); -1 for a file
    archive_mtime_ns  int64
    offset            int64   a tar member's data offset, a zip entry's local header offset; -1 for a file
    crc               int64   a zip entry's CRC-32 (from the central directory); -1 otherwise

A rerun of preprocess compares them with the inputs on disk (pipeline/sources.py) and rewrites a shard whose
inputs changed; `verify --sources` lists such inputs. The table is an addition within format 2: readers that do
not know it ignore it, and shards without it (written before) read as before, their sources unknown (None).

Format 2 stores the same arrays, bit for bit, through a lossless HDF5 filter chosen by name from STORAGE (the
shard's attrs["storage"]); format 1 stored them uncompressed and still reads. Compression is invisible to a
reader: h5py decompresses each chunk. Only the zstd and blosc options need the hdf5plugin package, which is
imported when a shard that uses one is written or opened, so the built-in default keeps this module on numpy
and h5py alone.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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
SOURCES = "sources"
SOURCE_FIELDS = {"key": str, "size": int, "mtime_ns": int, "digest": str, "archive": str, "archive_size": int,
                 "archive_mtime_ns": int, "offset": int, "crc": int}
SOURCE_DTYPE = np.dtype([(name, h5py.string_dtype("utf-8") if kind is str else np.int64)
                         for name, kind in SOURCE_FIELDS.items()])

# Lossless filters per array (h5py create_dataset keywords), by name; docs/benchmarks.md, "Shard storage", has
# bytes per sample, loader and write cost of each. shuffle groups the bytes of each
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


TMP_TAG = "colorfast-"                    # in atomic_write's temporary names, before the writer's PID
_UMASK = os.umask(0)
os.umask(_UMASK)                           # read once: os.umask can only be read by setting it


class Source(NamedTuple):
    """What one input of a shard was made from (one row of the `sources` table); -1 and "" where not applicable."""
    key: str
    size: int = -1
    mtime_ns: int = -1
    digest: str = ""
    archive: str = ""
    archive_size: int = -1
    archive_mtime_ns: int = -1
    offset: int = -1
    crc: int = -1


class ShardFormatError(ValueError):
    """A shard folder or file that does not follow this contract (missing, truncated, other version)."""


@contextlib.contextmanager
def atomic_write(path, suffix: str = ".tmp", before_commit=None):
    """Yield a temporary path beside `path`; on success fsync and rename it over `path`, else remove it.
    A reader therefore sees either the old complete file or the new complete one, never a partial one.
    The temporary is named .NAME.colorfast-PID-RANDOM<suffix>: what a killed write leaves is recognisably ours
    (output_folder.OUR_TMP), and another program's .NAME.something.tmp is never taken for it.
    `suffix` ends the temporary name (writers that pick the format by extension, such as cv2.imwrite, need
    the real one at its end). `before_commit`, if given, runs between the fsync and the rename (a preprocess
    worker checks there that its run still exists)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{TMP_TAG}{os.getpid()}-", suffix=suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)          # mkstemp makes 0600; shards are shared, like any file we write
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if before_commit is not None:
            before_commit()
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


@functools.cache
def register_plugins():
    """hdf5plugin, with its zstd and blosc filters registered in this process: the one place that does it. Its
    import alone skips a filter that HDF5 already finds, and with HDF5_PLUGIN_PATH set to hdf5plugin's folder
    (what README tells plain-h5py readers to do) HDF5 finds the same library loaded as a bare plugin, whose
    calls back into HDF5 are never wired up: blosc's set_local then fails every write ("error during user
    callback"). Registering them again through hdf5plugin (force) replaces those, whether the variable is set
    or not."""
    import hdf5plugin
    if not hdf5plugin.register(("zstd", "blosc"), force=True):
        raise RuntimeError("hdf5plugin could not register its zstd and blosc filters with HDF5")
    return hdf5plugin


def _filters(storage: str, array: str) -> dict:
    """h5py keywords of `array`'s filter under a STORAGE option; registers hdf5plugin's filters if it needs them."""
    if storage not in STORAGE:
        raise ValueError(f"unknown shard storage {storage!r}; known: {sorted(STORAGE)}")
    spec = STORAGE[storage][array]
    if "plugin" not in spec:
        return spec
    hdf5plugin = register_plugins()
    cls, kwargs = _PLUGIN[spec["plugin"]]
    return {**getattr(hdf5plugin, cls)(**kwargs), "shuffle": cls != "Blosc"}   # blosc shuffles by itself


def write_shard(path, L, ab, nn_idx, nn_w, keys, attrs: dict | None = None, storage: str = DEFAULT_STORAGE,
                sources: list[Source] | None = None, before_commit=None) -> None:
    """Write one shard atomically, one HDF5 chunk per sample (random access reads one chunk per array)
    with fletcher32 checksums so that a flipped bit is an error on read, not a silently wrong target, each
    array through `storage`'s lossless filter (STORAGE); `sources`, when given, as the `sources` table.
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
        if sources is not None:
            table = np.empty(len(sources), SOURCE_DTYPE)
            for i, (name, kind) in enumerate(SOURCE_FIELDS.items()):
                # strings as bytes: a key that is not valid UTF-8 (surrogate-escaped) is kept, not an error
                table[name] = [s[i].encode("utf-8", "surrogateescape") if kind is str else s[i] for s in sources]
            h.create_dataset(SOURCES, data=table)
        h.attrs["format_version"] = FORMAT_VERSION
        h.attrs["storage"] = storage
        h.attrs["count"] = N
        for k, v in (attrs or {}).items():
            h.attrs[k] = v if isinstance(v, (str, int, float, bool, np.number)) else json.dumps(v)
    with atomic_write(path, before_commit=before_commit) as tmp:
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

    def sources(self) -> list[Source] | None:
        """What each input of this shard was made from (the `sources` table), or None for a shard written
        before inputs were recorded."""
        return _sources_in(self.h5)

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


def _sources_in(h5: h5py.File) -> list[Source] | None:
    if SOURCES not in h5:
        return None
    if not isinstance(h5[SOURCES], h5py.Dataset) or set(h5[SOURCES].dtype.names or ()) != set(SOURCE_FIELDS):
        raise ShardFormatError(f"{h5.filename}: '{SOURCES}' is not the table of SOURCE_FIELDS")
    table = h5[SOURCES][()]
    columns = [[v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in table[name]]
               if kind is str else table[name].tolist() for name, kind in SOURCE_FIELDS.items()]
    return [Source(*row) for row in zip(*columns)]


def read_sources(path) -> list[Source] | None:
    """The `sources` of the shard file at `path` without opening its arrays (no filter plugin needed), or None for
    a shard written before they were recorded; ShardFormatError when the file cannot be read."""
    try:
        with h5py.File(path, "r") as h:
            return _sources_in(h)
    except ShardFormatError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise ShardFormatError(f"{path}: its recorded sources are unreadable ({e})") from e


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
