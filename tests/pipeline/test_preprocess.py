import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hostile_files import SHARED, jpeg_bytes, photo, write_hostile
from pipeline import contract, verify
from pipeline.config import PrepConfig
from pipeline.output_folder import OutputConflict
from pipeline.preprocess import run

CHECKER = SHARED / "tools" / "check_shards.py"


def _root_with_photos(tmp_path, n=6):
    """A folder of the hostile set plus n ordinary colour photos in a subfolder."""
    root = tmp_path / "data"
    expected = {f"hostile/{k}": v for k, v in write_hostile(root / "hostile").items()}
    for i in range(n):
        name = ("astronaut", "chelsea", "coffee", "rocket")[i % 4]
        (root / "good").mkdir(parents=True, exist_ok=True)
        (root / "good" / f"{i}.jpg").write_bytes(jpeg_bytes(photo(name, 80 + 8 * i, 120)))
        expected[f"good/{i}.jpg"] = "ok"
    return root, expected


def _cfg(root, out, **kw):
    return PrepConfig(**{"dataset": "folder", "root": str(root), "out_dir": str(out), "size": 32, "min_side": 16,
                         "shard_size": 4, "jobs": 1, "test_fraction": 0.3, **kw})


def _arrays(out):
    """{file: {dataset: array}} of every shard, plus the prior's arrays."""
    got = {}
    for p in sorted(Path(out).glob("*.h5")):
        with h5py.File(p) as h:
            got[p.name] = {d: h[d][:] for d in contract.DATASETS}
    with np.load(Path(out) / contract.PRIOR) as z:
        got["prior"] = {k: z[k] for k in z.files}
    return got


def _same(a, b):
    assert a.keys() == b.keys()
    for f in a:
        assert a[f].keys() == b[f].keys()
        for d in a[f]:
            assert np.array_equal(a[f][d], b[f][d]), (f, d)


def test_hostile_folder_every_input_written_or_skipped_with_its_reason(tmp_path):
    root, expected = _root_with_photos(tmp_path)
    (root / "listed_but_gone.jpg").symlink_to(root / "nowhere.jpg")       # a dangling entry: missing on read
    expected["listed_but_gone.jpg"] = "missing"
    result = run(_cfg(root, tmp_path / "out"), progress=False)
    manifest = contract.read_manifest(tmp_path / "out")
    c = manifest["counts"]
    assert c["seen"] == len(expected) == c["written"] + c["skipped"] == result.seen
    skipped = {s["key"]: s["reason"] for s in manifest["skipped"]}
    written = set()
    for path in contract.shard_paths(tmp_path / "out"):
        with contract.open_shard(path) as sh:
            written |= set(sh.keys())
            if len(sh):
                assert sh.size == 32 and sh.knn == 5 and sh.ab.shape[1:] == (2, 8, 8)
                w = sh.nn_w[:].astype(np.float32)
                assert np.abs(w.sum(1) - 1).max() < 2e-3
    for key, outcome in expected.items():
        if outcome == "ok":
            assert key in written, key
        else:
            assert skipped[key].startswith(outcome), (key, skipped[key])
    assert result.by_reason == {"empty": 1, "grayscale": 2, "missing": 1, "too small": 1, "truncated": 1,
                                "unknown format": 1}
    assert "skipped     1  truncated" in result.summary()
    prior = contract.Prior.load(tmp_path / "out" / contract.PRIOR)
    assert abs(prior.prob.sum() - 1) < 1e-6 and abs((prior.prob * prior.weights).sum() - 1) < 1e-6
    assert prior.counts.sum() == 8 * 8 * sum(s["count"] for s in manifest["shards"] if s["split"] == "train")
    assert verify.verify_folder(tmp_path / "out") == []


