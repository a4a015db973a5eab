"""Inputs read straight from tar files: the same shards as from the extracted tree, in parallel and resumable."""
import gzip
import json
import os
import pickle
import tarfile

import h5py
import numpy as np
import pytest

from archive_trees import imagenet_files, tar_bytes, write_imagenet_tars, write_tree
from pipeline import contract
from pipeline.archives import Member, nested_tar_members, read_member, tar_members
from pipeline.config import PrepConfig
from pipeline.datasets import DatasetError, list_dataset
from pipeline.images import ImageError
from pipeline.plan import plan_shards
from pipeline.preprocess import run


def _cfg(root, out, **kw):
    return PrepConfig(**{"dataset": "imagenet", "root": str(root), "out_dir": str(out), "size": 64,
                         "shard_size": 2, "jobs": 1, "min_side": 32, **kw})


def shard_contents(folder):
    """{file: (every dataset as an array, attrs)} of a shard folder, and its manifest without root and time."""
    shards = {}
    for path in sorted(folder.glob("*.h5")):
        with h5py.File(path, "r") as h:
            arrays = {name: h[name][()] for name in h}
            if contract.SOURCES in arrays:   # where each input was read from differs; what was read does not
                arrays[contract.SOURCES] = arrays[contract.SOURCES][["key", "size", "digest"]]
            attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in h.attrs.items()}
            if "job" in attrs:            # the root it was made from, which differs like the manifest's root
                attrs["job"] = {k: v for k, v in json.loads(attrs["job"]).items() if k != "root"}
            shards[path.name] = (arrays, attrs)
    manifest = json.loads((folder / contract.MANIFEST).read_text())
    for field in ("root", "created_utc"):
        manifest.pop(field)
    for field in ("root", "out_dir", "jobs", "backend", "scheduler"):
        manifest["config"].pop(field)
    return shards, manifest


def assert_same(a, b):
    (sa, ma), (sb, mb) = a, b
    assert sorted(sa) == sorted(sb) and sa
    for name in sa:
        arrays_a, arrays_b = sa[name][0], sb[name][0]
        assert sorted(arrays_a) == sorted(arrays_b)
        for d in arrays_a:
            assert np.array_equal(arrays_a[d], arrays_b[d]), (name, d)
        assert sa[name][1] == sb[name][1], name
    assert ma == mb


@pytest.fixture(scope="module")
def imagenet_roots(tmp_path_factory):
    files = imagenet_files()
    base = tmp_path_factory.mktemp("imagenet")
    return write_tree(base / "tree", files), write_imagenet_tars(base / "tars", files), files


def test_nested_and_flat_tars_list_the_keys_of_the_extracted_tree(imagenet_roots):
    tree, tars, files = imagenet_roots
    from_tree, from_tars = list_dataset("imagenet", str(tree)), list_dataset("imagenet", str(tars))
    assert from_tree.items == from_tars.items and len(from_tars.items) == len(files)
    assert {s for k, s in from_tars.items if k.startswith("val/")} == {"test"}
    assert not from_tree.members and set(from_tars.members) == set(files)
    for key, member in from_tars.members.items():                  # offsets point at the right bytes
        assert read_member(member) == files[key], key
    inner = list(nested_tar_members(str(tars / "ILSVRC2012_img_train.tar")))
    assert {i for i, _, _ in inner} == {"n01440764.tar", "n01443537.tar"}


def test_tars_and_tree_give_identical_shards_in_parallel_and_resume(imagenet_roots, tmp_path):
    tree, tars, _ = imagenet_roots
    a = run(_cfg(tree, tmp_path / "tree", jobs=2), progress=False)
    b = run(_cfg(tars, tmp_path / "tars", jobs=2), progress=False)       # loky workers read the tars themselves
    assert (a.written, a.skipped, a.shards) == (b.written, b.skipped, b.shards) == (11, 1, 7)
    assert a.by_reason == b.by_reason == {"truncated": 1}
    contents = shard_contents(tmp_path / "tars")
    assert_same(shard_contents(tmp_path / "tree"), contents)

    victim = tmp_path / "tars" / "train-00001.h5"
    victim.unlink()
    resumed = run(_cfg(tars, tmp_path / "tars"), progress=False)
    assert resumed.reused == resumed.shards - 1
    assert_same(contents, shard_contents(tmp_path / "tars"))


