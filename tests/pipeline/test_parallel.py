"""pipeline.parallel: what every pool worker is set up with."""
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.parallel import imap_unordered

SHARD_IMAGE = 40 << 20       # a default shard's in-memory HDF5 file (256 samples x 164 KB), above glibc's
                             # largest automatic mmap threshold (32 MiB), so by default mapped anew every time


def _mib_returned_on_free(_task, _shared) -> float:
    """Resident memory that freeing a SHARD_IMAGE-sized block gives back to the OS: ~40 MiB where the allocator
    maps such blocks afresh (the next one is faulted in again page by page), ~0 where it keeps them for reuse."""
    block = np.ones(SHARD_IMAGE, np.uint8)                    # allocated and touched
    rss = psutil.Process().memory_info().rss
    del block
    return (rss - psutil.Process().memory_info().rss) / 2 ** 20


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_pool_workers_keep_freed_memory_for_reuse():
    returned = list(imap_unordered(_mib_returned_on_free, [0, 1, 2, 3], None, jobs=2))
    assert max(returned) < 5, returned
    # a fresh process (this one may have run a jobs=1 preprocess, which sets up the main process too): glibc's default
    fresh = subprocess.run([sys.executable, "-c", "import test_parallel; print(test_parallel._mib_returned_on_free(0, 0))"],
                           capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    assert float(fresh.stdout) > 30, fresh.stdout