def test_outside_checker_accepts_the_shards(tmp_path):
    if not CHECKER.exists():
        pytest.skip("../shared/tools is absent")
    root, _ = _root_with_photos(tmp_path)
    run(_cfg(root, tmp_path / "out", size=64), progress=False)
    import hdf5plugin                 # the default storage's zstd filter, for a reader that knows only h5py
    env = {**os.environ, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH}
    proc = subprocess.run([sys.executable, str(CHECKER), str(tmp_path / "out"), str(root)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1].startswith("ok"), proc.stdout


def test_jobs_backend_and_resume_do_not_change_the_result(tmp_path):
    root, _ = _root_with_photos(tmp_path)
    one = run(_cfg(root, tmp_path / "one", jobs=1), progress=False)
    two = run(_cfg(root, tmp_path / "two", jobs=2), progress=False)        # loky worker processes
    assert (one.written, one.skipped, one.shards) == (two.written, two.skipped, two.shards)
    _same(_arrays(tmp_path / "one"), _arrays(tmp_path / "two"))
    m1, m2 = (json.loads((tmp_path / d / contract.MANIFEST).read_text()) for d in ("one", "two"))
    for m in (m1, m2):
        m.pop("created_utc"); m["config"].pop("jobs"); m["config"].pop("out_dir")
    assert m1 == m2

    # rerun: every shard reused; then lose one shard and leave a killed run's temporary file behind
    before = _arrays(tmp_path / "two")
    again = run(_cfg(root, tmp_path / "two", jobs=2), progress=False)
    assert again.reused == again.shards
    victim = sorted((tmp_path / "two").glob("train-*.h5"))[1]
    victim.unlink()
    (tmp_path / "two" / f".{victim.name}.colorfast-4242-abc123.tmp").write_bytes(b"half a shard")
    resumed = run(_cfg(root, tmp_path / "two", jobs=1), progress=False)
    assert resumed.reused == resumed.shards - 1
    assert not list((tmp_path / "two").glob(".*.tmp"))
    _same(before, _arrays(tmp_path / "two"))

    # a different encoding config reuses nothing, and replaces the shards only when told to (test_output_folder.py)
    with pytest.raises(OutputConflict, match="knn 5; this run has knn 3"):
        run(_cfg(root, tmp_path / "two", knn=3), progress=False)
    other = run(_cfg(root, tmp_path / "two", knn=3), progress=False, overwrite=True)
    assert other.reused == 0
    with contract.open_shard(sorted((tmp_path / "two").glob("train-*.h5"))[0]) as sh:
        assert sh.knn == 3

    # fewer inputs (one split only): the other split's shards go, and the folder stays consistent
    only_test = run(_cfg(root, tmp_path / "two", knn=3, split="test"), progress=False, overwrite=True)
    assert only_test.removed > 0 and "removed" in only_test.summary()
    assert not list((tmp_path / "two").glob("train-*.h5")) and "uniform prior" in only_test.prior_note
    assert verify.verify_folder(tmp_path / "two") == []


def test_a_shard_whose_inputs_were_all_skipped_is_recorded(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg_bytes(photo()))
    (root / "b.jpg").write_bytes(b"")
    result = run(_cfg(root, tmp_path / "out", shard_size=1, test_fraction=0.0, order="name"), progress=False)
    manifest = contract.read_manifest(tmp_path / "out")
    assert [(s["file"], s["count"]) for s in manifest["shards"]] == [("train-00000.h5", 1), ("train-00001.h5", 0)]
    assert result.written == 1 and manifest["skipped"] == [{"key": "b.jpg", "reason": "empty: 0 bytes"}]
    assert run(_cfg(root, tmp_path / "out", shard_size=1, test_fraction=0.0, order="name"), progress=False).reused == 2


def test_sun_scenes_end_to_end_with_a_listed_but_missing_file(tmp_path):
    root = tmp_path / "SUN397"
    for i, key in enumerate(["a/abbey/sun_1.jpg", "a/abbey/sun_2.jpg", "b/beach/sun_3.jpg"]):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(jpeg_bytes(photo(("astronaut", "coffee", "rocket")[i])))
    (tmp_path / "Partitions").mkdir()
    (tmp_path / "Partitions" / "Training_01.txt").write_text("/a/abbey/sun_1.jpg\n/a/abbey/sun_2.jpg\n/a/abbey/gone.jpg\n")
    (tmp_path / "Partitions" / "Testing_01.txt").write_text("/b/beach/sun_3.jpg\n")
    result = run(_cfg(root, tmp_path / "out", dataset="sun_scenes"), progress=False)
    assert (result.splits, result.by_reason) == ({"train": 2, "test": 1}, {"missing": 1})
    manifest = contract.read_manifest(tmp_path / "out")
    assert manifest["root"] == str(root.resolve()) and manifest["dataset"] == "sun_scenes"


def test_fast_stored_l_is_the_contract_l_to_uint8_to_the_byte():
    """The pipeline quantizes L with one OpenCV pass; readers rely on contract.l_to_uint8's rounding (half to
    even, saturated), so the two must agree everywhere, exact half steps included."""
    from pipeline.preprocess import l_uint8
    sweep = np.arange(0, 101, 1e-3, dtype=np.float64).astype(np.float32)
    ties = ((np.arange(256) + 0.5) * np.float32(contract.L_SCALE)).astype(np.float32)
    L = np.concatenate([sweep, ties, np.nextafter(ties, 0), np.nextafter(ties, 200)])
    lab = np.zeros((1, L.size, 3), np.float32)
    lab[0, :, 0] = L
    assert np.array_equal(l_uint8(lab)[0], contract.l_to_uint8(L))


def test_targets_are_the_4x4_area_mean_of_a_and_b_not_every_4th_pixel():
    """ab at target resolution is the mean of each 4 x 4 block of the full-resolution Lab (contract: area-averaged),
    so fine colour detail is averaged, not aliased; stored L is every pixel's L."""
    from pipeline.images import rgb_to_lab
    from pipeline.preprocess import stored_l_ab
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)            # detail at every pixel
    L, ab = stored_l_ab(square)
    lab = rgb_to_lab(square).astype(np.float64)
    expected = lab[..., 1:].reshape(8, 4, 8, 4, 2).mean((1, 3))
    assert ab.shape == (8, 8, 2)
    np.testing.assert_allclose(ab, expected, rtol=0, atol=1e-3)
    assert np.abs(lab[::4, ::4, 1:] - expected).max() > 10                 # subsampling would be far off
    assert np.array_equal(L, contract.l_to_uint8(lab[..., 0]))
