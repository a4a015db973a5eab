"""verify_folder / `cli.py verify`: a good folder passes, and each kind of damage is named with its file."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import contract, verify
from pipeline.prior import build_prior

Q = 12


def _shard_arrays(n, s=16, k=3, seed=0, prefix="a"):
    rng = np.random.default_rng(seed)
    t = s // contract.TARGET_STRIDE
    w = rng.random((n, k, t, t)).astype(np.float32) + 0.1
    return dict(L=rng.integers(0, 256, (n, s, s), dtype=np.uint8),
                ab=rng.normal(0, 30, (n, 2, t, t)).astype(np.float16),
                nn_idx=rng.integers(0, Q, (n, k, t, t)).astype(np.uint16),
                nn_w=(w / w.sum(1, keepdims=True)).astype(np.float16),
                keys=[f"{prefix}/img_{i}.jpg" for i in range(n)])


def _prior(counts, lam=0.5):
    return build_prior(counts, np.stack([np.arange(Q) * 10.0, np.zeros(Q)], 1), sigma=5.0, lam=lam)


@pytest.fixture
def folder(tmp_path):
    """A valid two-shard folder: 5 train + 3 test samples, 2 skipped inputs."""
    out = tmp_path / "shards"
    shards = []
    for name, split, n, seed in (("train-00000.h5", "train", 5, 0), ("test-00000.h5", "test", 3, 1)):
        contract.write_shard(out / name, **_shard_arrays(n, seed=seed, prefix=split), attrs={"split": split})
        shards.append({"file": name, "split": split, "count": n})
    with contract.open_shard(out / "train-00000.h5") as sh:      # the prior counts the train split's nearest bins
        counts = np.bincount(sh.nn_idx[:, 0].ravel(), minlength=Q).astype(np.int64)
    _prior(counts).save(out / contract.PRIOR)
    contract.write_manifest(out, {"dataset": "synthetic", "config": {"size": 16, "knn": 3}, "shards": shards,
                                  "skipped": [{"key": "x.jpg", "reason": "grayscale"},
                                              {"key": "y.jpg", "reason": "truncated"}],
                                  "counts": {"seen": 10, "written": 8, "skipped": 2}})
    return out


def _edit_manifest(folder, fn):
    m = json.loads((folder / contract.MANIFEST).read_text())
    fn(m)
    (folder / contract.MANIFEST).write_text(json.dumps(m))


def _flip_bytes_in_chunk(path, dataset, sample):
    """Invert 4 bytes in the middle of one stored chunk, leaving HDF5 metadata intact."""
    with h5py.File(path, "r") as h:
        info = h[dataset].id.get_chunk_info_by_coord((sample,) + (0,) * (h[dataset].ndim - 1))
    with open(path, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        b = f.read(4)
        f.seek(info.byte_offset + info.size // 2)
        f.write(bytes(x ^ 0xFF for x in b))


def test_good_folder_passes_and_cli_says_ok(folder):
    assert verify.verify_folder(folder) == []
    verify.require_verified(folder)
    from cli import cli
    r = CliRunner().invoke(cli, ["verify", str(folder)])
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1].startswith("ok: 8 samples in 2 shards")


def test_flipped_bytes_in_a_chunk_are_a_checksum_error_naming_file_and_sample(folder):
    _flip_bytes_in_chunk(folder / "train-00000.h5", "L", 3)
    problems = verify.verify_folder(folder)
    assert len(problems) == 1, problems
    assert "train-00000.h5" in problems[0] and "checksum" in problems[0]
    assert "L sample 3" in problems[0] and "train/img_3.jpg" in problems[0]
    assert verify.verify_folder(folder, deep=False) == []       # metadata alone cannot see it
    with pytest.raises(contract.ShardFormatError, match="train-00000.h5"):
        verify.require_verified(folder)
    from cli import cli
    r = CliRunner().invoke(cli, ["verify", str(folder)])
    assert r.exit_code == 1 and "checksum" in r.output and "Traceback" not in r.output


def test_missing_shard_is_named(folder):
    (folder / "test-00000.h5").unlink()
    problems = verify.verify_folder(folder)
    assert problems == [f"{folder / 'test-00000.h5'}: listed in manifest.json but missing"]


def test_truncated_shard_is_named(folder):
    p = folder / "test-00000.h5"
    p.write_bytes(p.read_bytes()[:3000])
    problems = verify.verify_folder(folder)
    assert len(problems) == 1 and "test-00000.h5" in problems[0] and "not a readable HDF5" in problems[0]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["counts"].update(seen=11), "seen 11 != written 8 + skipped 2"),
    (lambda m: m["counts"].update(written=9, seen=11), "counts.written is 9"),
    (lambda m: m["shards"][1].update(count=4), "holds 3 samples but manifest.json lists 4"),
    (lambda m: m["skipped"].pop(), "1 skipped inputs listed but counts.skipped is 2"),
    (lambda m: m["config"].update(knn=5), "knn 3 differs from the manifest config's 5"),
])
def test_manifest_count_edits_are_named(folder, edit, message):
    _edit_manifest(folder, edit)
    problems = verify.verify_folder(folder)
    assert any(message in p for p in problems), problems


def test_unreadable_manifest(folder):
    (folder / contract.MANIFEST).write_text("{not json")
    problems = verify.verify_folder(folder)
    assert len(problems) == 1 and "manifest.json" in problems[0] and "preprocess" in problems[0]


@pytest.mark.parametrize("change, message", [
    (dict(prob=np.full(Q, 1.0 / Q) * 1.01), "prob sums to"),
    (dict(weights=np.ones(Q)), "weights differ from"),
    (dict(weights=np.ones(Q) * 2), "sum(prob * weights)"),
    (dict(counts=np.arange(Q - 1)), "do not agree on Q"),
    (dict(counts=np.arange(Q)), "counts differ from the nearest bins"),
])
def test_inconsistent_prior_is_named(folder, change, message):
    from dataclasses import replace
    replace(contract.Prior.load(folder / contract.PRIOR), **change).save(folder / contract.PRIOR)
    problems = verify.verify_folder(folder)
    assert problems and all(p.startswith(str(folder / contract.PRIOR)) for p in problems), problems
    assert any(message in p for p in problems), problems


def test_prob_must_be_the_smoothed_prior_of_counts(folder):
    """The raw histogram in place of the smoothed prior, with weights rebuilt to match: every other check of the
    prior passes (sums, weights formula, counts against the shards), so only recomputing the smoothing sees it."""
    from dataclasses import replace
    prior = contract.Prior.load(folder / contract.PRIOR)
    raw = prior.counts / prior.counts.sum()
    replace(prior, prob=raw, weights=contract.rebalancing_weights(raw, prior.lam)).save(folder / contract.PRIOR)
    for deep in (True, False):
        problems = verify.verify_folder(folder, deep=deep)
        assert len(problems) == 1 and problems[0].startswith(str(folder / contract.PRIOR)), problems
        assert "not the smoothed prior of these counts" in problems[0]
    replace(prior, sigma=3.0).save(folder / contract.PRIOR)          # smoothed, but with another width
    assert any("sigma 3" in p for p in verify.verify_folder(folder))
    replace(prior, prob=prior.prob.astype(np.float32)).save(folder / contract.PRIOR)   # float rounding is fine
    assert verify.verify_folder(folder) == []


def test_unreadable_prior(folder):
    (folder / contract.PRIOR).write_bytes(b"garbage")
    problems = verify.verify_folder(folder)
    assert len(problems) == 1 and "prior.npz" in problems[0] and "not a readable prior" in problems[0]


def test_bad_values_are_named(folder, tmp_path):
    arr = _shard_arrays(3, seed=1, prefix="test")
    arr["nn_idx"][2, 0, 0, 0] = Q                      # one index past the prior's bins
    arr["nn_w"][1, :, 1, 1] = np.float16(0.5)          # K = 3 weights summing to 1.5
    contract.write_shard(folder / "test-00000.h5", **arr)
    problems = verify.verify_folder(folder)
    assert len(problems) == 2 and all("test-00000.h5" in p for p in problems), problems
    assert any("nn_idx" in p and f"Q = {Q}" in p for p in problems)
    assert any("nn_w" in p and "sum to 1" in p for p in problems)


def test_stray_h5_is_a_problem_but_a_temp_file_is_not_a_shard(folder):
    (folder / ".train-00001.h5.abc123.tmp").write_bytes(b"half a shard")   # what a killed atomic_write leaves
    assert verify.verify_folder(folder) == []
    contract.write_shard(folder / "train-00001.h5", **_shard_arrays(2, seed=5, prefix="other"))
    problems = verify.verify_folder(folder)
    assert len(problems) == 1 and "train-00001.h5" in problems[0] and "not listed" in problems[0]


def test_duplicate_keys_across_shards(folder):
    contract.write_shard(folder / "test-00000.h5", **_shard_arrays(3, seed=1, prefix="train"))
    problems = verify.verify_folder(folder)
    assert any("test-00000.h5" in p and "also stored in train-00000.h5" in p for p in problems), problems


def test_cli_verify_rejects_missing_folder(tmp_path):
    from cli import cli
    r = CliRunner().invoke(cli, ["verify", str(tmp_path / "nope")])
    assert r.exit_code != 0 and "Traceback" not in r.output


def _flip_bytes_in_npz_member(path, member):
    """Invert 4 bytes inside one array of an .npz (a zip): its CRC-32 no longer matches, as after a bad disk."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)   # local header, then data
    data = bytearray(path.read_bytes())
    at = start + info.compress_size - 8
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("args", [["verify", "{d}"], ["verify", "--shallow", "{d}"],
                                  ["fit", "--data", "{d}", "--out", "{run}", "--model", "tiny", "--crop", "8",
                                   "--steps", "1", "--workers", "0", "--device", "cpu"],
                                  ["fit", "--data", "{d}", "--out", "{run}", "--model", "tiny", "--crop", "8",
                                   "--steps", "1", "--workers", "0", "--device", "cpu", "--verify", "off"],
                                  ["prior-plot", "--data", "{d}", "--out", "{run}/p.png"]])
