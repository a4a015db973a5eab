"""Training samples from a shard folder (pipeline.contract): random crops and flips of L and its targets.

Memory does not grow with the number of shard files: each process keeps at most `2 * window` shards open
(an LRU pool; an open shard holds ~0.6-0.8 MB of HDF5 metadata), and the sample index is two arrays per shard
file, not per sample. That needs a shard-aware shuffle (EpochSampler): every epoch is a permutation of all
samples, made by shuffling the shard order, cutting it into windows of `window` shards and shuffling the
samples of each window together, so consecutive batches draw from one window's shards (a batch of 40 from a
window of 32 full shards spans ~23 of them). That is as random as a full shuffle because preprocess fills each
shard with a hash-ordered spread of its split (`--order mixed`): at ImageNet's shape a batch spans 39.2 classes
and 100 consecutive batches 982 of the 1,000, as a full shuffle gives; name-ordered shards (one class each) give
23.7 and 55 (docs/benchmarks.md, "How random the loader's shuffle is"). Handles are opened on first use in each process (h5py handles must
not cross a fork), and every sample is one chunk per array, so a read is one HDF5 call per array. Crops start
at multiples of 4 so the 1/4-resolution targets (ab, nn_idx, nn_w) stay aligned with L; a flip mirrors every
array. The order, crop and flip of a sample depend only on (seed, epoch, index), never on a worker's RNG, so
the data a step sees is the same for any number of workers and after a resume. EpochSampler yields (epoch,
index) pairs so that persistent workers know the epoch; a plain DistributedSampler's ints work too (then
`dataset.epoch` is used).

A batch is a dict (the DataLoader fetches whole batches through __getitems__):
    L       (B, c, c)        uint8   stored L (L* = L * contract.L_SCALE), converted on the device
    ab      (B, 2, c/4, c/4) float16
    nn_idx  (B, K, c/4, c/4) int16   (uint16 on disk; Q < 32768)
    nn_w    (B, K, c/4, c/4) float16
    key     list of B str, index (B,) int64
"""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pipeline import contract

STRIDE = contract.TARGET_STRIDE
WINDOW = 32                      # shards whose samples are shuffled together; each process keeps 2x open


