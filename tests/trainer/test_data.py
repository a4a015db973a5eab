"""Crops and flips keep L and its 1/4-resolution targets aligned; sampling works with DistributedSampler."""
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from pipeline import contract, verify
from trainer.data import EpochSampler, ShardDataset, make_loader

S, T, K = 32, 8, 3


@pytest.fixture(scope="module")
def coded(tmp_path_factory):
    """A shard whose targets are functions of the L block they sit under, so any misalignment shows:
    ab[0] = block mean of L, ab[1] = L at the block's top-left pixel, nn_idx[k] = ab[1] + k, nn_w[k] = that / 1000."""
    folder = tmp_path_factory.mktemp("coded")
    rng = np.random.default_rng(0)
    n = 12
    L = rng.integers(0, 256, (n, S, S), dtype=np.uint8)
    blocks = L.reshape(n, T, 4, T, 4).astype(np.float32)
    ab = np.stack([blocks.mean((2, 4)), blocks[:, :, 0, :, 0]], 1).astype(np.float16)
    nn_idx = np.stack([blocks[:, :, 0, :, 0] + k for k in range(K)], 1).astype(np.uint16)
    nn_w = (nn_idx / 1000).astype(np.float16)
    contract.write_shard(folder / "train-00000.h5", L, ab, nn_idx, nn_w, [f"img{i}.png" for i in range(n)])
    contract.write_manifest(folder, {"dataset": "coded", "config": {"size": S, "knn": K},
                                     "shards": [{"file": "train-00000.h5", "split": "train", "count": n}]})
    return folder


