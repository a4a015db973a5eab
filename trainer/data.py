"""Training samples from a shard folder (pipeline.contract): random crops and flips of L and its targets.

Each HDF5 file is opened once per process, on first use (h5py handles must not cross a fork), and every
sample is one chunk per array, so a read is one HDF5 call per array. Crops start at multiples of 4 so the
1/4-resolution targets (ab, nn_idx, nn_w) stay aligned with L; a flip mirrors every array. The crop and
flip of a sample depend only on (seed, epoch, index), never on a worker's RNG, so the data a step sees is
the same for any number of workers and after a resume. EpochSampler yields (epoch, index) pairs so that
persistent workers know the epoch; a plain DistributedSampler's ints work too (then `dataset.epoch` is used).

A batch is a dict (the DataLoader fetches whole batches through __getitems__):
    L       (B, c, c)        uint8   stored L (L* = L * contract.L_SCALE), converted on the device
    ab      (B, 2, c/4, c/4) float16
    nn_idx  (B, K, c/4, c/4) int16   (uint16 on disk; Q < 32768)
    nn_w    (B, K, c/4, c/4) float16
    key     list of B str, index (B,) int64
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pipeline import contract

STRIDE = contract.TARGET_STRIDE


class ShardDataset(Dataset):
    """The samples of one split of a shard folder. Batches come from __getitems__ already stacked, so load it
    with make_loader (or a DataLoader whose collate_fn passes the batch through)."""

    def __init__(self, folder, split: str = "train", crop: int = 176, flip: bool = True, seed: int = 0):
        self.folder, self.crop, self.flip, self.seed = Path(folder), crop, flip, seed
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
        # sample i -> (shard number, row in that shard), (N, 2)
        self.index = np.array([(s, r) for s, n in enumerate(counts) for r in range(n)], np.int64).reshape(-1, 2)
        self._pid, self._open, self._keys = None, {}, {}
        self._placed_epoch, self._yx, self._flips = None, None, None

    def __len__(self) -> int:
        return len(self.index)

    def _shard(self, s: int) -> contract.Shard:
        if self._pid != os.getpid():                 # first use in this (worker) process: forget inherited handles
            self._pid, self._open, self._keys = os.getpid(), {}, {}
        if s not in self._open:
            self._open[s] = contract.open_shard(self.paths[s])
            self._keys[s] = self._open[s].keys()
        return self._open[s]

    def placement(self, i: int, epoch: int | None = None) -> tuple[int, int, bool]:
        """(y, x, flip) of sample i in an epoch: offsets on the 4-pixel grid, drawn for the whole epoch at once
        from (seed, epoch) so they do not depend on which process reads the sample."""
        epoch = self.epoch if epoch is None else epoch
        if self._placed_epoch != epoch:
            rng = np.random.default_rng((self.seed, epoch))
            n = (self.size - self.crop) // STRIDE + 1
            self._yx = rng.integers(0, n, size=(len(self), 2)) * STRIDE
            self._flips = (rng.random(len(self)) < 0.5) & self.flip
            self._placed_epoch = epoch
        return int(self._yx[i, 0]), int(self._yx[i, 1]), bool(self._flips[i])

    def _sample(self, item):
        """item: a sample index, or (epoch, index) as EpochSampler yields (so persistent workers see epochs)."""
        epoch, i = item if isinstance(item, tuple) else (None, item)
        s, r = self.index[i]
        sh = self._shard(s)
        y, x, flip = self.placement(i, epoch)
        c, t, ty, tx = self.crop, self.crop // STRIDE, y // STRIDE, x // STRIDE
        try:                                                           # one chunk read per array
            L = sh.L[r][y:y + c, x:x + c]
            tg = [a[r][:, ty:ty + t, tx:tx + t] for a in (sh.ab, sh.nn_idx, sh.nn_w)]
        except OSError as e:                                           # e.g. a fletcher32 mismatch: a rotten chunk
            raise contract.ShardFormatError(f"{sh.path}: sample {r} ({self._keys[s][r]}) is unreadable ({e}); "
                                            f"run `cli.py verify {self.folder}`") from None
        if flip:
            L, tg = L[:, ::-1], [a[..., ::-1] for a in tg]
        return (L, *tg, self._keys[s][r], i)

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
        for sh in self._open.values():
            sh.close()
        self._open, self._keys = {}, {}


class EpochSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch, the same on every rank, split by rank) that can start
    part-way into an epoch, so a resumed run sees exactly the batches the interrupted one had left."""

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Epoch number and how many of this rank's samples of it were already used."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return iter([(self.epoch, i) for i in list(super().__iter__())[self.start:]])

    def __len__(self) -> int:
        return super().__len__() - self.start


def _whole_batch(batch):
    return batch                                    # __getitems__ already stacked it


def make_loader(dataset: ShardDataset, batch_size: int, sampler, workers: int = 2) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=True,
                      collate_fn=_whole_batch, pin_memory=torch.cuda.is_available(),
                      prefetch_factor=4 if workers else None, persistent_workers=workers > 0)
