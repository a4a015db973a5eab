"""Process plumbing of the pipeline: the only module that builds a joblib.Parallel or a dask client.

Work is a list of independent tasks (one shard each) plus one shared object (the soft encoder), and results
come back as they finish; the caller must not depend on their order. Two backends:
- loky: processes on this machine. loky starts fresh interpreters (no fork), which matters because faiss's
  and OpenCV's OpenMP thread pools do not survive a fork and can hang the child;
- dask: the same tasks on a dask.distributed cluster (`scheduler` address), or on a LocalCluster of worker
  processes. Workers write their shard files themselves, so a remote cluster needs the output folder on a
  shared filesystem and this project importable on every worker.
Each worker runs `worker_init` once: one thread each for OpenCV, faiss and OpenMP, since the parallelism is
across processes and nested thread pools only oversubscribe the cores; and glibc keeps freed memory for reuse
(`reuse_freed_memory`). numba is left alone: the soft-encoding
kernel is serial, so its thread pool never starts, and changing NUMBA_NUM_THREADS after numba is imported makes
its next compile raise (which a fresh clone, with no compiled-kernel cache yet, does hit).
A serial run (jobs = 1) stays in the calling process and does not cap its threads: that process may go on to
train, and torch reads OMP_NUM_THREADS.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_initialised = False
_watching = False                # exit_with_parent's thread runs in this process
_parent: int | None = None       # the pid it watches


def quiet_decoders() -> None:
    """Bad files are reported as skips with their reasons; OpenCV's own warnings about them are noise, and so is
    Pillow's DecompressionBombWarning: images.load_rgb checks every size against its own limit (--max-pixels)."""
    import warnings

    import cv2
    from PIL import Image
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def worker_init() -> None:
    """Cap the thread pools of this worker process at one thread; idempotent, cheap after the first call."""
    global _initialised
    if _initialised:
        return
    for var in _THREAD_ENV:
        os.environ.setdefault(var, "1")
    import sys

    import cv2
    cv2.setNumThreads(1)
    quiet_decoders()
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(1)
    reuse_freed_memory()
    _initialised = True


def exit_with_parent(every_s: float = 0.2) -> None:
    """End this loky worker as soon as the process that started it is gone. A preprocess killed with -9 left its
    workers running for minutes, writing shards for a run nobody waits for: loky notices a dead parent only
    between tasks, and a task is a whole shard. A daemon thread compares os.getppid() with the parent's pid (a
    dead parent's children are re-parented); prctl's PDEATHSIG would not do, as it fires when the thread that
    started the worker ends, and loky starts workers from a helper thread. The encode kernel runs without the
    GIL, so the check is never held up for long. Not for dask workers: a `dask worker` started under nohup
    outlives its shell by design. Idempotent."""
    global _watching, _parent
    if _watching:
        return
    import threading
    import time

    parent = _parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)                 # no cleanup: a half-written shard is only a temporary file, removed on rerun
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    _watching = True


def exit_if_orphaned() -> None:
    """In a watched worker, end now if its run is gone. A shard is checked here just before its rename: building
    it in memory holds the GIL (h5py), so the watch thread can wait through a whole build, and a shard renamed
    after the kill is work nobody asked for any more."""
    if _parent is not None and os.getppid() != _parent:
        os._exit(1)


def reuse_freed_memory(mmap_mib: int = 64, trim_mib: int = 256) -> bool:
    """Keep freed blocks in this process's heap instead of handing them back to the OS. glibc serves a block
    over its mmap threshold (128 KiB, raised only by the last freed size) with fresh pages and unmaps it on free,
    so a worker faulted in its decoded photos, shard arrays and in-memory HDF5 file anew for every image: ~100
    page faults and ~0.15 ms of kernel time per image on the 2-core VM (`bench preprocess` shows both), more on a
    freshly started VM. With blocks up to 64 MiB from the heap and up to 256 MiB of free heap kept, the same runs
    show none, 4 % less CPU per image and the same peak memory. Returns False where the C library is not glibc."""
    import ctypes
    m_trim_threshold, m_mmap_threshold = -1, -3                 # glibc's malloc.h
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(m_mmap_threshold, mmap_mib << 20) and mallopt(m_trim_threshold, trim_mib << 20))


def _call(fn: Callable, task, shared):
    worker_init()
    return fn(task, shared)


def _call_in_loky(fn: Callable, task, shared):
    exit_with_parent()
    return _call(fn, task, shared)


def imap_unordered(fn: Callable, tasks: Sequence, shared=None, jobs: int = 1, backend: str = "loky",
                   scheduler: str = "") -> Iterator:
    """Yield fn(task, shared) for every task, in completion order. jobs = 1 with loky runs in this process
    (no pool to start; easiest to debug); a scheduler address implies the dask backend."""
    if not tasks:
        return
    if scheduler or backend == "dask":
        yield from _dask_map(fn, tasks, shared, jobs, scheduler)
    elif jobs == 1:
        quiet_decoders()
        for task in tasks:
            yield fn(task, shared)
    else:
        from joblib import Parallel, delayed, parallel_config
        with parallel_config(backend="loky", n_jobs=jobs, inner_max_num_threads=1):
            # batch_size=1: a task is a whole shard, seconds of work; results stream back as they finish
            yield from Parallel(return_as="generator_unordered", batch_size=1, pre_dispatch="2*n_jobs")(
                delayed(_call_in_loky)(fn, t, shared) for t in tasks)


def _dask_map(fn: Callable, tasks: Sequence, shared, jobs: int, scheduler: str) -> Iterator:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as e:
        raise RuntimeError("the dask backend needs dask[distributed]: pip install 'colorfast[dask]'") from e
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
    try:
        shared_f = client.scatter(shared, broadcast=True)         # ship the encoder once per worker
        futures = [client.submit(_call, fn, t, shared_f, pure=False) for t in tasks]
        for future in as_completed(futures):
            yield future.result()
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