def test_inner_tars_listed_in_worker_processes_or_without_end_blocks(imagenet_roots, tmp_path):
    _, tars, files = imagenet_roots
    path = str(tars / "ILSVRC2012_img_train.tar")
    assert list(nested_tar_members(path, jobs=2)) == list(nested_tar_members(path, jobs=1))
    first = tar_bytes({"a.JPEG": b"a" * 700, "b.JPEG": b"b" * 10})
    first = first[:512 + 1024 + 512 + 512]                # both members, no end-of-archive blocks
    (tmp_path / "outer.tar").write_bytes(tar_bytes({"n1.tar": first, "n2.tar": tar_bytes({"c.JPEG": b"c"})}))
    listed = [(inner, name, read_member(m)) for inner, name, m in nested_tar_members(str(tmp_path / "outer.tar"))]
    assert listed == [("n1.tar", "a.JPEG", b"a" * 700), ("n1.tar", "b.JPEG", b"b" * 10), ("n2.tar", "c.JPEG", b"c")]


def test_shard_tasks_carry_offsets_not_image_bytes(imagenet_roots):
    _, tars, files = imagenet_roots
    specs = plan_shards(list_dataset("imagenet", str(tars)), shard_size=256)
    assert all(isinstance(m, Member) for s in specs for m in s.members)
    train = next(s for s in specs if s.split == "train")
    image_bytes = sum(len(files[k]) for k in train.keys)
    assert len(pickle.dumps(train)) < min(2_000, image_bytes / 10)


def test_a_broken_archive_is_a_skip_or_a_clear_error(imagenet_roots, tmp_path):
    _, tars, _ = imagenet_roots
    key, member = next(iter(list_dataset("imagenet", str(tars)).members.items()))
    with pytest.raises(ImageError, match="truncated"):
        read_member(member._replace(size=10 ** 9))
    with pytest.raises(ImageError, match="missing"):
        read_member(member._replace(archive=str(tmp_path / "gone.tar")))

    packed = tmp_path / "gz"
    packed.mkdir()
    (packed / "ILSVRC2012_img_val.tar").write_bytes(gzip.compress(tar_bytes({"ILSVRC2012_val_00000001.JPEG": b"x"})))
    with pytest.raises(DatasetError, match="gzip-compressed tar .* decompress it"):
        list_dataset("imagenet", str(packed))
    (packed / "ILSVRC2012_img_val.tar").write_bytes(b"not a tar at all" * 64)
    with pytest.raises(DatasetError, match="not a readable tar"):
        list_dataset("imagenet", str(packed))


def _webdataset_tars(root, with_split_names=False):
    """Two WebDataset shards: samples 000000..000005 as .jpg + .cls (+ a .seg.png on one, a .json-only one)."""
    from archive_trees import _image
    root.mkdir(parents=True, exist_ok=True)
    for shard in range(2):
        files = {}
        for i in range(shard * 3, shard * 3 + 3):
            files[f"{i:06d}.jpg"] = _image(i)
            files[f"{i:06d}.cls"] = str(i % 2).encode()
        files[f"{shard * 3:06d}.seg.png"] = b"\x89PNG\r\n\x1a\n not the input"
        files[f"meta{shard}.json"] = b"{}"
        name = (("train", "val")[shard] + f"-{shard:06d}.tar") if with_split_names else f"shard-{shard:06d}.tar"
        (root / name).write_bytes(tar_bytes(files))
    return root


def test_webdataset_shards_equal_a_folder_of_their_extracted_files(tmp_path):
    wds = _webdataset_tars(tmp_path / "wds")
    listing = list_dataset("webdataset", str(wds))
    assert sorted(k for k, _ in listing.items) == [f"{i:06d}.jpg" for i in range(6)]   # one image per sample
    extracted = tmp_path / "extracted"
    extracted.mkdir()
    for tar in sorted(wds.glob("*.tar")):
        with tarfile.open(tar) as t:
            t.extractall(extracted, filter="data")
    (extracted / "000000.seg.png").unlink()
    (extracted / "000003.seg.png").unlink()
    cfg = dict(size=64, shard_size=4, jobs=1, min_side=32, test_fraction=0.3)
    run(PrepConfig(dataset="webdataset", root=str(wds), out_dir=str(tmp_path / "a"), **cfg), progress=False)
    run(PrepConfig(dataset="folder", root=str(extracted), out_dir=str(tmp_path / "b"), **cfg), progress=False)
    a, b = shard_contents(tmp_path / "a"), shard_contents(tmp_path / "b")
    for manifest in (a[1], b[1]):
        manifest.pop("dataset"); manifest["config"].pop("dataset")
    for shard in list(a[0].values()) + list(b[0].values()):
        shard[1]["config"] = {k: v for k, v in json.loads(shard[1]["config"]).items() if k != "dataset"}
        shard[1].pop("fingerprint")                              # the dataset's name is all that differs
        shard[1]["job"].pop("dataset")
    assert_same(a, b)


