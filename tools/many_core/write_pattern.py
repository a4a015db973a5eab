"""How fast can this machine's disk take shard files the way `preprocess` writes them? P processes each write
shard-sized files (5.26 MB, what 32 samples at 256 px make) into one folder, in three ways:
- buffered + fsync: what contract.write_shard does (through the page cache, then fsync, then rename);
- buffered, no fsync: the upper bound of moving fsync elsewhere;
- O_DIRECT + fsync: straight from the process's buffer to the disk, no page-cache copy.
Prints MB/s over all processes and the CPU ms per file, one JSON line at the end.

    python tools/many_core/write_pattern.py DIR [--procs 16] [--files 40]
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import time
from concurrent.futures import ProcessPoolExecutor

SHARD_BYTES = 5_264_744


def _writer(args) -> float:
    folder, mode, files, rank = args
    buf = mmap.mmap(-1, (SHARD_BYTES + 4095) // 4096 * 4096)        # page-aligned, as O_DIRECT needs
    buf.write(os.urandom(SHARD_BYTES))
    c0 = time.process_time()
    for i in range(files):
        path = os.path.join(folder, f"{mode}-{rank}-{i}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if mode == "direct" else 0)
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, buf if mode == "direct" else memoryview(buf)[:SHARD_BYTES])
            if mode == "direct":
                os.ftruncate(fd, SHARD_BYTES)
            if mode != "nosync":
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(path, path[:-4] + ".h5")
    return time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--procs", type=int, default=os.cpu_count())
    ap.add_argument("--files", type=int, default=40, help="files per process and mode")
    args = ap.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    figures = {"procs": args.procs, "files": args.files}
    with ProcessPoolExecutor(args.procs) as pool:
        list(pool.map(_writer, [(args.folder, "nosync", 1, r) for r in range(args.procs)]))     # start the pool
        for mode in ("fsync", "nosync", "direct"):
            t0 = time.perf_counter()
            try:
                cpu = sum(pool.map(_writer, [(args.folder, mode, args.files, r) for r in range(args.procs)]))
            except OSError as e:
                print(f"{mode}: {e}")
                continue
            wall = time.perf_counter() - t0
            n = args.procs * args.files
            figures[f"{mode}_mb_s"] = round(n * SHARD_BYTES / wall / 1e6)
            figures[f"{mode}_cpu_ms_per_file"] = round(1e3 * cpu / n, 2)
            print(f"{mode:7s} {figures[f'{mode}_mb_s']:6d} MB/s, CPU {figures[f'{mode}_cpu_ms_per_file']:.2f} ms per file")
            for name in os.listdir(args.folder):
                os.unlink(os.path.join(args.folder, name))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
