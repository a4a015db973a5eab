"""`cli.py bench stages`: where a photo's time goes inside `preprocess`, ms per image for each stage of a real run.

Runs pipeline.preprocess.run in one process (jobs 1, 32-image shards, after a warm-up run) with timers wrapped
around the functions it calls (the real ones: nothing is re-implemented here), then the full-resolution decode of
the same files for comparison. Without a root it generates JPEGs the way `bench preprocess` does. One process on
purpose: `bench preprocess` gives the ratio with all workers; this gives the split of one worker's time.
(Until issue 20 this was tools/preprocess_stages.py.)
"""
from __future__ import annotations

import collections
import functools
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from colorfast.bench.preprocess import _decode_shard, synth_jpegs
from pipeline import contract, preprocess
from pipeline.config import PrepConfig
from pipeline.datasets import list_dataset
from pipeline.plan import ShardSpec

STAGES = {                 # label: (module whose attribute preprocess calls, attribute name)
    "read + blake2b digest (sources)": (preprocess, "read_input"),
    "load_rgb (reduced decode)": (preprocess, "load_rgb"),
    "centre crop + resize": (preprocess, "resize_center_crop"),
    "float Lab": (preprocess, "rgb_to_lab"),
    "grayscale test": (preprocess, "is_gray_ab"),
    "L to uint8": (preprocess, "l_uint8"),
    "shard write": (contract, "write_shard"),
}
REST = "the rest (ab mean, float16, loop, counts, manifest, prior)"


def _timed(fn, label, seconds):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - t0
    return wrapper


def bench_stages(images: int = 200, photo=(1024, 768), root: str = "", storage: str = PrepConfig.storage,
                 echo=print) -> dict:
    """-> {"images", "pipeline_ms", "decode_only_ms", "stages_ms": {stage: ms per image}}; echoes a table."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_stages_"))
    try:
        root = root or str(synth_jpegs(tmp / "images", images, w=photo[0], h=photo[1]))
        cfg = PrepConfig(dataset="folder", root=root, jobs=1, shard_size=32, limit=images, storage=storage)
        preprocess.run(replace(cfg, limit=min(20, images), out_dir=str(tmp / "warm")), progress=False)
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
        finally:                                  # the real functions back, whatever happened
            for mod, name, fn in patches:
                setattr(mod, name, fn)
        n = result.seen
        # decode-only after the pipeline's run, as in `bench preprocess`: the process's heap is then warm (a
        # fresh process pays page faults for every full-size output buffer), the decode side's best case
        listing = list_dataset("folder", root, cfg.partition, cfg.test_fraction, "all", images)
        everything = ShardSpec("all", 0, tuple(key for key, _split in listing.items))
        for _ in range(2):
            t0 = time.perf_counter()
            _decode_shard(everything, str(listing.root))
            decode_ms = 1e3 * (time.perf_counter() - t0) / len(everything.keys)
        stages = {k: round(1e3 * v / n, 3) for k, v in seconds.items()}
        stages[REST] = round(1e3 * (total - sum(seconds.values())) / n, 3)
        for k, v in stages.items():
            echo(f"{k:60s} {v:7.3f} ms")
        echo(f"{'total':60s} {1e3 * total / n:7.3f} ms   (full-resolution decode-only {decode_ms:.3f} ms)")
        return {"images": n, "pipeline_ms": round(1e3 * total / n, 3), "decode_only_ms": round(decode_ms, 3),
                "stages_ms": stages}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
