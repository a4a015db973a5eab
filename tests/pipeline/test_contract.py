import numpy as np
import pytest

from pipeline import contract


def _arrays(n=3, s=16, k=5, seed=0):
    rng = np.random.default_rng(seed)
    t = s // contract.TARGET_STRIDE
    w = rng.random((n, k, t, t)).astype(np.float32)
    return dict(L=rng.integers(0, 256, (n, s, s), dtype=np.uint8),
                ab=rng.normal(0, 30, (n, 2, t, t)).astype(np.float16),
                nn_idx=rng.integers(0, 262, (n, k, t, t)).astype(np.uint16),
                nn_w=(w / w.sum(1, keepdims=True)).astype(np.float16),
                keys=[f"a/img_{i}.jpg" for i in range(n)])


def test_write_then_open_returns_same_arrays_and_attrs(tmp_path):
    arr = _arrays()
    path = tmp_path / "train-00000.h5"
    contract.write_shard(path, **arr, attrs={"split": "train", "config": {"size": 16, "knn": 5}})
    with contract.open_shard(path) as sh:
        assert len(sh) == 3 and sh.size == 16 and sh.knn == 5
        for name in ("L", "ab", "nn_idx", "nn_w"):
            np.testing.assert_array_equal(sh.read(slice(None))[name], arr[name])
        assert sh.keys() == arr["keys"]
        assert sh.attrs["split"] == "train" and '"knn": 5' in sh.attrs["config"]
    assert list(tmp_path.iterdir()) == [path]          # no temporary file left behind


def test_open_rejects_truncated_and_foreign_files(tmp_path):
    arr = _arrays()
    good = tmp_path / "a.h5"
    contract.write_shard(good, **arr)
    bad = tmp_path / "b.h5"
    bad.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(contract.ShardFormatError, match="b.h5"):
        contract.open_shard(bad)


def test_failed_write_leaves_old_file(tmp_path):
    arr = _arrays()
    path = tmp_path / "a.h5"
    contract.write_shard(path, **arr)
    before = path.read_bytes()
    with pytest.raises(AssertionError):
        contract.write_shard(path, **{**arr, "L": arr["L"].astype(np.int16)})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_prior_roundtrip_and_manifest_version(tmp_path):
    p = contract.Prior(centers=np.zeros((4, 2), np.float32), counts=np.arange(4), prob=np.full(4, .25),
                       weights=np.ones(4), lam=0.5, sigma=5.0)
    p.save(tmp_path / contract.PRIOR)
    q = contract.Prior.load(tmp_path / contract.PRIOR)
    assert q.Q == 4 and q.lam == 0.5 and np.array_equal(q.counts, p.counts)
    contract.write_manifest(tmp_path, {"shards": [{"file": "a.h5", "split": "train", "count": 1}]})
    assert contract.shard_paths(tmp_path, "train") == [tmp_path / "a.h5"]
    assert contract.shard_paths(tmp_path, "test") == []
    (tmp_path / contract.MANIFEST).write_text('{"format_version": 0, "shards": []}')
    with pytest.raises(contract.ShardFormatError, match="preprocess again"):
        contract.read_manifest(tmp_path)


def test_l_roundtrip_within_half_a_step():
    L = np.linspace(0, 100, 1001, dtype=np.float32)
    assert np.abs(contract.uint8_to_l(contract.l_to_uint8(L)) - L).max() <= contract.L_SCALE / 2 + 1e-5


def test_written_files_follow_the_umask_not_mkstemp(tmp_path):
    path = tmp_path / "a.h5"
    contract.write_shard(path, **_arrays())
    assert path.stat().st_mode & 0o777 == 0o666 & ~contract._UMASK     # e.g. 0644: others can read shards


def test_open_shard_holds_no_chunk_cache_and_a_small_metadata_cache(tmp_path):
    """Loader workers keep every shard they read open: per-handle caches are what grows with the dataset."""
    contract.write_shard(tmp_path / "a.h5", **_arrays())
    with contract.open_shard(tmp_path / "a.h5") as sh:
        fapl = sh.h5.id.get_access_plist()
        assert fapl.get_cache()[2] == 0                          # chunk cache bytes
        assert fapl.get_mdc_config().max_size <= 64 * 1024      # HDF5's default grows to 32 MiB
        np.testing.assert_array_equal(sh.read(1)["L"], _arrays()["L"][1])


