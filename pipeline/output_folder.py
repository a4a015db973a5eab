"""What a `preprocess` run may do to its output folder, decided by reading it before anything is written.

A folder belongs to a job: the dataset root, the encoding config (cfg.encoding()) and the plan options (which
inputs go in which shard file), recorded in every shard's attrs ("job") and in manifest.json. A run
- reuses the planned shard files that are complete for its spec and were made from the same root (and whose
  inputs are unchanged since: pipeline/sources.py, checked by preprocess.run after this module);
- replaces or deletes the other shard files only if they are its own job's (a damaged shard, a dataset that grew,
  a larger --limit, a new bin set), or with `overwrite` another job's; lam is not part of the job (only prior.npz depends on it,
  and every run rebuilds that);
- never deletes or replaces a file preprocess did not write: an HDF5 file without a shard's attrs under a shard's
  name, a manifest.json or prior.npz of something else (one beside shards of a run is taken for that run's, maybe
  damaged, and rebuilt), any other *.h5 (verify and fit would refuse the folder); and nothing outside the names
  it writes (notes, photos, another program's temporary files) is ever looked at.
A refusal is an OutputConflict, raised before the folder changes, with one line naming the difference.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import h5py

from pipeline import contract
from pipeline.config import PrepConfig
from pipeline.plan import ShardSpec

SHARD_NAME = re.compile(r"^(train|test)-\d{5}\.h5$")
# contract.atomic_write's temporaries (.train-00003.h5.colorfast-PID-RANDOM.tmp), never another program's
OUR_TMP = re.compile(rf"^\.(manifest\.json|prior\.npz|(train|test)-\d{{5}}\.h5)\.{contract.TMP_TAG}\d+-\w+\.tmp$")
PLAN_FIELDS = ("split", "subset", "limit", "shard_size", "partition", "test_fraction", "order")  # inputs per file
PLAN_DEFAULTS_BEFORE = {"order": "name"}  # plan fields a shard written before they existed was made with
HASH_RULE = {"split_rule": "hash"}  # a job without split_rule: a folder's hash split (then its only one), or the
                                    # fixed split of another layout; recorded only for "folders", so that a hash
                                    # run's shards stay those of earlier versions


class OutputConflict(Exception):
    """The output folder holds files this run would delete or replace that are not this job's: shards of another
    dataset, root or config (`overwrite` allows replacing them), or files preprocess did not write (never
    touched). Raised before anything in the folder changes."""


def job_of(cfg: PrepConfig, root, split_rule: str = "") -> dict:
    """What decides a shard folder's files and their content: the dataset root, the encoding config and the plan
    options, with the rule that split a `folder` dataset (Listing.split_rule: its train/ and val/ folders, or the
    hash, which alone uses test_fraction). Runs of one job reuse and replace each other's shards freely. Left out:
    the run-only fields (jobs, backend, scheduler, out_dir) and lam, which only prior.npz depends on (rebuilt by
    every run)."""
    if split_rule == "folders":
        plan = {k: getattr(cfg, k) for k in PLAN_FIELDS if k != "test_fraction"}
        return {"root": str(root), **cfg.encoding(), **plan, "split_rule": split_rule}
    return {"root": str(root), **cfg.encoding(), **{k: getattr(cfg, k) for k in PLAN_FIELDS}}


JOB_KEYS = tuple(job_of(PrepConfig(), ""))
ENCODING_KEYS = tuple(PrepConfig().encoding())


def _recorded_job(path: Path, manifest_job: dict | None) -> tuple[dict | None, str]:
    """(the job a shard file records, ""): for a shard from before jobs were recorded, its encoding config
    completed by the folder's manifest. (None, why) when preprocess did not write it."""
    try:
        with h5py.File(path, "r") as h:
            a = h.attrs
            if "fingerprint" not in a or "inputs_sha" not in a:
                return None, "an HDF5 file without a shard's attrs"
            if "job" in a:
                return {**PLAN_DEFAULTS_BEFORE, **json.loads(a["job"])}, ""
            return {**PLAN_DEFAULTS_BEFORE, **(manifest_job or {}), **json.loads(a.get("config", "{}"))}, ""
    except (OSError, ValueError):
        return None, "not a readable HDF5 file"


def _manifest_job(path: Path) -> tuple[dict | None, str | None]:
    """(the job a manifest.json records, None); (None, why it is not ours) for another file; (None, None) when
    there is none."""
    if not path.exists():
        return None, None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return None, f"not readable as JSON: {type(e).__name__}"
    if not (isinstance(m, dict) and {"format_version", "dataset", "shards"} <= m.keys()):
        return None, "JSON without a shard manifest's format_version, dataset and shards"
    config = m.get("config") if isinstance(m.get("config"), dict) else {}
    return {**PLAN_DEFAULTS_BEFORE, **{k: v for k, v in config.items() if k in JOB_KEYS}, "root": m.get("root")}, None