def test_corrupt_prior_is_a_message_naming_it_and_what_to_do(folder, tmp_path, args):
    from cli import cli
    _flip_bytes_in_npz_member(folder / contract.PRIOR, "prob.npy")
    r = CliRunner().invoke(cli, [a.format(d=folder, run=tmp_path / "run") for a in args])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), (r.exception, r.output)
    assert "Traceback" not in r.output
    line = next(ln for ln in r.output.splitlines() if "not a readable prior" in ln)
    assert str(folder / contract.PRIOR) in line and "Bad CRC-32 for file 'prob.npy'" in line, r.output
    assert "rerun the `cli.py preprocess` command" in line and "rebuilds prior.npz" in line


def test_verify_advice_matches_the_problems(folder):
    """The closing advice names what to do about what was found, and nothing else."""
    from cli import cli

    def advice():
        r = CliRunner().invoke(cli, ["verify", str(folder)])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        return r.output.strip().splitlines()[-1]

    good = (folder / "test-00000.h5").read_bytes()
    _flip_bytes_in_chunk(folder / "test-00000.h5", "L", 1)
    assert "Delete the shard files named above, then rerun the same `cli.py preprocess`" in advice()
    (folder / "test-00000.h5").write_bytes(good)

    _edit_manifest(folder, lambda m: m["counts"].update(seen=11))
    said = advice()
    assert "Rerun the same `cli.py preprocess` command" in said and "Delete" not in said, said
    _edit_manifest(folder, lambda m: m["counts"].update(seen=10))

    contract.write_shard(folder / "extra.h5", **_shard_arrays(2, seed=5, prefix="other"))
    said = advice()
    assert said.endswith("Move or delete the 1 *.h5 file(s) that manifest.json does not list"), said
    assert "Delete the shard files" not in said and "Rerun" not in said
    (folder / "extra.h5").unlink()

    (folder / contract.MANIFEST).unlink()                          # what a killed first run leaves
    said = advice()
    assert "Not a complete shard folder (no readable manifest.json): rerun the `cli.py preprocess`" in said, said
    assert "Delete" not in said and "named above" not in said
