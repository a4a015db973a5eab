"""`cli.py preprocess`: images -> Lab -> soft-encoded ab targets -> HDF5 shards, manifest.json and prior.npz.

Deterministic and resumable by construction:
1. list the inputs (pipeline.datasets), sorted by split then key, and cut each split into shards of
   `shard_size` consecutive keys: shard `train-00003.h5` always holds the same inputs, whatever --jobs or
   the backend;
2. each shard is one task: a worker decodes and encodes its inputs and writes the shard atomically
   (contract.write_shard). Its attrs carry everything the final outputs need, so nothing is reprocessed
   later: the inputs' fingerprint, seen/written counts, the skipped inputs with reasons and the exact int64
   nearest-bin counts. A shard whose inputs were all skipped is still written, with zero samples;
3. on a rerun, shard files that are complete and match (same inputs, same encoding config, same bins) are
   kept, unless one of their inputs changed since, which rewrites the shard (pipeline/sources.py: each shard
   records what every input was, size and mtime, archive offsets, a digest of its bytes; a rerun compares by
   stat); killed runs leave only temporary files, which are removed. What else a run would delete or replace
   must be this job's (same dataset, root, encoding and plan options, recorded in every shard's attrs), else
   the run stops before touching anything (OutputConflict); `overwrite` lets it replace another job's files,
   never a file that preprocess did not write;
4. manifest.json and prior.npz are assembled from the shard files alone, in plan order, and the manifest
   is written last: a killed-and-rerun preprocess gives the same shard arrays, the same prior.npz arrays
   and the same manifest (apart from its timestamp) as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import h5py
import numpy as np

from pipeline import contract
from pipeline.archives import read_member
from pipeline.bins import fingerprint, in_gamut_centers
from pipeline.config import PrepConfig
from pipeline.datasets import DatasetError, Listing, list_dataset
from pipeline.images import ImageError, is_gray_ab, load_rgb, max_input_bytes, resize_center_crop, rgb_to_lab
from pipeline.keys import name_of_key
from pipeline.output_folder import OUR_TMP, check_output, job_of
from pipeline.parallel import exit_if_orphaned
from pipeline.plan import ShardSpec, plan_shards
from pipeline.prior import build_prior
from pipeline.sources import read_input, stale_shards


class OutputError(Exception):
    """The output folder cannot take a file (disk full, read-only, quota). The user's to fix, not a bug: shards
    completed so far stay, and rerunning the same command resumes from them."""


@contextlib.contextmanager
def _writing(path: Path):
    """Turn a failed write of `path` into an OutputError naming the folder and the cause."""
    try:
        yield
    except (OSError, RuntimeError) as e:     # h5py reports a failed flush (ENOSPC, EIO) as RuntimeError
        found = re.search(r"error message = '([^']+)'", str(e))
        reason = e.strerror if isinstance(e, OSError) and e.strerror else found.group(1) if found else str(e)
        raise OutputError(f"{path.parent}: cannot write {path.name}: {reason}. Complete shards are kept; free "
                          "space (or fix the folder) and rerun the same command to resume") from e


class NothingToTrainOn(DatasetError):
    """Every input of the split that the run is for was skipped (a folder of grayscale photos, say): no sample and
    no prior. A dataset problem, reported like an empty folder."""


@dataclass(frozen=True)
class ShardContext:
    """What every shard task shares. loky pickles it with each task (~1.3 MB, against seconds of work per
    shard); dask scatters it once per worker."""
    root: str
    out: str
    cfg: PrepConfig
    encoder: object               # pipeline.soft_encode.SoftEncoder
    fingerprint: str              # encoding config + bin set: a shard made otherwise is not reused
    job: dict                     # output_folder.job_of: recorded in every shard, compared by a rerun


def encode_image(path: Path, cfg: PrepConfig, member=None, data: bytes | None = None):
    """One input (the file `path`, or an archives.Member: bytes inside a tar; `data`: its bytes, already read)
    -> (L (S, S) uint8, ab (2, T, T) float16), or a skip reason "kind: detail"."""
    try:   # a reduced decode never goes below min_side, so "too small" is judged on the true size
        if data is None and member is not None:
            data = read_member(member, max_input_bytes(cfg.max_pixels))
        rgb = load_rgb(path, min_side=max(cfg.min_side, math.ceil(cfg.decode_slack * cfg.size)), data=data,
                       max_pixels=cfg.max_pixels)
    except ImageError as e:                       # a bad file, not a bug: record it and move on
        return str(e)
    h, w = rgb.shape[:2]
    if min(h, w) < cfg.min_side:
        return f"too small: {w}x{h} px, shorter side below --min-side {cfg.min_side}"
    L, ab = stored_l_ab(resize_center_crop(rgb, cfg.size))
    if is_gray_ab(ab, cfg.gray_chroma):                                        # by chroma, not by file mode
        return "grayscale: no ab signal"
    return L, ab.transpose(2, 0, 1).astype(np.float16)


def _printable(reason: str) -> str:
    """A skip reason as UTF-8, for the shard attrs and the manifest: a path in it that is not UTF-8 (lone
    surrogates, as os.fsdecode gives it) keeps its bytes as \\xNN."""
    return reason.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def stored_l_ab(square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) uint8 sRGB -> (stored L (S, S) uint8, ab (T, T, 2) float32 at target resolution): OpenCV's
    float Lab, then the exact 4x4 box mean of a and b."""
    lab = rgb_to_lab(square)                                                   # (S, S, 3) float32
    T = square.shape[0] // contract.TARGET_STRIDE
    return l_uint8(lab), cv2.resize(lab, (T, T), interpolation=cv2.INTER_AREA)[..., 1:]


