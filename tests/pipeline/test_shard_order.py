"""`preprocess --order`: training shards mix classes (mixed, the default) instead of holding one class folder each."""
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from hostile_files import jpeg_bytes, photo
from pipeline import contract, verify
from pipeline.datasets import Listing, list_dataset
from pipeline.output_folder import OutputConflict
from pipeline.plan import plan_shards
from trainer.data import EpochSampler

NAMES = ("astronaut", "coffee", "chelsea", "rocket")


def _class_listing(classes=100, per_class=64):
    return Listing("folder", Path("."), tuple((f"c{c:03d}/{i:03d}.jpg", "train")
                                               for c in range(classes) for i in range(per_class)))


def _classes(keys):
    return {k.split("/")[0] for k in keys}


def test_mixed_shards_and_their_prefix_spread_over_the_classes_where_name_order_holds_one_class_each():
    listing = _class_listing()
    mixed, by_name = plan_shards(listing, 64, "mixed"), plan_shards(listing, 64, "name")
    assert sorted(k for s in mixed for k in s.keys) == sorted(k for s in by_name for k in s.keys) == \
        listing.split("train")                                       # the same samples, only the order differs
    assert all(len(_classes(s.keys)) == 1 for s in by_name)
    assert min(len(_classes(s.keys)) for s in mixed) >= 30           # 64 draws from 100 classes: ~48 expected
    first = [k for s in mixed for k in s.keys][:200]                 # what `fit` validates first (val_limit)
    assert len(_classes(first)) >= 80
    assert plan_shards(listing, 64, "mixed") == mixed                # stable: the same plan on every run


class _Planned:
    """What EpochSampler reads of a ShardDataset."""

    def __init__(self, specs, window):
        self.counts = np.array([len(s.keys) for s in specs])
        self.starts, self.window = np.concatenate([[0], np.cumsum(self.counts)]), window

    def __len__(self):
        return int(self.counts.sum())


def test_consecutive_training_batches_see_every_class_only_with_mixed_shards():
    """The loader shuffles within windows of shards: over one window's batches, name-ordered shards offer only
    the window's few classes."""
    listing = _class_listing()
    seen = {}
    for order in ("mixed", "name"):
        specs = plan_shards(listing, 64, order)
        keys = [k for s in specs for k in s.keys]
        drawn = EpochSampler(_Planned(specs, window=8), seed=3).order(0)[:8 * 64]   # one window: 8 shards
        seen[order] = len(_classes(keys[i] for i in drawn))
    assert seen["name"] == 8 and seen["mixed"] >= 95, seen


def test_preprocess_writes_mixed_shards_by_default_and_name_order_on_request(tmp_path):
    root = tmp_path / "classes"
    for c in range(3):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(4):
            (root / f"class{c}" / f"{i}.jpg").write_bytes(jpeg_bytes(photo(NAMES[(c + i) % 4], 48 + 4 * i, 40)))
    keys = {}
    for order in ("mixed", "name"):
        out = tmp_path / order
        args = ["preprocess", "folder", "--root", str(root), "--out", str(out), "--size", "32", "--min-side", "16",
                "--shard-size", "4", "--jobs", "1"] + (["--order", order] if order == "name" else [])
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
        assert verify.verify_folder(out) == []
        keys[order] = []
        for path in contract.shard_paths(out, "train"):
            with contract.open_shard(path) as shard:
                keys[order].append(shard.keys())
    listed = list_dataset("folder", str(root)).split("train")
    assert [k for ks in keys["name"] for k in ks] == listed
    mixed = [k for ks in keys["mixed"] for k in ks]
    assert sorted(mixed) == listed and mixed != listed
    assert sum(len(_classes(ks)) for ks in keys["mixed"]) > sum(len(_classes(ks)) for ks in keys["name"])


def test_a_larger_limit_resumes_from_the_shards_of_a_smaller_one(tmp_path):
    """--limit keeps the keys first in the same hash order, so in mixed order a limited run's shards are the
    first shards of a larger one: growing --limit resumes instead of starting over; shrinking it is refused."""
    from pipeline.config import PrepConfig
    from pipeline.preprocess import run
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(12):
        (root / f"{i:02d}.jpg").write_bytes(jpeg_bytes(photo(NAMES[i % 4], 48 + 2 * i, 40)))
    cfg = dict(dataset="folder", root=str(root), out_dir=str(tmp_path / "out"), size=32, min_side=16, shard_size=2,
               jobs=1, test_fraction=0.0)
    assert run(PrepConfig(limit=6, **cfg), progress=False).written == 6
    grown = run(PrepConfig(limit=12, **cfg), progress=False)          # the same job, grown: no --overwrite
    assert grown.reused == 3 and grown.written == 12                  # 3 of its 6 shards came from the first run
    with pytest.raises(OutputConflict, match="with limit (6|12).*; this run has limit 4"):
        run(PrepConfig(limit=4, **cfg), progress=False)               # a smaller one would delete shards: asked
