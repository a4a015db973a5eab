"""What `preprocess` may do to its output folder: reuse and replace its own job's shards (the resume guarantee is
test_preprocess.py's and test_robustness.py's), refuse before touching anything when the folder holds another job's
shards (unless --overwrite), never delete or replace a file it did not write; and fail, like an empty folder,
when no input of the split it is for is a usable colour image."""
import hashlib

import cv2
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from hostile_files import jpeg_bytes, photo
from pipeline import contract, verify
from pipeline.config import PrepConfig
from pipeline.datasets import hash_split
from pipeline.output_folder import OutputConflict
from pipeline.preprocess import NothingToTrainOn, run

NAMES = ("astronaut", "chelsea", "coffee", "rocket")


def _photos(folder, n=4, gray=False):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgb = photo(NAMES[i % 4], 64 + 8 * i, 96)
        if gray:
            rgb = np.dstack([cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)] * 3)
        (folder / f"{i}.jpg").write_bytes(jpeg_bytes(rgb))
    return folder


def _cfg(root, out, **kw):
    return PrepConfig(**{"dataset": "folder", "root": str(root), "out_dir": str(out), "size": 32, "min_side": 16,
                         "shard_size": 2, "jobs": 1, "test_fraction": 0.0, **kw})


def _state(folder):
    """Every file under `folder` with its bytes' hash and mtime: what a refused run must leave as it was."""
    return {p.relative_to(folder).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def done(tmp_path):
    """A complete folder of job A: 4 colour photos of root a/, knn 5, 2 train shards."""
    root = _photos(tmp_path / "a")
    out = tmp_path / "shards"
    assert run(_cfg(root, out), progress=False).written == 4
    return root, out


def test_another_dataset_is_refused_before_anything_is_touched_then_overwrite_replaces(done):
    _, out = done
    before = _state(out)
    args = ["preprocess", "sample", "--out", str(out), "--size", "64", "--jobs", "1", "--limit", "12"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    message = r.output.strip()
    assert len(message.splitlines()) == 1, message
    assert (f"{out} holds 2 shard file(s) of dataset 'folder' (size 32, min_side 16); this run is 'sample' "
            "(size 64, min_side 64): use --out elsewhere or --overwrite to replace them") in message
    assert _state(out) == before                                  # manifest, prior and shards untouched

    r = CliRunner().invoke(cli, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert contract.read_manifest(out)["dataset"] == "sample" and verify.verify_folder(out) == []


@pytest.mark.parametrize("change, message", [
    (lambda root, tmp: {"root": str(_photos(tmp / "b", 5))}, "with root '{a}'; this run has root '{b}'"),
    (lambda root, tmp: {"knn": 3}, "with knn 5; this run has knn 3"),
    (lambda root, tmp: {"limit": 2}, "with limit 0; this run has limit 2"),
    (lambda root, tmp: {"shard_size": 3}, "with shard_size 2; this run has shard_size 3"),
])
def test_another_root_config_or_plan_is_refused(done, tmp_path, change, message):
    root, out = done
    cfg = _cfg(root, out).__class__(**{**_cfg(root, out).as_dict(), **change(root, tmp_path)})
    before = _state(out)
    with pytest.raises(OutputConflict) as e:
        run(cfg, progress=False)
    assert message.format(a=root.resolve(), b=(tmp_path / "b").resolve()) in str(e.value), str(e.value)
    assert _state(out) == before
    result = run(cfg, progress=False, overwrite=True)
    assert result.removed >= 1 and verify.verify_folder(out) == []
    assert result.reused == 0 or cfg.root == str(root)          # the same keys under another root: other images
    assert contract.read_manifest(out)["config"] == cfg.as_dict()


def test_what_replaces_nothing_of_another_job_goes_ahead(done):
    """Same job: a rerun reuses everything; a new lam only changes prior.npz; a wider split only adds shards."""
    root, out = done
    assert run(_cfg(root, out), progress=False).reused == 2
    assert run(_cfg(root, out, lam=0.7), progress=False).reused == 2
    assert contract.Prior.load(out / contract.PRIOR).lam == 0.7
    more = run(_cfg(root, out, test_fraction=0.5, split="train"), progress=False, overwrite=True)
    wider = run(_cfg(root, out, test_fraction=0.5), progress=False)         # train shards kept, test ones added
    assert wider.reused == more.shards and wider.shards > more.shards
    (root / "9.jpg").write_bytes(jpeg_bytes(photo("coffee", 80, 96)))      # the dataset grew: same job
    grown = run(_cfg(root, out, test_fraction=0.5), progress=False)
    assert grown.written == 5 and verify.verify_folder(out) == []


def test_a_killed_first_run_of_another_job_is_refused_by_its_shards_attrs(done, tmp_path):
    """No manifest (the first run was killed): the shard files' attrs say whose they are, in the current format
    and in the one before jobs were recorded (encoding config only)."""
    root, out = done
    (out / contract.MANIFEST).unlink()
    (out / contract.PRIOR).unlink()
    with pytest.raises(OutputConflict, match="this run has knn 3"):
        run(_cfg(root, out, knn=3), progress=False)
    root, old = _photos(tmp_path / "six", n=6), tmp_path / "old"   # 6: the name and hash orders differ
    run(_cfg(root, old, order="name"), progress=False)  # a killed run of a version that recorded no job (names)
    (old / contract.MANIFEST).unlink()
    (old / contract.PRIOR).unlink()
    for p in old.glob("*.h5"):
        with h5py.File(p, "r+") as h:
            del h.attrs["job"]
    before = _state(old)
    with pytest.raises(OutputConflict, match="dataset 'folder' with knn 5; this run has knn 3"):
        run(_cfg(root, old, knn=3, order="name"), progress=False)
    with pytest.raises(OutputConflict, match="with order 'name'; this run has order 'mixed'"):
        run(_cfg(root, old), progress=False)                      # today's default plan is another job
    assert _state(old) == before
    assert run(_cfg(root, old, order="name"), progress=False).reused == 3   # its own job resumes from them


def test_files_preprocess_did_not_write_are_never_deleted(done, tmp_path):
    root, out = done
    (out / "notes.txt").write_text("mine")
    (out / ".cache.tmp").write_text("another program's temporary file")
    (out / ".train-00000.h5.colorfast-4242-k1ll3d.tmp").write_bytes(b"half a shard")     # a killed atomic write: ours
    assert run(_cfg(root, out), progress=False).reused == 2
    assert (out / "notes.txt").read_text() == "mine" and (out / ".cache.tmp").exists()
    assert not (out / ".train-00000.h5.colorfast-4242-k1ll3d.tmp").exists()

    with h5py.File(out / "train-00007.h5", "w") as h:              # someone's HDF5 file under a shard's name
        h["x"] = np.arange(3)
    before = _state(out)
    for overwrite in (False, True):
        with pytest.raises(OutputConflict, match="train-00007.h5 was not written by preprocess .an HDF5 file "
                                                 "without a shard's attrs.; preprocess never deletes"):
            run(_cfg(root, out, knn=3), progress=False, overwrite=overwrite)
    assert _state(out) == before
    (out / "train-00007.h5").unlink()

    (out / "sub").mkdir()
    (out / "sub" / "other.h5").write_bytes(b"\x89HDF")                 # verify and fit would refuse the folder
    with pytest.raises(OutputConflict, match=r"sub/other.h5 is an \*.h5 file that is not one of its shards"):
        run(_cfg(root, out), progress=False)


@pytest.mark.parametrize("name, text", [(contract.MANIFEST, '{"name": "my web app", "icons": []}'),
                                        (contract.PRIOR, "someone's arrays")])
def test_a_manifest_or_prior_preprocess_did_not_write_is_not_replaced(tmp_path, name, text):
    root, out = _photos(tmp_path / "a"), tmp_path / "site"
    out.mkdir()
    (out / name).write_text(text)
    with pytest.raises(OutputConflict, match=f"{name} was not written by preprocess"):
        run(_cfg(root, out), progress=False, overwrite=True)
    assert (out / name).read_text() == text and sorted(p.name for p in out.iterdir()) == [name]


def test_a_damaged_manifest_or_prior_beside_its_shards_is_rebuilt_by_the_rerun_verify_advises(done):
    """verify says to rerun preprocess for these (test_verify.py); the rerun must do it, reusing every shard."""
    root, out = done
    (out / contract.MANIFEST).write_text('{"format_version": 1, "shards": [')
    data = bytearray((out / contract.PRIOR).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / contract.PRIOR).write_bytes(bytes(data))
    assert verify.verify_folder(out)
    assert run(_cfg(root, out), progress=False).reused == 2
    assert verify.verify_folder(out) == []


def test_a_folder_of_grayscale_photos_fails_like_an_empty_one(tmp_path):
    root = _photos(tmp_path / "scans", n=3, gray=True)
    (root / "16bit.png").write_bytes(cv2.imencode(".png", np.full((64, 80), 20000, np.uint16))[1].tobytes())
    (root / "broken.jpg").write_bytes(b"")
    out = tmp_path / "shards"
    r = CliRunner().invoke(cli, ["preprocess", "folder", "--root", str(root), "--out", str(out), "--size", "32",
                                 "--jobs", "1", "--shard-size", "2"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    train = [k for k in ("0.jpg", "1.jpg", "2.jpg", "16bit.png", "broken.jpg") if hash_split(k, 0.1) == "train"]
    reasons = f"{len(train) - ('broken.jpg' in train)} grayscale" + ", 1 empty" * ("broken.jpg" in train)
    assert len(train) >= 3 and (f"{root.resolve()}: nothing to train on: all {len(train)} train-split inputs were "
                                f"skipped ({reasons})") in " ".join(r.output.split()), r.output
    assert not (out / contract.MANIFEST).exists() and not (out / contract.PRIOR).exists()
    # as for an empty folder
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["preprocess", "folder", "--root", str(tmp_path / "empty"), "--out", str(out)])
    assert r.exit_code == 2 and "no image files" in r.output


def test_a_train_split_without_colour_fails_even_when_the_test_split_has_some(tmp_path):
    """SUN397 layout: the train list holds only grayscale photos and the test list colour ones. No prior can be
    built and fit would have nothing to read: a failure, which points to --split test for an evaluation set."""
    root = tmp_path / "SUN397"
    _photos(root / "g", n=2, gray=True)
    _photos(root / "c", n=2)
    (root / "Training_01.txt").write_text("/g/0.jpg\n/g/1.jpg\n")
    (root / "Testing_01.txt").write_text("/c/0.jpg\n/c/1.jpg\n")
    cfg = _cfg(root, tmp_path / "out", dataset="sun_scenes")
    with pytest.raises(NothingToTrainOn, match=r"nothing to train on: all 2 train-split inputs were skipped "
                                               r"\(2 grayscale\); its test split has 2 sample\(s\): --split test"):
        run(cfg, progress=False)
    assert not (tmp_path / "out" / contract.MANIFEST).exists()
    only_test = run(_cfg(root, tmp_path / "out", dataset="sun_scenes", split="test"), progress=False,
                    overwrite=True)
    assert only_test.splits == {"train": 0, "test": 2} and verify.verify_folder(tmp_path / "out") == []

    (root / "Training_01.txt").write_text("")                       # nothing listed for training at all
    with pytest.raises(NothingToTrainOn, match="the train split lists no input"):
        run(_cfg(root, tmp_path / "out2", dataset="sun_scenes"), progress=False)
    (root / "Testing_01.txt").write_text("/g/0.jpg\n")
    with pytest.raises(NothingToTrainOn, match="nothing to evaluate: all 1 test-split inputs were skipped"):
        run(_cfg(root, tmp_path / "out3", dataset="sun_scenes", split="test"), progress=False)


def test_an_evaluation_subset_needs_test_samples_only(tmp_path):
    """--subset picks ImageNet validation images: with the default --split all there is no train split to need."""
    from archive_trees import _image, tar_bytes
    root = tmp_path / "ILSVRC2012"
    root.mkdir()
    files = {f"ILSVRC2012_val_{i:08d}.JPEG": _image(i) for i in (1, 2)}
    (root / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes(files))
    result = run(_cfg(root, tmp_path / "out", dataset="imagenet", subset="first10k", shard_size=5000),
                 progress=False)
    assert result.splits == {"train": 0, "test": 2}
