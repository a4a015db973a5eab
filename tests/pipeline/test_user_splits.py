"""The user's own splits (issue 20): `preprocess folder` takes a root's train/ and val/ (or validation/ or test/)
folders as the splits, and the hash split with --test-fraction otherwise; the rule is recorded, so a rerun that
would split otherwise is refused (unless --overwrite) and `verify --sources` relists the folder as it was split."""
import json

import h5py
import pytest
from click.testing import CliRunner

from cli import cli
from hostile_files import jpeg_bytes, photo
from pipeline.datasets import hash_split, list_dataset

NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def _photos(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(photo(NAMES[i % 4], 64 + 4 * (i % 5), 80)))
    return folder


def _preprocess(root, out, *more):
    return CliRunner().invoke(cli, ["preprocess", "folder", "--root", str(root), "--out", str(out), "--size", "32",
                                    "--min-side", "16", "--shard-size", "2", "--jobs", "1", *more])


@pytest.mark.parametrize("held_out", ["val", "validation", "test"])
def test_train_and_held_out_folders_are_exactly_the_splits(tmp_path, held_out):
    _photos(tmp_path / "train" / "cat", 6)
    _photos(tmp_path / held_out / "cat", 3)
    _photos(tmp_path / "extra", 2)                     # outside both: left out, and counted
    listing = list_dataset("folder", str(tmp_path), test_fraction=0.5)
    assert listing.split("train") == [f"train/cat/{i}.jpg" for i in range(6)]
    assert listing.split("test") == [f"{held_out}/cat/{i}.jpg" for i in range(3)]     # full relative keys
    assert listing.split_rule == "folders"
    assert listing.split_note == (f"splits from the folders train/ (6) and {held_out}/ (3); 2 image(s) elsewhere "
                                  "under the root left out; test fraction 0.5 not used: the folders make the split")


@pytest.mark.parametrize("tree", ["flat", "train only", "val only", "val is a file"])
def test_without_both_folders_the_hash_split_stays(tmp_path, tree):
    _photos(tmp_path / ("train" if tree == "train only" else "val" if tree == "val only" else "a"), 12)
    _photos(tmp_path / "b", 12)
    if tree == "val is a file":
        (tmp_path / "train").mkdir()
        (tmp_path / "val").write_bytes(b"not a folder")
    listing = list_dataset("folder", str(tmp_path), test_fraction=0.5)
    assert listing.split_rule == "hash" and len(listing.items) == 24
    assert all(s == hash_split(k, 0.5) for k, s in listing.items) and listing.split("test")
    assert listing.split_note.startswith("split by a hash of each path: test fraction 0.5")


def test_val_wins_over_test_and_test_is_left_out(tmp_path):
    _photos(tmp_path / "train", 4)
    _photos(tmp_path / "val", 2)
    _photos(tmp_path / "test", 3)
    listing = list_dataset("folder", str(tmp_path))
    assert listing.split("test") == ["val/0.jpg", "val/1.jpg"] and len(listing.items) == 6
    assert "3 image(s) elsewhere under the root left out" in listing.split_note


def test_preprocess_says_how_it_split_records_it_and_reruns_reuse(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    _photos(root / "train", 5)
    _photos(root / "val", 3)
    r = _preprocess(root, out)
    assert r.exit_code == 0, r.output
    assert "  samples by split: train 5, test 3\n  splits from the folders train/ (5) and val/ (3)\n" in r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split_rule"] == "folders" and manifest["splits"] == {"train": 5, "test": 3}
    for shard in manifest["shards"]:                   # no image of val/ in a train shard, and the reverse
        with h5py.File(out / shard["file"]) as h:
            folders = {k.decode().split("/")[0] for k in h["key"][:]}
        assert folders == {"train" if shard["split"] == "train" else "val"}
    again = _preprocess(root, out, "--test-fraction", "0.4")      # the folders make the split: nothing changes
    assert again.exit_code == 0 and "(5 reused from an earlier run)" in again.output, again.output
    assert "test fraction 0.4 not used: the folders make the split" in again.output
    _photos(root / "train", 1, start=5)                 # a grown train/: its shards are rewritten, same job
    grown = _preprocess(root, out, "--test-fraction", "0.2")
    assert grown.exit_code == 0 and "samples by split: train 6, test 3" in grown.output, grown.output
    assert CliRunner().invoke(cli, ["verify", "--sources", str(out)]).exit_code == 0


@pytest.mark.parametrize("change", ["a val/ folder appears", "the val/ folder goes"])
def test_a_rerun_that_would_split_otherwise_is_refused_unless_overwrite(tmp_path, change):
    root, out = tmp_path / "in", tmp_path / "out"
    _photos(root / "train", 8)                          # train/ alone: the hash split (as every earlier version)
    if change == "the val/ folder goes":
        _photos(root / "val", 2)
    first = _preprocess(root, out, "--test-fraction", "0.5")
    assert first.exit_code == 0, first.output
    if change == "a val/ folder appears":
        assert "split by a hash of each path" in first.output
        _photos(root / "val", 2)                        # now the user's folders would split it
        was, now = "hash", "folders"
    else:
        assert "splits from the folders" in first.output
        for p in (root / "val").iterdir():
            p.unlink()
        (root / "val").rmdir()
        was, now = "folders", "hash"
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    refused = _preprocess(root, out, "--test-fraction", "0.5")
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.strip().endswith(f"with split_rule '{was}'; this run has split_rule '{now}': use --out "
                                           "elsewhere or --overwrite to replace them"), refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    replaced = _preprocess(root, out, "--overwrite", "--test-fraction", "0.5")
    assert replaced.exit_code == 0, replaced.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest.get("split_rule", "hash") == now


def test_verify_sources_relists_the_folder_as_it_was_split(tmp_path):
    """A --split train run of a hash-split folder, then an empty val/ appears: the folders rule would make every
    train/ image a train input, so relisting by today's rule would report the hash's test images as missing."""
    root, out = tmp_path / "in", tmp_path / "out"
    _photos(root / "train", 8)
    assert _preprocess(root, out, "--test-fraction", "0.5", "--split", "train").exit_code == 0
    (root / "val").mkdir()
    r = CliRunner().invoke(cli, ["verify", "--sources", str(out)])
    assert r.exit_code == 0, r.output