def _describe(theirs: dict, ours: dict) -> tuple[str, str]:
    """How two jobs differ, for a message: ("dataset 'sample' (size 64)", "'folder' (size 256)"), or, for one
    dataset, ("dataset 'folder' with root '/a'", "has root '/b'")."""
    theirs, ours = {**HASH_RULE, **theirs}, {**HASH_RULE, **ours}
    keys = [k for k in ours if k in theirs and theirs[k] != ours[k] and k != "dataset"]
    show = lambda job, ks: ", ".join(f"{k} {job[k]!r}" if isinstance(job[k], str) else f"{k} {job[k]}" for k in ks)
    if theirs.get("dataset", ours["dataset"]) != ours["dataset"]:    # the encoding's differences, not the plan's
        keys = [k for k in keys if k in ENCODING_KEYS]                 # (another dataset lives elsewhere anyway)
        paren = lambda job: f" ({show(job, keys)})" if keys else ""
        return f"dataset {theirs['dataset']!r}{paren(theirs)}", f"{ours['dataset']!r}{paren(ours)}"
    return f"dataset {ours['dataset']!r} with {show(theirs, keys)}", f"has {show(ours, keys)}"


def same_job(recorded: dict, job: dict) -> bool:
    """A shard recorded as `recorded` belongs to this run's `job`: every field equal (a field it predates counts as
    equal), except that a larger --limit (or none) is the same job grown, like a dataset that gained files: the
    stable subset of a limit is the start of a larger one's (pipeline.datasets.shard_order), so it resumes."""
    recorded, job = {**HASH_RULE, **recorded}, {**HASH_RULE, **job}    # a folder split otherwise is another job
    for k, v in job.items():
        theirs = recorded.get(k, v)
        if k == "limit" and theirs and (v == 0 or v >= theirs):
            continue
        if theirs != v:
            return False
    return True


def check_output(out: Path, specs: list[ShardSpec], fingerprint: str, job: dict, overwrite: bool = False):
    """Decide, reading only, what this run may do to the output folder. Returns (the planned shard files that are
    reused, the shard files to delete: unplanned, or planned but not reusable). Raises OutputConflict when one of
    those, or manifest.json or prior.npz, is another job's (unless `overwrite`) or was not written by preprocess,
    or when the folder holds another *.h5 file (verify and fit refuse such a folder)."""
    if not out.is_dir():
        return set(), []
    manifest_job, manifest_foreign = _manifest_job(out / contract.MANIFEST)
    folder_root = (manifest_job or {}).get("root")
    reused = {s.file for s in specs if shard_is_complete(out / s.file, s, fingerprint, job["root"], folder_root)}
    stale, others, foreign = [], Counter(), []
    for p in sorted(out.iterdir()):
        if not SHARD_NAME.match(p.name) or p.name in reused:
            continue
        recorded, why = _recorded_job(p, manifest_job)
        if recorded is None:
            foreign.append(f"{p.name} was not written by preprocess ({why})")
            continue
        stale.append(p)
        if not same_job(recorded, job):
            others[json.dumps(recorded, sort_keys=True)] += 1
    ours_beside = bool(reused or stale)       # then a damaged manifest.json or prior.npz is a run's, rebuilt by this
    if manifest_foreign and not ours_beside:
        foreign.append(f"{contract.MANIFEST} was not written by preprocess ({manifest_foreign})")
    if (out / contract.PRIOR).exists() and manifest_job is None and not ours_beside:
        foreign.append(f"{contract.PRIOR} was not written by preprocess (no manifest or shard of a run beside it)")
    foreign += [f"{p.relative_to(out)} is an *.h5 file that is not one of its shards (verify and fit refuse a "
                "shard folder holding one)" for p in sorted(out.rglob("*.h5"))
                if p.parent != out or not SHARD_NAME.match(p.name)]
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputConflict(f"{out}: {foreign[0]}{more}; preprocess never deletes or replaces a file it did not "
                             "write: move it, or use --out elsewhere")
    if others and not overwrite:
        [(recorded, n)] = others.most_common(1)
        theirs, ours = _describe(json.loads(recorded), job)
        rest = sum(others.values()) - n
        also = f" (and {rest} of yet other runs)" if rest else ""
        verb = "" if ours.startswith("has ") else "is "
        raise OutputConflict(f"{out} holds {n} shard file(s) of {theirs}{also}; this run {verb}{ours}: use --out "
                             "elsewhere or --overwrite to replace them")
    return reused, stale


def shard_is_complete(path: Path, spec: ShardSpec, fingerprint: str, root: str | None = None,
                      folder_root: str | None = None) -> bool:
    """True when `path` is a finished shard of exactly this spec (atomic writes leave no partial file), made from
    the dataset at `root` when given: the same keys under another root are other images. A shard from before
    roots were recorded is judged by `folder_root` (its manifest's), else taken on trust."""
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as h:
            a = h.attrs
            made_from = json.loads(a["job"]).get("root") if "job" in a else folder_root
            return (a.get("fingerprint") == fingerprint and a.get("inputs_sha") == spec.inputs_sha()
                    and int(a.get("seen", -1)) == len(spec.keys) and all(d in h for d in contract.DATASETS)
                    and (root is None or made_from in (None, root)))
    except OSError:
        return False
