"""Where a photo's time goes inside `preprocess`: ms per image for each stage of a real run, in one process.

    python tools/preprocess_stages.py [--photo 1024 768] [--images 200] [--root DIR] [--storage NAME]

Runs pipeline.preprocess.run (jobs 1, 32-image shards, after a warm-up run) with timers wrapped around the
functions it calls (the real ones: nothing is re-implemented here), and the full-resolution decode of the same
files for comparison. Without --root it generates JPEGs the way `bench preprocess` does. Produced the per-stage
table in docs/benchmarks.md. One process on purpose: `bench preprocess` gives the ratio with all workers; this
gives the split of one worker's time.
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import contract, preprocess                   # noqa: E402
from pipeline.bench import _decode_shard, synth_jpegs       # noqa: E402
from pipeline.config import PrepConfig                      # noqa: E402
from pipeline.datasets import list_dataset                  # noqa: E402
from pipeline.preprocess import ShardSpec                  # noqa: E402

STAGES = {                 # label: (module whose attribute preprocess calls, attribute name)
    "read + blake2b digest (sources)": (preprocess, "read_input"),
    "load_rgb (reduced decode)": (preprocess, "load_rgb"),
    "centre crop + resize": (preprocess, "resize_center_crop"),
    "float Lab": (preprocess, "rgb_to_lab"),
    "grayscale test": (preprocess, "is_gray_ab"),
    "L to uint8": (preprocess, "l_uint8"),
    "shard write": (contract, "write_shard"),
}


def _timed(fn, label, seconds):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - t0
    return wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=int, nargs=2, default=(1024, 768), metavar=("W", "H"))
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--root", help="a folder of photos instead of generated JPEGs")
    ap.add_argument("--storage", default=PrepConfig.storage, help="shard storage option (contract.STORAGE)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="preprocess_stages_"))
    try:
        root = args.root or str(synth_jpegs(tmp / "images", args.images, w=args.photo[0], h=args.photo[1]))
        cfg = PrepConfig(dataset="folder", root=root, jobs=1, shard_size=32, limit=args.images, storage=args.storage)
        preprocess.run(replace(cfg, limit=20, out_dir=str(tmp / "warm")), progress=False)
        seconds = collections.Counter()
        encoder = preprocess._encoder(cfg.knn, cfg.sigma)
        patches = [(mod, name, getattr(mod, name)) for mod, name in STAGES.values()]
        patches.append((encoder, "encode", encoder.encode))
        for label, (mod, name) in STAGES.items():
            setattr(mod, name, _timed(getattr(mod, name), label, seconds))
        encoder.encode = _timed(encoder.encode, "soft encoding", seconds)
        try:
            t0 = time.perf_counter()
            result = preprocess.run(replace(cfg, out_dir=str(tmp / "out")), progress=False)
            total = time.perf_counter() - t0
        finally:
            for mod, name, fn in patches:
                setattr(mod, name, fn)
        n = result.seen
        # decode-only after the pipeline's run, as in `bench preprocess`: the process's heap is then warm (a
        # fresh process pays page faults for every full-size output buffer), the decode side's best case
        listing = list_dataset("folder", root, cfg.partition, cfg.test_fraction, "all", args.images)
        everything = ShardSpec("all", 0, tuple(key for key, _split in listing.items))
        for _ in range(2):
            t0 = time.perf_counter()
            _decode_shard(everything, str(listing.root))
            decode_ms = 1e3 * (time.perf_counter() - t0) / len(everything.keys)
        stages = {k: round(1e3 * v / n, 3) for k, v in seconds.items()}
        rest = total - sum(seconds.values())
        stages["the rest (ab mean, float16, loop, counts, manifest, prior)"] = round(1e3 * rest / n, 3)
        for k, v in stages.items():
            print(f"{k:60s} {v:7.3f} ms")
        print(f"{'total':60s} {1e3 * total / n:7.3f} ms   (full-resolution decode-only {decode_ms:.3f} ms)")
        print(json.dumps({"images": n, "pipeline_ms": round(1e3 * total / n, 3), "decode_only_ms": round(decode_ms, 3),
                          "stages_ms": stages}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