def l_uint8(lab: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 Lab -> (S, S) uint8 stored L: contract.l_to_uint8 in one OpenCV pass (~5x faster); its
    abs changes nothing, as L >= 0."""
    return cv2.convertScaleAbs(cv2.extractChannel(lab, 0), alpha=1 / contract.L_SCALE)


def process_shard(spec: ShardSpec, ctx: ShardContext) -> tuple[str, dict]:
    """Encode one shard's inputs and write its file (runs in a worker). Returns the file name and its summary
    attrs (`summary_of` of the file, without reading it back)."""
    S, T = ctx.cfg.size, ctx.cfg.size // contract.TARGET_STRIDE
    Ls, abs_, keys, skipped, sources = [], [], [], [], []
    for key, member in zip(spec.keys, spec.members or (None,) * len(spec.keys)):
        path = Path(ctx.root) / name_of_key(key)
        data, source = read_input(path, key, member, max_input_bytes(ctx.cfg.max_pixels))   # for reruns to compare
        sources.append(source)
        out = encode_image(path, ctx.cfg, member, data)
        if isinstance(out, str):
            skipped.append({"key": key, "reason": _printable(out)})
        else:
            Ls.append(out[0]); abs_.append(out[1]); keys.append(key)
    L = np.stack(Ls) if Ls else np.zeros((0, S, S), np.uint8)
    ab = np.stack(abs_) if abs_ else np.zeros((0, 2, T, T), np.float16)
    nn_idx, nn_w = ctx.encoder.encode(ab)             # from the float16 ab as stored, so checks agree
    counts = np.bincount(nn_idx[:, 0].ravel(), minlength=ctx.encoder.Q).astype(np.int64)
    summary = {"seen": len(spec.keys), "written": len(keys), "skipped": skipped, "counts": counts.tolist()}
    with _writing(Path(ctx.out) / spec.file):
        contract.write_shard(Path(ctx.out) / spec.file, L, ab, nn_idx, nn_w, keys, attrs={
            "split": spec.split, "index": spec.index, "fingerprint": ctx.fingerprint,
            "inputs_sha": spec.inputs_sha(), "config": ctx.cfg.encoding(), "job": ctx.job,
            **summary}, storage=ctx.cfg.storage, sources=sources, before_commit=exit_if_orphaned)
    return spec.file, summary


def summary_of(path: Path) -> dict:
    """A shard file's summary attrs: seen and written counts, skipped inputs with reasons, nearest-bin counts."""
    with h5py.File(path, "r") as h:
        a = h.attrs
        return {"seen": int(a["seen"]), "written": int(a["written"]), "skipped": json.loads(a["skipped"]),
                "counts": json.loads(a["counts"])}


@functools.lru_cache(maxsize=4)
def _encoder(knn: int, sigma: float):
    """The soft encoder over the in-gamut bins; building its lookup table takes ~1 s, so once per process."""
    from pipeline.soft_encode import SoftEncoder     # numba and faiss load only when a shard needs encoding
    return SoftEncoder(in_gamut_centers(), knn, sigma)


def fingerprint_of(cfg: PrepConfig, centers: np.ndarray) -> str:
    blob = json.dumps(cfg.encoding(), sort_keys=True) + fingerprint(centers)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class PrepResult:
    out_dir: Path
    seen: int
    written: int
    skipped: int
    by_reason: dict[str, int]
    shards: int
    reused: int
    splits: dict[str, int]
    prior_note: str
    seconds: float
    removed: int = 0              # shard files of an earlier run that this one deleted (not planned, or not reusable)
    changed: dict[str, list[str]] = field(default_factory=dict)  # file -> its inputs changed since: rewritten
    unrecorded: int = 0           # reused shards from before sources were recorded: their inputs were not checked
    split_note: str = ""          # how the inputs were split (datasets.Listing.split_note)

    def summary(self) -> str:
        lines = [f"{self.out_dir}: {self.written} written, {self.skipped} skipped of {self.seen} inputs "
                 f"in {self.shards} shards ({self.reused} reused from an earlier run), {self.seconds:.1f} s",
                 "  samples by split: " + (", ".join(f"{k} {v}" for k, v in self.splits.items()) or "none")]
        if self.split_note:
            lines.append(f"  {self.split_note}")
        if self.removed:
            lines.append(f"  removed {self.removed} shard files of an earlier run that this one does not reuse")
        if self.changed:
            n = sum(map(len, self.changed.values()))
            first = next(iter(self.changed.values()))[0]
            lines.append(f"  rewrote {len(self.changed)} shard(s) whose inputs changed since they were written "
                         f"({n} input(s), e.g. {first})")
        if self.unrecorded:
            lines.append(f"  {self.unrecorded} reused shard(s) predate recorded sources: their inputs were not checked "
                         "for changes (delete them to rewrite them)")
        lines += [f"  skipped {n:5d}  {reason}" for reason, n in sorted(self.by_reason.items())]
        lines.append(f"  prior: {self.prior_note}")
        return "\n".join(lines)


def _clean(out: Path, stale: list[Path]) -> int:
    """Remove what check_output found this run replaces, and the temporary files of interrupted writes (atomic
    writes leave nothing else). Returns the shard files removed."""
    for p in out.iterdir():
        if OUR_TMP.match(p.name):
            p.unlink()
    for p in stale:
        p.unlink()
    return len(stale)


def run(cfg: PrepConfig, progress: bool = True, overwrite: bool = False) -> PrepResult:
    """Preprocess `cfg.dataset` into `cfg.out`; see the module docstring. Raises DatasetError on a bad root (and
    its NothingToTrainOn when every input was skipped), OutputConflict when the folder holds what this run may not
    replace (`overwrite`: another job's files may be replaced), OutputError when the folder cannot be written."""
    from pipeline.parallel import imap_unordered

    t0 = time.perf_counter()
    listing = list_dataset(cfg.dataset, cfg.root, cfg.partition, cfg.test_fraction, cfg.split, cfg.limit,
                           cfg.subset)
    out = Path(cfg.out)
    specs = plan_shards(listing, cfg.shard_size, cfg.order)
    centers = in_gamut_centers()
    fp = fingerprint_of(cfg, centers)
    job = job_of(cfg, listing.root, listing.split_rule)
    reused, stale = check_output(out, specs, fp, job, overwrite)   # reads only
    changed, unrecorded = stale_shards(out, [s for s in specs if s.file in reused], listing.root, progress)
    reused -= changed.keys()          # rewritten in place: the old file stays until its replacement is complete
    with _writing(out):
        out.mkdir(parents=True, exist_ok=True)
        (out / contract.MANIFEST).unlink(missing_ok=True)   # written last again: its presence means "complete"
    removed = _clean(out, stale)
    todo = [s for s in specs if s.file not in reused]
    summaries = {}                # file -> summary, of the shards written now (assemble reads the others)
    if todo:
        ctx = ShardContext(str(listing.root), str(out), cfg, _encoder(cfg.knn, cfg.sigma), fp, job)
        from pipeline.progress import progress as progress_bar
        sizes = {s.file: len(s.keys) for s in todo}
        with progress_bar(total=sum(sizes.values()), unit="img", desc=f"preprocess {cfg.dataset}", disable=not progress,
                  smoothing=0.1) as bar:
            for name, summary in imap_unordered(process_shard, todo, ctx, cfg.workers, cfg.backend, cfg.scheduler):
                summaries[name] = summary
                bar.update(sizes[name])
    result = assemble(out, specs, cfg, listing, centers, summaries)
    result.reused, result.removed, result.seconds = len(specs) - len(todo), removed, time.perf_counter() - t0
    result.changed, result.unrecorded = changed, len(unrecorded)
    return result


def _require_samples(cfg: PrepConfig, listing: Listing, splits: dict[str, int], skipped_in: dict[str, list]) -> None:
    """Raise NothingToTrainOn when the split this run is for got no sample: the train split (fit has nothing to
    read and no prior can be built, whatever the test split holds), or the test split of a --split test (val)
    run or of an evaluation subset.
    Called before prior.npz and manifest.json are written, so no folder looks complete; the shard files stay, as
    the record of the skips (a rerun reuses them)."""
    need = "test" if cfg.split == "test" or cfg.subset else "train"
    if splits[need]:
        return
    n = len(listing.split(need))
    reasons = Counter(s["reason"].split(":")[0] for s in skipped_in[need])
    counted = ", ".join(f"{c} {r}" for r, c in reasons.most_common())
    why = f"all {n} {need}-split inputs were skipped ({counted})" if n else f"the {need} split lists no input"
    hint = (f"; its test split has {splits['test']} sample(s): --split test preprocesses them alone, for evaluation"
            if need == "train" and splits["test"] else "")
    raise NothingToTrainOn(f"{listing.root}: nothing to {'train on' if need == 'train' else 'evaluate'}: {why}"
                           f"{hint}")


def assemble(out: Path, specs: list[ShardSpec], cfg: PrepConfig, listing: Listing, centers,
             summaries: dict[str, dict] | None = None) -> PrepResult:
    """manifest.json and prior.npz from the shards' summary attrs (identical for fresh and resumed runs): those
    the workers returned for the shards they just wrote, read from the files for the others. Reading back every
    file made this serial tail ~1 ms a shard on 16 cores."""
    shards, skipped, counts = [], [], np.zeros(len(centers), np.int64)
    seen = written = 0
    skipped_in = {"train": [], "test": []}
    for spec in specs:
        a = (summaries or {}).get(spec.file) or summary_of(out / spec.file)
        n = a["written"]
        seen += a["seen"]; written += n
        skipped += a["skipped"]
        skipped_in[spec.split] += a["skipped"]
        if spec.split == "train":
            counts += np.asarray(a["counts"], np.int64)
        shards.append({"file": spec.file, "split": spec.split, "count": n})
    splits = {sp: sum(s["count"] for s in shards if s["split"] == sp) for sp in ("train", "test")}
    _require_samples(cfg, listing, splits, skipped_in)
    train_pixels = int(counts.sum())
    prior = build_prior(counts, centers, cfg.sigma, cfg.lam)
    with _writing(out / contract.PRIOR):
        prior.save(out / contract.PRIOR)
    by_reason = Counter(s["reason"].split(":")[0] for s in skipped)
    note = (f"{train_pixels} training target pixels over Q={len(centers)} bins" if train_pixels else
            "no training pixels (no train split processed): uniform prior, all weights 1")
    manifest = {
        "dataset": cfg.dataset, "root": str(listing.root), "config": cfg.as_dict(), "Q": len(centers),
        **({"split_rule": "folders"} if listing.split_rule == "folders" else {}),  # for verify --sources to relist
        "shards": shards, "skipped": skipped,
        "counts": {"seen": seen, "written": written, "skipped": len(skipped), "by_reason": dict(sorted(by_reason.items()))},
        "splits": splits, "prior": note,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with _writing(out / contract.MANIFEST):
        contract.write_manifest(out, manifest)
    return PrepResult(out, seen, written, len(skipped), dict(by_reason), len(specs), 0, splits, note, 0.0,
                      split_note=listing.split_note)
