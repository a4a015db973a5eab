"""Build the synthetic shard folder for the GPU checks (bench epoch / bench loader --data) with
trainer.synthetic.write_synthetic_shards, its brute-force soft encoding spread over a process pool.

Same folder as `bench epoch --n N` builds for itself (256 px, per_shard 256), but the soft encoding
(argpartition over (65536, Q) blocks, single-threaded numpy) runs on every core: ~60 s -> ~10 s for
3000 samples on the 16-core GPU machine. No faiss, no numba.
usage: python3 tools/gpu_check/make_synth.py OUT_DIR N [PROCESSES]
"""
import multiprocessing as mp
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.getcwd())              # run from the repo root; the repo is not installed there

from trainer import synthetic

_serial = synthetic.soft_encode
CHUNK = 1 << 15


def _one(args):
    ab, centers, k, sigma = args
    return _serial(ab, centers, k, sigma)


def main(out: str, n: int, procs: int) -> None:
    pool = mp.get_context("fork").Pool(procs)

    def parallel(ab, centers, k, sigma=5.0, chunk=CHUNK):
        parts = pool.map(_one, [(ab[i:i + chunk], centers, k, sigma) for i in range(0, len(ab), chunk)])
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    synthetic.soft_encode = parallel          # write_synthetic_shards looks it up in its module at call time
    t0 = time.perf_counter()
    try:
        synthetic.write_synthetic_shards(out, n=n, size=256, per_shard=min(256, max(n // 2, 1)))
    finally:
        pool.close()
        pool.join()
    print(f'{{"synth_samples": {n}, "synth_s": {time.perf_counter() - t0:.1f}, "processes": {procs}}}')


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else max(os.cpu_count() - 2, 1))
