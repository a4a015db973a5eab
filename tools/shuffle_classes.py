"""How well the training loader mixes classes, for each shard order (`preprocess --order`), at ImageNet's shape.

    python tools/shuffle_classes.py [--classes 1000] [--per-class 1281] [--shard-size 256] [--batch 40]

Builds the listing of a class-folder dataset (train/nXXXXXXXX/nXXXXXXXX_I.JPEG; no images are needed: the order
depends only on the names), plans its shards with the real `plan_shards`, and draws one epoch with the real
`trainer.data.EpochSampler` (windows of `trainer.data.WINDOW` shards). Prints, per order: distinct classes in a
batch, in 100 consecutive batches, and in the first 1,000 samples of the split (what validation inside `fit`
and `evaluate --limit 1000` score). Produced the table in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import ORDERS                       # noqa: E402
from pipeline.datasets import Listing                    # noqa: E402
from pipeline.preprocess import plan_shards              # noqa: E402
from trainer.data import WINDOW, EpochSampler            # noqa: E402


class _PlannedShards:
    """What EpochSampler reads of a ShardDataset: samples per shard file, their starts, the shuffle window."""

    def __init__(self, counts: np.ndarray):
        self.counts, self.window = counts, WINDOW
        self.starts = np.concatenate([[0], np.cumsum(counts)])

    def __len__(self) -> int:
        return int(self.counts.sum())


def class_mixing(classes: int, per_class: int, shard_size: int, batch: int, order: str, seed: int = 0) -> dict:
    items = tuple((f"n{c:08d}/n{c:08d}_{i}.JPEG", "train") for c in range(classes) for i in range(per_class))
    specs = plan_shards(Listing("imagenet", Path("."), items), shard_size, order)
    label = np.array([int(k[1:9]) for s in specs for k in s.keys])          # the class of each stored sample
    drawn = label[EpochSampler(_PlannedShards(np.array([len(s.keys) for s in specs])), seed=seed).order(0)]
    batches = drawn[:len(drawn) // batch * batch].reshape(-1, batch)
    runs = [len(np.unique(batches[i:i + 100])) for i in range(0, len(batches) - 99, 100)]
    return {"order": order, "classes per batch": round(float(np.mean([len(np.unique(b)) for b in batches])), 1),
            "classes per 100 consecutive batches (min / mean)": f"{min(runs)} / {np.mean(runs):.0f}",
            "classes in the first 1,000 samples": len(np.unique(label[:1000]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--per-class", type=int, default=1281)
    ap.add_argument("--shard-size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=40)
    args = ap.parse_args()
    print(f"{args.classes} classes x {args.per_class} images, shards of {args.shard_size}, window {WINDOW} shards, "
          f"batch {args.batch}")
    for order in ORDERS:
        print(class_mixing(args.classes, args.per_class, args.shard_size, args.batch, order))


if __name__ == "__main__":
    main()
