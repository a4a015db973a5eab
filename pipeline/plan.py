"""Which inputs go in which shard file: step 1 of `preprocess` (pipeline/preprocess.py), also what a rerun, the
output-folder check and `verify --sources` compare against.

Each split's keys, in shard order (pipeline.datasets.shard_order), cut into files of `shard_size` consecutive
keys: shard `train-00003.h5` always holds the same inputs, whatever --jobs or the backend.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from pipeline.datasets import Listing, shard_order


@dataclass(frozen=True)
class ShardSpec:
    split: str
    index: int
    keys: tuple[str, ...]
    members: tuple = ()           # per key, its archives.Member inside a tar, or None for the file root/key

    @property
    def file(self) -> str:
        return f"{self.split}-{self.index:05d}.h5"

    def inputs_sha(self) -> str:
        return hashlib.sha1("\n".join(self.keys).encode()).hexdigest()


def plan_shards(listing: Listing, shard_size: int, order: str = "mixed") -> list[ShardSpec]:
    specs = []
    for split in ("train", "test"):
        keys = shard_order(listing.split(split), order)
        specs += [ShardSpec(split, i // shard_size, tuple(keys[i:i + shard_size]),
                            tuple(listing.members.get(k) for k in keys[i:i + shard_size]) if listing.members else ())
                  for i in range(0, len(keys), shard_size)]
    return specs