def _check_aligned(L, ab, nn_idx, nn_w):
    c = L.shape[-1]
    blocks = L.reshape(c // 4, 4, c // 4, 4).astype(np.float32)
    np.testing.assert_allclose(ab[0].astype(np.float32), blocks.mean((1, 3)), rtol=2e-3, atol=0.1)
    # after a flip the block's stored corner pixel is its top-right one
    return blocks[:, 0, :, 0], blocks[:, 0, :, 3]


def test_crops_and_flips_keep_every_array_aligned(coded):
    ds = ShardDataset(coded, crop=24, flip=True, seed=3)
    seen_offsets, seen_flips = set(), set()
    for epoch in range(6):
        ds.epoch = epoch
        for i in range(len(ds)):
            s = ds[i]
            y, x, flip = ds.placement(i)
            assert y % 4 == 0 and x % 4 == 0 and 0 <= y <= S - 24 and 0 <= x <= S - 24
            seen_offsets.add((y, x))
            seen_flips.add(flip)
            assert s["L"].shape == (24, 24) and s["L"].dtype == np.uint8
            assert s["ab"].shape == (2, 6, 6) and s["nn_idx"].shape == s["nn_w"].shape == (K, 6, 6)
            left, right = _check_aligned(s["L"], s["ab"], s["nn_idx"], s["nn_w"])
            corner = right if flip else left
            np.testing.assert_array_equal(s["ab"][1].astype(np.float32), corner)
            for k in range(K):
                np.testing.assert_array_equal(s["nn_idx"][k], corner + k)
            np.testing.assert_allclose(s["nn_w"][0].astype(np.float32), corner / 1000, rtol=1e-3)
            with contract.open_shard(coded / "train-00000.h5") as sh:     # L really is the stored crop
                stored = sh.L[i][y:y + 24, x:x + 24]
            np.testing.assert_array_equal(s["L"], stored[:, ::-1] if flip else stored)
    assert len(seen_offsets) > 4 and seen_flips == {True, False}
    unflipped = ShardDataset(coded, crop=24, flip=False)
    assert not any(unflipped.placement(i, epoch)[2] for i in range(len(unflipped)) for epoch in range(3))


def test_same_batches_for_any_worker_count_and_per_epoch(coded):
    ds = ShardDataset(coded, crop=24, seed=1)
    def batches(workers, epoch):
        sampler = EpochSampler(ds, seed=1)
        sampler.set_position(epoch)
        return list(make_loader(ds, 4, sampler, workers))
    a, b, c = batches(0, 0), batches(2, 0), batches(0, 1)
    assert len(a) == 3 and a[0]["L"].dtype == torch.uint8 and a[0]["nn_idx"].dtype == torch.int16
    for x, y in zip(a, b):
        assert x["key"] == y["key"] and torch.equal(x["L"], y["L"]) and torch.equal(x["nn_w"], y["nn_w"])
    assert [x["key"] for x in a] != [x["key"] for x in c]            # a new epoch reshuffles


def test_distributed_samplers_split_the_data(coded):
    ds = ShardDataset(coded, crop=24)
    ranks = [list(DistributedSampler(ds, num_replicas=2, rank=r, seed=0)) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(len(ds)))
    batch = ds.__getitems__(ranks[1][:4])                          # plain ints from DistributedSampler work
    assert batch["L"].shape == (4, 24, 24) and batch["index"].tolist() == ranks[1][:4]
    mine = [[i for _, i in EpochSampler(ds, 2, r, seed=0)] for r in (0, 1)]
    assert sorted(mine[0] + mine[1]) == list(range(len(ds))) and len(mine[0]) == len(mine[1]) == 6
    s = EpochSampler(ds, 1, 0, seed=0)
    s.set_position(0, start=5)                                      # resume: the rest of the epoch only
    assert len(s) == len(ds) - 5 and list(s) == list(EpochSampler(ds, 1, 0, seed=0))[5:]


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """20 shards of 6 samples (one of them empty), so that windows and the handle pool matter."""
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(1)
    shards = []
    for j in range(20):
        n = 0 if j == 7 else 6
        L = rng.integers(0, 256, (n, S, S), dtype=np.uint8)
        ab = rng.normal(0, 20, (n, 2, T, T)).astype(np.float16)
        idx = rng.integers(0, 200, (n, K, T, T)).astype(np.uint16)
        w = np.full((n, K, T, T), 1 / K, np.float16)
        contract.write_shard(folder / f"train-{j:05d}.h5", L, ab, idx, w, [f"s{j}/img{i}.png" for i in range(n)])
        shards.append({"file": f"train-{j:05d}.h5", "split": "train", "count": n})
    contract.write_manifest(folder, {"dataset": "many", "config": {"size": S, "knn": K}, "shards": shards})
    return folder


def test_every_epoch_is_a_permutation_drawn_window_by_window(many):
    ds = ShardDataset(many, crop=24, window=4)
    assert len(ds) == 19 * 6 and ds.counts.shape == (20,)           # the index: per shard, not per sample
    assert [ds.locate(i) for i in (0, 41, 42, 113)] == [(0, 0), (6, 5), (8, 0), (19, 5)]   # shard 7 is empty
    sampler = EpochSampler(ds, seed=2)
    orders = [sampler.order(e) for e in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(len(ds)))      # each epoch: every sample once
        shard_of = np.array([ds.locate(i)[0] for i in order])
        # windows of 4 shards: a shard's 6 samples lie within 4 * 6 consecutive draws, mixed with other shards'
        spans = [np.ptp(np.flatnonzero(shard_of == s)) for s in set(shard_of.tolist())]
        assert max(spans) < 24 and len(set(shard_of[:12].tolist())) > 1
    assert len({tuple(o) for o in orders}) == 3                     # and a new order every epoch
    assert not np.array_equal(EpochSampler(ds, seed=3).order(0), orders[0])


def test_open_handles_stay_bounded_and_each_shard_opens_once_an_epoch(many, monkeypatch):
    opened = []
    real = contract.open_shard
    monkeypatch.setattr(contract, "open_shard", lambda p: opened.append(p) or real(p))
    ds = ShardDataset(many, crop=24, window=3)
    opened.clear()
    order = [(0, int(i)) for i in EpochSampler(ds, seed=0).order(0)]
    most = 0
    for b in range(0, len(order), 5):
        ds.__getitems__(order[b:b + 5])
        most = max(most, len(ds._open))
    assert most <= ds.max_open == 6
    assert len(opened) == 19                                        # each non-empty shard once, none reopened
    whole = ShardDataset(many, crop=24, window=3)                   # random order, no windows: the pool evicts
    whole.__getitems__(list(range(0, len(whole), 2)))
    assert len(whole._open) == whole.max_open


def test_each_file_is_opened_once_per_process(coded, monkeypatch):
    opened = []
    real = contract.open_shard
    monkeypatch.setattr(contract, "open_shard", lambda p: opened.append(p) or real(p))
    ds = ShardDataset(coded, crop=24)
    opened.clear()
    ds.__getitems__(list(range(8)))
    ds.__getitems__(list(range(4, 12)))
    assert len(opened) == 1


def test_crop_larger_than_the_shards_is_refused(coded):
    with pytest.raises(contract.ShardFormatError, match="crop 40 is larger than the stored size 32"):
        ShardDataset(coded, crop=40)


def test_synthetic_shards_used_by_tests_and_benches_pass_verification(shards):
    assert verify.verify_folder(shards, deep=True) == []
    assert len(ShardDataset(shards, "train", crop=32)) == 48 and len(ShardDataset(shards, "test", crop=32)) == 8


def test_a_rotten_chunk_is_reported_with_its_file_and_key(coded, tmp_path):
    import shutil
    folder = Path(shutil.copytree(coded, tmp_path / "rot"))
    path = folder / "train-00000.h5"
    with contract.open_shard(path) as sh:
        offset = sh.L.id.get_chunk_info(3).byte_offset               # the chunk of sample 3's L
    raw = bytearray(path.read_bytes())
    raw[offset + 100] ^= 0xFF                                        # one flipped byte: fletcher32 catches it
    path.write_bytes(bytes(raw))
    ds = ShardDataset(folder, crop=24)
    ds[2]                                                            # neighbours still read
    with pytest.raises(contract.ShardFormatError, match=r"train-00000.h5: sample 3 \(img3.png\) is unreadable"):
        ds[3]
