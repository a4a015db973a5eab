import numpy as np
import pytest

from pipeline.bins import in_gamut_centers
from pipeline.soft_encode import SoftEncoder


@pytest.fixture(scope="module")
def centers():
    return in_gamut_centers()


def _brute_force(ab, centers, k, sigma):
    """Exact reference: float64 squared distances to every bin, stable sort (ties to the lower index)."""
    d2 = ((ab[:, None, :] - centers.astype(np.float64)[None]) ** 2).sum(-1)      # (P, Q)
    order = np.argsort(d2, axis=1, kind="stable")[:, :k]
    d = np.take_along_axis(d2, order, 1)
    g = np.exp(-(d - d[:, :1]) / (2 * sigma ** 2))
    return order, g / g.sum(1, keepdims=True), d2


@pytest.mark.parametrize("k, sigma, n", [(5, 5.0, 120_000), (10, 5.0, 30_000), (1, 3.0, 20_000)])
def test_matches_brute_force_on_random_ab(centers, k, sigma, n):
    rng = np.random.default_rng(k)
    # mostly in the sRGB ab range, some far outside it (those scan every bin), all rounded to float16 as stored
    ab = np.concatenate([rng.uniform(-110, 110, (n - 1000, 2)), rng.uniform(-300, 300, (1000, 2))])
    ab = ab.astype(np.float16).astype(np.float64)
    idx, w = SoftEncoder(centers, k, sigma).encode_points(ab)
    ref_idx, ref_w, d2 = _brute_force(ab, centers, k, sigma)
    assert idx.dtype == np.uint16 and w.dtype == np.float16 and idx.shape == (n, k)
    differ = np.any(idx != ref_idx, axis=1)
    # a differing row is only allowed where the distances are exactly tied (same sorted distances)
    ours_d = np.take_along_axis(d2, idx[differ].astype(np.int64), 1) if differ.any() else np.zeros((0, k))
    assert np.array_equal(ours_d, np.take_along_axis(d2[differ], ref_idx[differ], 1))
    assert np.abs(w.astype(np.float64) - ref_w).max() < 1e-3
    assert np.abs(w.astype(np.float64).sum(1) - 1).max() < 2e-3


def test_ties_go_to_the_lower_bin_index(centers):
    # (5, 5) lies exactly between four bin centres: a stable argsort keeps them in index order
    ab = np.array([[5.0, 5.0], [0.0, 5.0], [-15.0, 25.0]])
    idx, _ = SoftEncoder(centers, 4, 5.0).encode_points(ab)
    ref, _, _ = _brute_force(ab, centers, 4, 5.0)
    assert np.array_equal(idx, ref)


def test_planar_shard_layout(centers):
    rng = np.random.default_rng(1)
    ab = rng.normal(0, 30, (3, 2, 8, 8)).astype(np.float16)
    idx, w = SoftEncoder(centers, 5, 5.0).encode(ab)
    assert idx.shape == w.shape == (3, 5, 8, 8)
    ref_idx, _, _ = _brute_force(ab.astype(np.float64)[1, :, 2, 3][None], centers, 5, 5.0)
    assert np.array_equal(idx[1, :, 2, 3], ref_idx[0])
    assert np.all(w[:, 0] >= w[:, 1])                                   # nearest first
    empty = SoftEncoder(centers, 5, 5.0).encode(np.zeros((0, 2, 8, 8), np.float16))
    assert empty[0].shape == (0, 5, 8, 8)


def test_rejects_impossible_settings(centers):
    with pytest.raises(ValueError, match="knn"):
        SoftEncoder(centers, len(centers) + 1, 5.0)
    with pytest.raises(ValueError, match="sigma"):
        SoftEncoder(centers, 5, 0.0)


def test_pickles_small_and_once_per_process(centers):
    """The encoder rides along with every shard task: it must pickle to a fraction of its tables, come back
    encoding exactly the same, and unpickle to one shared object per process (no per-task rebuild)."""
    import pickle

    from pipeline import soft_encode
    enc = SoftEncoder(centers, 5, 5.0)
    blob = pickle.dumps(enc)
    assert len(blob) < (enc.offsets.nbytes + enc.cand.nbytes) / 4
    soft_encode._UNPACKED.clear()                     # as in a fresh worker
    first, again = pickle.loads(blob), pickle.loads(pickle.dumps(enc))
    assert first is again and first is not enc
    assert np.array_equal(first.offsets, enc.offsets) and np.array_equal(first.cand, enc.cand)
    ab = np.random.default_rng(2).uniform(-120, 120, (2, 2, 16, 16)).astype(np.float16)
    for mine, theirs in zip(enc.encode(ab), first.encode(ab)):
        assert np.array_equal(mine, theirs)
    other = pickle.loads(pickle.dumps(SoftEncoder(centers, 3, 5.0)))   # other settings: another encoder
    assert other.k == 3 and other is not first