class ShardDataset(Dataset):
    """The samples of one split of a shard folder. Batches come from __getitems__ already stacked, so load it
    with make_loader (or a DataLoader whose collate_fn passes the batch through)."""

    def __init__(self, folder, split: str = "train", crop: int = 176, flip: bool = True, seed: int = 0,
                 window: int = WINDOW):
        self.folder, self.crop, self.flip, self.seed = Path(folder), crop, flip, seed
        if window < 1:
            raise ValueError(f"window must be at least 1 shard, got {window}")
        self.window = window                         # EpochSampler's shuffle window; the pool holds 2x
        self.epoch = 0                               # set by the loop before each epoch's iterator is made
        self.paths = contract.shard_paths(folder, split)
        if not self.paths:
            raise contract.ShardFormatError(f"{folder}: no {split!r} shards in {contract.MANIFEST}")
        counts, sizes = [], set()
        for p in self.paths:                         # opened here only for their shapes, then closed before any fork
            with contract.open_shard(p) as sh:
                counts.append(len(sh))
                sizes.add((sh.size, sh.knn))
        if len(sizes) != 1:
            raise contract.ShardFormatError(f"{folder}: shards disagree on (size, knn): {sorted(sizes)}")
        (self.size, self.knn), = sizes
        if crop > self.size:
            raise contract.ShardFormatError(f"{folder}: crop {crop} is larger than the stored size {self.size}")
        # sample i lives in shard s = searchsorted(starts, i, "right") - 1, row i - starts[s]: O(shards) memory
        self.counts = np.asarray(counts, np.int64)                                   # (n_shards,)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])                  # (n_shards + 1,)
        self._pid, self._open = None, OrderedDict()  # shard number -> (Shard, its keys), least recently used first
        self._placed_epoch, self._yx, self._flips = None, None, None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """Sample i -> (shard number, row in that shard)."""
        s = int(np.searchsorted(self.starts, i, side="right")) - 1
        return s, int(i - self.starts[s])

    @property
    def max_open(self) -> int:
        return 2 * self.window                       # a batch may straddle two windows

    def _shard(self, s: int) -> tuple[contract.Shard, list[str]]:
        if self._pid != os.getpid():                 # first use in this (worker) process: forget inherited handles
            self._pid, self._open = os.getpid(), OrderedDict()
        if s in self._open:
            self._open.move_to_end(s)
        else:
            if len(self._open) >= self.max_open:
                self._open.popitem(last=False)[1][0].close()
            sh = contract.open_shard(self.paths[s])
            self._open[s] = (sh, sh.keys())
        return self._open[s]

    def placement(self, i: int, epoch: int | None = None) -> tuple[int, int, bool]:
        """(y, x, flip) of sample i in an epoch: offsets on the 4-pixel grid, drawn for the whole epoch at once
        from (seed, epoch) so they do not depend on which process reads the sample."""
        epoch = self.epoch if epoch is None else epoch
        if self._placed_epoch != epoch:                # int16 and bool: 5 bytes a sample, in each process
            rng = np.random.default_rng((self.seed, epoch))
            n = (self.size - self.crop) // STRIDE + 1
            self._yx = rng.integers(0, n, size=(len(self), 2), dtype=np.int16) * np.int16(STRIDE)
            self._flips = rng.integers(0, 2, size=len(self), dtype=np.uint8).astype(bool) & self.flip
            self._placed_epoch = epoch
        return int(self._yx[i, 0]), int(self._yx[i, 1]), bool(self._flips[i])

    def _sample(self, item):
        """item: a sample index, or (epoch, index) as EpochSampler yields (so persistent workers see epochs)."""
        epoch, i = item if isinstance(item, tuple) else (None, item)
        s, r = self.locate(i)
        sh, keys = self._shard(s)
        y, x, flip = self.placement(i, epoch)
        c, t, ty, tx = self.crop, self.crop // STRIDE, y // STRIDE, x // STRIDE
        try:                                                           # one chunk read per array
            L, *tg = sh.sample(r)
        except OSError as e:                                           # e.g. a fletcher32 mismatch: a rotten chunk
            raise contract.ShardFormatError(f"{sh.path}: sample {r} ({keys[r]}) is unreadable ({e}); "
                                            f"run `cli.py verify {self.folder}`") from None
        L, tg = L[y:y + c, x:x + c], [a[:, ty:ty + t, tx:tx + t] for a in tg]
        if flip:
            L, tg = L[:, ::-1], [a[..., ::-1] for a in tg]
        return (L, *tg, keys[r], i)

    def __getitem__(self, item) -> dict:
        L, ab, idx, w, key, _ = self._sample(item)
        return {"L": np.ascontiguousarray(L), "ab": np.ascontiguousarray(ab),
                "nn_idx": idx.astype(np.int16), "nn_w": np.ascontiguousarray(w), "key": key}

    def __getitems__(self, items) -> dict:
        L, ab, idx, w, keys, index = zip(*(self._sample(it) for it in items))
        # In a worker, stack straight into shared memory: the batch then crosses to the main process
        # without the extra copy torch would make when pickling an ordinary tensor.
        shared = torch.utils.data.get_worker_info() is not None
        out = {}
        for name, arrs, dtype in (("L", L, torch.uint8), ("ab", ab, torch.float16),
                                  ("nn_idx", idx, torch.int16), ("nn_w", w, torch.float16)):
            t = torch.empty((len(arrs), *arrs[0].shape), dtype=dtype)
            t = t.share_memory_() if shared else t
            np.stack(arrs, out=t.numpy(), casting="unsafe")              # uint16 -> int16 is exact for Q < 32768
            out[name] = t
        out["key"], out["index"] = list(keys), torch.as_tensor(index, dtype=torch.int64)
        return out

    def close(self) -> None:
        for sh, _ in self._open.values():
            sh.close()
        self._open = OrderedDict()


class EpochSampler(Sampler):
    """Shard-aware shuffle (module docstring), the same on every rank and split by rank like DistributedSampler
    with drop_last (rank r takes every R-th sample of the epoch's order), that can start part-way into an epoch,
    so a resumed run sees exactly the batches the interrupted one had left. Holds one epoch's order as an
    int64 array (8 bytes a sample) and yields lazily."""

    def __init__(self, dataset: ShardDataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        self.dataset, self.num_replicas, self.rank, self.seed = dataset, num_replicas, rank, seed
        self.num_samples = len(dataset) // num_replicas
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Epoch number and how many of this rank's samples of it were already used."""
        self.set_epoch(epoch)
        self.start = start

    def order(self, epoch: int | None = None) -> np.ndarray:
        """(num_samples,) int64: this rank's sample indices for an epoch, in the order they are drawn."""
        ds, epoch = self.dataset, self.epoch if epoch is None else epoch
        rng = np.random.default_rng((self.seed, epoch, 0x5A4D))
        shards = rng.permutation(len(ds.counts))
        out, pos = np.empty(len(ds), np.int64), 0
        for w in range(0, len(shards), ds.window):
            group = shards[w:w + ds.window]
            idx = np.concatenate([np.arange(ds.starts[s], ds.starts[s + 1]) for s in group])
            out[pos:pos + len(idx)] = idx[rng.permutation(len(idx))]
            pos += len(idx)
        return out[:self.num_samples * self.num_replicas][self.rank::self.num_replicas]

    def __iter__(self):
        epoch = self.epoch
        return ((epoch, int(i)) for i in self.order(epoch)[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _whole_batch(batch):
    return batch                                    # __getitems__ already stacked it


def make_loader(dataset: ShardDataset, batch_size: int, sampler, workers: int = 2) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      collate_fn=_whole_batch, pin_memory=torch.cuda.is_available(),
                      prefetch_factor=4 if workers else None, persistent_workers=workers > 0)
