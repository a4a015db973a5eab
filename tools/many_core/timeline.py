"""Where a parallel `preprocess` run loses wall time: a per-task timeline of a real run.

    python tools/many_core/timeline.py PHOTO_DIR [--images 2400] [--jobs 16] [--out DIR]

Runs pipeline.preprocess.run (32-image shards, after a warm-up) with process_shard wrapped so that each worker
logs when it starts and ends each task, and the same tasks decode-only. Reports, per side: the main process's
time before the first task starts and after the last one ends, the workers' busy share of the pool phase, the
gaps between a worker's tasks (dispatch latency), and the tail (workers idle while the last tasks run).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline import bench, parallel, preprocess         # noqa: E402
from pipeline.config import PrepConfig                   # noqa: E402
from pipeline.datasets import list_dataset               # noqa: E402
from pipeline.parallel import imap_unordered             # noqa: E402

LOG = os.environ.get("TIMELINE_LOG", "")     # the folder of per-worker task logs (workers read it at import)
_ORIGINAL = preprocess.process_shard
MARKS: dict[str, float] = {}                 # main-process moments of the pipeline run


def _log(t0: float, t1: float) -> None:
    with open(os.path.join(LOG, f"{os.getpid()}.log"), "a") as f:
        f.write(f"{t0:.6f} {t1:.6f}\n")


def timed_process_shard(spec, ctx):
    t0 = time.time()
    result = _ORIGINAL(spec, ctx)
    _log(t0, time.time())
    return result


def timed_decode_shard(spec, root):
    t0 = time.time()
    n = bench._decode_shard(spec, root)
    _log(t0, time.time())
    return n


def _marking(fn, label):
    def wrapper(*args, **kwargs):
        MARKS[label] = time.time()
        return fn(*args, **kwargs)
    return wrapper


def _read(log: str) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for name in os.listdir(log):
        rows = [tuple(map(float, line.split())) for line in open(os.path.join(log, name))]
        out[name] = sorted(rows)
    return out


def _summary(tag: str, t_start: float, t_end: float, tasks: dict, jobs: int) -> dict:
    first = min(r[0] for rows in tasks.values() for r in rows)
    last = max(r[1] for rows in tasks.values() for r in rows)
    busy = sum(r[1] - r[0] for rows in tasks.values() for r in rows)
    gaps = [b[0] - a[1] for rows in tasks.values() for a, b in zip(rows, rows[1:])]
    starts = sorted(rows[0][0] for rows in tasks.values())
    ends = sorted(rows[-1][1] for rows in tasks.values())
    n_tasks = sum(len(rows) for rows in tasks.values())
    s = {f"{tag}_wall_s": round(t_end - t_start, 3), f"{tag}_before_first_task_s": round(first - t_start, 3),
         f"{tag}_after_last_task_s": round(t_end - last, 3), f"{tag}_pool_s": round(last - first, 3),
         f"{tag}_busy_share": round(busy / (jobs * (last - first)), 3), f"{tag}_tasks": n_tasks,
         f"{tag}_workers_used": len(tasks), f"{tag}_task_ms_mean": round(1e3 * busy / n_tasks, 1),
         f"{tag}_gap_ms_mean": round(1e3 * sum(gaps) / max(1, len(gaps)), 2),
         f"{tag}_gap_ms_max": round(1e3 * max(gaps, default=0), 1),
         f"{tag}_start_spread_s": round(starts[-1] - starts[0], 3),
         f"{tag}_tail_s": round(ends[-1] - ends[0], 3)}
    print("  ".join(f"{k[len(tag) + 1:]}={v}" for k, v in s.items()), f"[{tag}]")
    return s


def main() -> None:
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--images", type=int, default=2400)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="", help="where shards go (default: a temporary folder)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="timeline_", dir=args.out or None))
    LOG = os.environ["TIMELINE_LOG"] = str(tmp / "log")           # workers read it from their environment
    try:
        base = PrepConfig(dataset="folder", root=args.root, jobs=args.jobs, shard_size=bench.BENCH_SHARD)
        preprocess.run(replace(base, limit=4 * args.jobs, shard_size=1, out_dir=str(tmp / "warm")), progress=False)
        figures = {"jobs": args.jobs, "images": args.images}
        for rep in range(2):
            for tag in ("decode", "pipeline"):
                shutil.rmtree(LOG, ignore_errors=True)
                os.makedirs(LOG)
                if tag == "decode":
                    listing = list_dataset("folder", args.root, 1, base.test_fraction, "all", args.images)
                    specs = preprocess.plan_shards(listing, bench.BENCH_SHARD)
                    t0 = time.time()
                    sum(imap_unordered(timed_decode_shard, specs, str(listing.root), args.jobs))
                else:
                    patched = [(preprocess, "process_shard", timed_process_shard),
                               (preprocess, "_clean", _marking(preprocess._clean, "listed")),
                               (parallel, "imap_unordered", _marking(parallel.imap_unordered, "dispatch")),
                               (preprocess, "assemble", _marking(preprocess.assemble, "assemble"))]
                    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patched]
                    for mod, name, fn in patched:
                        setattr(mod, name, fn)
                    try:
                        t0 = time.time()
                        preprocess.run(replace(base, limit=args.images, out_dir=str(tmp / f"out{rep}")), progress=False)
                    finally:
                        for mod, name, fn in saved:
                            setattr(mod, name, fn)
                t1 = time.time()
                figures.update(_summary(f"{tag}{rep}", t0, t1, _read(LOG), args.jobs))
                if tag == "pipeline":
                    main = {f"{tag}{rep}_{k}_at_s": round(v - t0, 3) for k, v in MARKS.items()}
                    print("  ".join(f"{k}={v}" for k, v in main.items()))
                    figures.update(main)
            shutil.rmtree(tmp / f"out{rep}", ignore_errors=True)
        print(json.dumps(figures))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