def test_webdataset_split_follows_the_tar_names(tmp_path):
    listing = list_dataset("webdataset", str(_webdataset_tars(tmp_path / "wds", with_split_names=True)))
    assert dict(listing.items) == {**{f"{i:06d}.jpg": "train" for i in range(3)},
                                   **{f"{i:06d}.jpg": "test" for i in range(3, 6)}}
    (tmp_path / "wds" / "copy-train.tar").write_bytes((tmp_path / "wds" / "train-000000.tar").read_bytes())
    with pytest.raises(DatasetError, match="000000.jpg is in both"):
        list_dataset("webdataset", str(tmp_path / "wds"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .tar shards"):
        list_dataset("webdataset", str(tmp_path / "empty"))


def test_a_name_stored_twice_counts_once_with_its_later_bytes(tmp_path):
    """tar appends: extracting keeps the later copy, and so does listing in place."""
    import io
    (tmp_path / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes({"ILSVRC2012_val_00000001.JPEG": b"old"}))
    with tarfile.open(tmp_path / "ILSVRC2012_img_val.tar", "a") as tar:
        info = tarfile.TarInfo("ILSVRC2012_val_00000001.JPEG")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"new"))
    listing = list_dataset("imagenet", str(tmp_path))
    assert listing.items == (("val/ILSVRC2012_val_00000001.JPEG", "test"),)
    assert read_member(listing.members["val/ILSVRC2012_val_00000001.JPEG"]) == b"new"


def test_tar_members_skips_what_is_not_a_file(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        d = tarfile.TarInfo("./dir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        tar.add(__file__, arcname="./dir/a.py")
    (name, member), = tar_members(str(path))
    assert name == "dir/a.py" and read_member(member) == open(__file__, "rb").read()


def test_a_listing_is_read_back_from_the_cache_until_the_archive_changes(tmp_path, monkeypatch):
    """The second listing of an unchanged tar parses no header (a resumed ImageNet run would spend ~1 min on
    it); a tar rewritten in place, even to the same size, is listed again; a damaged or unwritable cache
    changes nothing but the time."""
    import pipeline.archives as archives
    monkeypatch.setenv("COLORFAST_CACHE", str(tmp_path / "cache"))
    outer = tmp_path / "outer.tar"
    outer.write_bytes(tar_bytes({"n1.tar": tar_bytes({"a.JPEG": b"a" * 700}), "n2.tar": tar_bytes({"b.JPEG": b"b"})}))
    flat = tmp_path / "flat.tar"
    flat.write_bytes(tar_bytes({"x.JPEG": b"x" * 10, "y.JPEG": b"y"}))
    first = (list(nested_tar_members(str(outer))), list(tar_members(str(flat))))
    assert len(list((tmp_path / "cache" / "archive-listings").glob("*.npz"))) == 2

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed the tar again")
    with monkeypatch.context() as m:
        m.setattr(archives.tarfile, "open", no_parsing)
        assert (list(nested_tar_members(str(outer))), list(tar_members(str(flat)))) == first

    before = flat.stat()
    flat.write_bytes(tar_bytes({"x.JPEG": b"z" * 10, "w.JPEG": b"w"}))          # same size, other members
    os.utime(flat, ns=(before.st_atime_ns, before.st_mtime_ns))                # within the clock's granularity
    assert flat.stat().st_size == before.st_size and flat.stat().st_ino == before.st_ino
    assert [(n, read_member(m)) for n, m in tar_members(str(flat))] == [("x.JPEG", b"z" * 10), ("w.JPEG", b"w")]

    for entry in (tmp_path / "cache" / "archive-listings").glob("*.npz"):
        entry.write_bytes(b"damaged")
    assert list(nested_tar_members(str(outer))) == first[0]
    monkeypatch.setenv("COLORFAST_CACHE", str(flat))                          # a file: no cache can be made
    assert list(nested_tar_members(str(outer))) == first[0]
