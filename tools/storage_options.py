"""Bytes per sample, write cost and loader samples/s of each lossless shard storage option (contract.STORAGE).

    python tools/storage_options.py [--images 480] [--photo 500 375] [--options none,lzf,...] [--rounds 2]

Preprocesses generated JPEGs (as `bench preprocess` makes them: crops of the scikit-image colour photos,
quality 90; 500x375 by default, an ImageNet-sized photo) once into uncompressed shards, then rewrites those
very arrays under each option (contract.write_shard, as a preprocess worker calls it: fletcher32, fsync) and
checks that every array reads back bit for bit. Per option: bytes per sample (the shard files' size over the
samples they hold), write ms per sample (what the option adds to a preprocess worker's per-shard write;
`none` is format 1's cost), and the trainer's loader (trainer.bench.bench_loader: batch 40, 176 px crops, flips,
60 timed batches) with 0, 1 and 2 workers. Options are measured in alternation for `--rounds` rounds and the
best rate of each is kept, so a burst of load on a shared machine hits one round of every option, not one
option. Prints a markdown table and, last, one JSON object. Produced the table in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import contract                      # noqa: E402
from pipeline.bench import synth_jpegs              # noqa: E402
from pipeline.config import PrepConfig              # noqa: E402
from pipeline.preprocess import run                 # noqa: E402
from trainer.bench import bench_loader              # noqa: E402

SKIP_ATTRS = ("format_version", "count", "storage")    # write_shard sets these itself


def rewrite(src: Path, dst: Path, storage: str) -> dict:
    """Copy a shard folder, rewriting every shard under `storage`; returns bytes and write seconds per sample."""
    dst.mkdir(parents=True)
    for name in (contract.MANIFEST, contract.PRIOR):
        shutil.copy(src / name, dst / name)
    samples = nbytes = 0
    seconds = 0.0
    for entry in contract.read_manifest(src)["shards"]:
        with contract.open_shard(src / entry["file"]) as sh:
            arrays = sh.read(slice(None))
            keys = sh.keys()
            attrs = {k: v for k, v in sh.attrs.items() if k not in SKIP_ATTRS}
        t0 = time.perf_counter()
        contract.write_shard(dst / entry["file"], *(arrays[a] for a in contract.ARRAYS), keys, attrs, storage)
        seconds += time.perf_counter() - t0
        with contract.open_shard(dst / entry["file"]) as sh:       # lossless, or this option is not one
            back = sh.read(slice(None))
            assert all(np.array_equal(back[a], arrays[a]) for a in contract.ARRAYS), (storage, entry["file"])
            assert sh.storage == storage
        samples += len(keys)
        nbytes += (dst / entry["file"]).stat().st_size
    return {"bytes_per_sample": round(nbytes / samples), "write_ms_per_sample": round(1e3 * seconds / samples, 3)}


def _cpu_seconds() -> float:
    """User + system CPU of this process and its exited children (DataLoader workers are joined when a loader
    goes): on a shared machine the steadier measure of a loader's work than its wall-clock rate."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=480)
    ap.add_argument("--photo", type=int, nargs=2, default=(500, 375), metavar=("W", "H"))
    ap.add_argument("--options", default=",".join(contract.STORAGE))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batches", type=int, default=60)
    args = ap.parse_args()
    options = args.options.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="storage_options_"))
    try:
        synth_jpegs(tmp / "images", args.images, w=args.photo[0], h=args.photo[1])
        base = tmp / "base"
        run(PrepConfig(dataset="folder", root=str(tmp / "images"), out_dir=str(base), storage="none"),
            progress=False)
        figures = {}
        rewrite(base, tmp / "warm-up", options[0])             # the first write of a process pays start-up costs
        for name in options:
            figures[name] = rewrite(base, tmp / name, name)
            figures[name]["loader_samples_s"] = {}
        load = [os.getloadavg()[0]]
        for _ in range(args.rounds):
            for name in options:
                best, cpu = figures[name]["loader_samples_s"], figures[name].setdefault("loader_cpu_ms", {})
                for w in (0, 1, 2):
                    c0 = _cpu_seconds()
                    rate = bench_loader(str(tmp / name), batch_size=40, crop=176, batches=args.batches,
                                        workers=(w,), progress=None)["samples_s"][str(w)]
                    ms = 1e3 * (_cpu_seconds() - c0) / (40 * (args.batches + 2))
                    best[str(w)] = max(best.get(str(w), 0), rate)
                    cpu[str(w)] = round(min(cpu.get(str(w), ms), ms), 3)
            load.append(os.getloadavg()[0])
        ref = figures.get("none", {}).get("bytes_per_sample")
        print("| option | bytes/sample | vs none | loader samples/s, 0 / 1 / 2 workers | loader CPU ms/sample, "
              "0 / 1 / 2 workers | write ms/sample |")
        print("|---|---|---|---|---|---|")
        for name, f in figures.items():
            r, c = f["loader_samples_s"], f["loader_cpu_ms"]
            rel = f"{f['bytes_per_sample'] / ref:.2f}" if ref else "-"
            print(f"| {name} | {f['bytes_per_sample']:,} | {rel} | {r['0']:,.0f} / {r['1']:,.0f} / {r['2']:,.0f} "
                  f"| {c['0']:.3f} / {c['1']:.3f} / {c['2']:.3f} | {f['write_ms_per_sample']:.3f} |")
        print(json.dumps({"photo": args.photo, "images": args.images, "loadavg_1min": load, "options": figures}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
