"""Is a shard folder safe to train from? `verify` (the CLI), fit and evaluate ask before they read a folder.

A reader of the on-disk format (pipeline/contract.py), like the trainer: it needs numpy, h5py (through the
contract's Shard) and the standard library. Every problem is one line naming its file, so a damaged folder says
what to rerun (`repair_advice`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.contract import (MANIFEST, PRIOR, TARGET_STRIDE, Prior, Shard, ShardFormatError, read_manifest,
                               rebalancing_weights, smoothed_prior)

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
        from pipeline.progress import progress as progress_bar   # only the CLI asks for one
        entries = progress_bar(entries, desc="verify", unit="shard")
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