@pytest.mark.parametrize("storage", sorted(contract.STORAGE))
def test_every_storage_option_reads_back_bit_for_bit(tmp_path, storage):
    arr = _arrays(n=4, s=32)
    contract.write_shard(tmp_path / "a.h5", **arr, storage=storage)
    with contract.open_shard(tmp_path / "a.h5") as sh:
        assert sh.storage == storage and sh.attrs["format_version"] == contract.FORMAT_VERSION
        for name in contract.ARRAYS:
            np.testing.assert_array_equal(sh.read(slice(None))[name], arr[name])
            assert sh.h5[name].dtype == arr[name].dtype and sh.h5[name].fletcher32
        for i in range(4):                                       # the loader's low-level read: the same arrays
            for name, got in zip(contract.ARRAYS, sh.sample(i)):
                np.testing.assert_array_equal(got, arr[name][i])


def test_the_default_storage_compresses_and_the_cli_knows_every_option(tmp_path):
    from pipeline.config import STORAGE, PrepConfig
    assert tuple(contract.STORAGE) == STORAGE and PrepConfig().storage == contract.DEFAULT_STORAGE
    arr = _arrays(n=4, s=64)                  # targets as smooth as a photo's: neighbouring pixels share bins
    arr["nn_idx"] = np.broadcast_to(np.arange(5, dtype=np.uint16)[:, None, None] + 120, (4, 5, 16, 16)).copy()
    arr["nn_w"] = np.broadcast_to(np.float16([.4, .3, .15, .1, .05])[:, None, None], (4, 5, 16, 16)).copy()
    for storage in ("none", contract.DEFAULT_STORAGE):
        contract.write_shard(tmp_path / f"{storage}.h5", **arr, storage=storage)
    assert (tmp_path / f"{contract.DEFAULT_STORAGE}.h5").stat().st_size < 0.8 * (tmp_path / "none.h5").stat().st_size
    with pytest.raises(ValueError, match="unknown shard storage 'lz77'"):
        contract.write_shard(tmp_path / "x.h5", **arr, storage="lz77")


def _write_by_hand(path, version, arr, storage=None):
    """A shard as another colorfast wrote it: format 1 had no `storage` attribute and no compression."""
    import h5py
    with h5py.File(path, "w") as h:
        for name in contract.ARRAYS:
            h.create_dataset(name, data=arr[name], chunks=(1, *arr[name].shape[1:]), fletcher32=True)
        h.create_dataset("key", data=np.array(arr["keys"], dtype=object), dtype=h5py.string_dtype("utf-8"))
        h.attrs["format_version"] = version
        if storage:
            h.attrs["storage"] = storage


def test_format_1_shards_and_manifests_still_read_and_other_versions_are_refused(tmp_path):
    arr = _arrays()
    _write_by_hand(tmp_path / "v1.h5", 1, arr)
    with contract.open_shard(tmp_path / "v1.h5") as sh:
        assert sh.storage == "none" and sh.keys() == arr["keys"]
        np.testing.assert_array_equal(sh.read(slice(None))["nn_w"], arr["nn_w"])
    (tmp_path / contract.MANIFEST).write_text('{"format_version": 1, "shards": [{"file": "v1.h5", "split": '
                                              '"train", "count": 3}]}')
    assert contract.shard_paths(tmp_path, "train") == [tmp_path / "v1.h5"]
    _write_by_hand(tmp_path / "v3.h5", 3, arr)
    with pytest.raises(contract.ShardFormatError, match=r"v3.h5: format version 3 \(this colorfast reads 1, 2\)"):
        contract.open_shard(tmp_path / "v3.h5")
    _write_by_hand(tmp_path / "odd.h5", 2, arr, storage="brotli")
    with pytest.raises(contract.ShardFormatError, match="storage 'brotli'"):
        contract.open_shard(tmp_path / "odd.h5")
    (tmp_path / contract.MANIFEST).write_text('{"format_version": 3, "shards": []}')
    with pytest.raises(contract.ShardFormatError, match="reads versions 1, 2; preprocess again"):
        contract.read_manifest(tmp_path)
