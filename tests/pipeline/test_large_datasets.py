"""ImageNet, Places365 and COCO layouts as distributed, ImageNet's evaluation subsets and their resource."""
import hashlib
import zipfile

import pytest
from click.testing import CliRunner

from archive_trees import _image, tar_bytes, write_tree
from pipeline import contract
from pipeline.config import PrepConfig
from pipeline.datasets import DatasetError, list_dataset
from pipeline.preprocess import run
from pipeline.subsets import SubsetError, ctest10k_indices, original_npy, read_resource, subset_names
from test_archives import assert_same, shard_contents

CTEST10K_SHA256 = "6248c4325a0676cb6168a1d65603002e70be48b082e04744574d0f109add0bc3"   # of the .npy as fetched


def _touch(root, *keys):
    for key in keys:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"x")


def test_ctest10k_resource_rebuilds_the_original_file_and_names_its_source():
    header, indices = read_resource("ilsvrclin12_val_inds.txt")
    assert hashlib.sha256(original_npy(indices)).hexdigest() == CTEST10K_SHA256
    assert header["source"].startswith("https://github.com/richzhang/colorization-pytorch")
    assert "66a1cb2e5258f7c8f374f582acc8b1ef99c13c27" in header["commit"]
    assert CTEST10K_SHA256 in next(v for k, v in header.items() if k.startswith("sha256"))
    assert len(indices) == 10_000 == len(set(indices)) and indices == sorted(indices)
    assert 0 <= indices[0] and indices[-1] < 50_000
    assert ctest10k_indices() == indices
    names = subset_names("ctest10k")
    assert names[0] == f"ILSVRC2012_val_{indices[0] + 1:08d}.JPEG" == "ILSVRC2012_val_00025275.JPEG"
    assert subset_names("first10k")[::9999] == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00010000.JPEG"]


def test_a_damaged_resource_is_refused(monkeypatch):
    import pipeline.subsets as subsets
    header, indices = read_resource("ilsvrclin12_val_inds.txt")
    monkeypatch.setattr(subsets, "read_resource", lambda name: (header, indices[:-1] + [indices[-1] - 1]))
    with pytest.raises(SubsetError, match="damaged"):
        subsets.ctest10k_indices()


@pytest.mark.parametrize("layout", ["flat", "class_folders", "kaggle"])
def test_imagenet_layouts_and_subsets(tmp_path, layout):
    wnid = "n01440764"
    val = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 10_000, 10_001, 25_275)]
    base = tmp_path / "ILSVRC" / "Data" / "CLS-LOC" if layout == "kaggle" else tmp_path
    _touch(base, f"train/{wnid}/{wnid}_1.JPEG", f"train/{wnid}/{wnid}_2.JPEG")
    _touch(base, *(f"val/{wnid}/{n}" if layout == "class_folders" else f"val/{n}" for n in val))
    (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n")   # labels: beside, not read
    listing = list_dataset("imagenet", str(tmp_path))
    assert listing.root == base.resolve()
    assert listing.split("train") == [f"train/{wnid}/{wnid}_1.JPEG", f"train/{wnid}/{wnid}_2.JPEG"]
    assert [k.rsplit("/", 1)[1] for k in listing.split("test")] == val
    assert list_dataset("imagenet", str(tmp_path), split="train").split("test") == []

    first = list_dataset("imagenet", str(tmp_path), subset="first10k")
    assert len(first.items) == 10_000 and {s for _, s in first.items} == {"test"}
    present = {k for k, _ in first.items if (base / k).exists()}
    assert {k.rsplit("/", 1)[1] for k in present} == set(val[:2])            # 1 and 10,000, not 10,001
    ctest = list_dataset("imagenet", str(tmp_path), subset="ctest10k")
    assert {k.rsplit("/", 1)[1] for k, _ in ctest.items if (base / k).exists()} == {val[3]}
    with pytest.raises(DatasetError, match="--split val"):
        list_dataset("imagenet", str(tmp_path), split="train", subset="first10k")


def test_imagenet_and_subset_errors(tmp_path):
    with pytest.raises(DatasetError, match="no ImageNet images"):
        list_dataset("imagenet", str(tmp_path))
    _touch(tmp_path, "a/b.jpg")
    with pytest.raises(DatasetError, match="subsets are ImageNet validation images"):
        list_dataset("folder", str(tmp_path), subset="first10k")
    assert PrepConfig(split="val").split == "test"
    with pytest.raises(ValueError, match="subset"):
        PrepConfig(subset="ctest50k")


def test_cli_preprocess_imagenet_subset_from_the_val_tar(tmp_path):
    """ctest10k from a val tar holding 3 of its images: those written, the other 9,997 listed as missing."""
    import cli
    picked = [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in ctest10k_indices()[:3]]
    files = {name: _image(n) for n, name in enumerate(picked + ["ILSVRC2012_val_00000001.JPEG"])}
    root = tmp_path / "ILSVRC2012"
    root.mkdir()
    (root / "ILSVRC2012_img_val.tar").write_bytes(tar_bytes(files))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.cli, ["preprocess", "imagenet", "--root", str(root), "--out", str(out),
                                          "--split", "val", "--subset", "ctest10k", "--size", "64",
                                          "--min-side", "32", "--shard-size", "2500", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    manifest = contract.read_manifest(out)
    assert manifest["counts"]["seen"] == 10_000 and manifest["counts"]["written"] == 3
    assert manifest["counts"]["by_reason"] == {"missing": 9_997}
    assert manifest["splits"] == {"train": 0, "test": 3} and manifest["config"]["subset"] == "ctest10k"
    keys = [k for p in contract.shard_paths(out, "test") for k in contract.open_shard(p).keys()]
    assert sorted(keys) == sorted(f"val/{n}" for n in picked)
    bad = CliRunner().invoke(cli.cli, ["preprocess", "folder", "--root", str(root), "--subset", "first10k"])
    assert bad.exit_code == 2 and "subsets are ImageNet validation images" in bad.output


PLACES_TRAIN = ["/a/airfield/00000001.jpg 0", "/a/airfield/00000002.jpg 0", "/b/beach/00000001.jpg 1"]
PLACES_VAL = ["Places365_val_00000001.jpg 1", "Places365_val_00000002.jpg 0"]


def _places_files(train_dir="data_256", val_dir="val_256"):
    files = {f"{train_dir}/{line.split()[0][1:]}": _image(i) for i, line in enumerate(PLACES_TRAIN)}
    files.update({f"{val_dir}/{line.split()[0]}": _image(5 + i) for i, line in enumerate(PLACES_VAL)})
    return files


@pytest.mark.parametrize("dirs,lists_in", [(("data_256", "val_256"), "."),
                                           (("data_large", "val_large"), "filelist_places365-standard")])
def test_places365_reads_the_official_lists(tmp_path, dirs, lists_in):
    write_tree(tmp_path, _places_files(*dirs))
    (tmp_path / lists_in).mkdir(exist_ok=True)
    (tmp_path / lists_in / "places365_train_standard.txt").write_text("\n".join(PLACES_TRAIN + ["/c/cave/9.jpg 2"]))
    (tmp_path / lists_in / "places365_val.txt").write_text("\n".join(PLACES_VAL) + "\n")
    listing = list_dataset("places365", str(tmp_path))
    assert listing.split("train") == sorted([f"{dirs[0]}/{ln.split()[0][1:]}" for ln in PLACES_TRAIN]
                                            + [f"{dirs[0]}/c/cave/9.jpg"])     # listed though missing
    assert listing.split("test") == [f"{dirs[1]}/{ln.split()[0]}" for ln in PLACES_VAL]


def test_places365_tars_give_the_shards_of_the_extracted_folders(tmp_path):
    files = _places_files()
    lists = {"places365_train_standard.txt": "\n".join(PLACES_TRAIN), "places365_val.txt": "\n".join(PLACES_VAL)}
    tree, tars = write_tree(tmp_path / "tree", files), tmp_path / "tars"
    tars.mkdir()
    (tars / "train_256_places365standard.tar").write_bytes(
        tar_bytes({k: v for k, v in files.items() if k.startswith("data_256/")}))
    (tars / "val_256.tar").write_bytes(tar_bytes({k: v for k, v in files.items() if k.startswith("val_256/")}))
    for folder in (tree, tars):
        for name, text in lists.items():
            (folder / name).write_text(text)
    assert set(list_dataset("places365", str(tars)).members) == set(files)
    cfg = dict(dataset="places365", size=64, min_side=32, shard_size=2, jobs=1)
    run(PrepConfig(root=str(tree), out_dir=str(tmp_path / "a"), **cfg), progress=False)
    run(PrepConfig(root=str(tars), out_dir=str(tmp_path / "b"), **cfg), progress=False)
    a = shard_contents(tmp_path / "a")
    assert a[1]["counts"]["written"] == 5
    assert_same(a, shard_contents(tmp_path / "b"))


def test_places365_errors(tmp_path):
    with pytest.raises(DatasetError, match="no Places365 lists"):
        list_dataset("places365", str(tmp_path))
    (tmp_path / "places365_val.txt").write_text("\n".join(PLACES_VAL))
    with pytest.raises(DatasetError, match="none of val_256, val_large"):
        list_dataset("places365", str(tmp_path))


def test_coco_train2017_and_val2017(tmp_path):
    with pytest.raises(DatasetError, match="no images in train2017"):
        list_dataset("coco", str(tmp_path))
    (tmp_path / "val2017.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="val2017.zip: not a readable zip file"):
        list_dataset("coco", str(tmp_path))
    (tmp_path / "val2017.zip").unlink()
    _touch(tmp_path, "train2017/000000000009.jpg", "train2017/000000000025.jpg", "val2017/000000000139.jpg",
           "annotations/instances_val2017.json")
    listing = list_dataset("coco", str(tmp_path))
    assert listing.split("train") == ["train2017/000000000009.jpg", "train2017/000000000025.jpg"]
    assert listing.split("test") == ["val2017/000000000139.jpg"]


def _coco_zips(folder, files, method):
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("train2017", "val2017"):
        with zipfile.ZipFile(folder / f"{part}.zip", "w", compression=method) as z:
            z.writestr(f"{part}/", b"")                                      # the folder entry `zip -r` writes
            for key, payload in files.items():
                if key.startswith(part + "/"):
                    z.writestr(key, payload)
    return folder


def test_coco_zips_read_in_place_give_the_shards_of_the_unzipped_folders(tmp_path):
    """COCO ships train2017.zip and val2017.zip; read in place, stored or deflated, they give the same shards as
    the unzipped folders, and a damaged entry is a recorded skip, not a crash."""
    files = {f"train2017/{i:012d}.jpg": _image(i) for i in range(5)}
    files.update({f"val2017/{i:012d}.jpg": _image(i) for i in range(5, 8)})
    tree = write_tree(tmp_path / "tree", files)
    cfg = dict(dataset="coco", size=64, min_side=32, shard_size=2, jobs=2)
    run(PrepConfig(root=str(tree), out_dir=str(tmp_path / "from_tree"), **cfg), progress=False)
    expected = shard_contents(tmp_path / "from_tree")
    assert expected[1]["counts"]["written"] == 8
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        zips = _coco_zips(tmp_path / f"zips{method}", files, method)
        listing = list_dataset("coco", str(zips))
        assert set(listing.members) == set(files) == {k for k, _ in listing.items}
        run(PrepConfig(root=str(zips), out_dir=str(tmp_path / f"out{method}"), **cfg), progress=False)
        assert_same(expected, shard_contents(tmp_path / f"out{method}"))

    zips = tmp_path / f"zips{zipfile.ZIP_DEFLATED}"
    key, member = sorted(list_dataset("coco", str(zips)).members.items())[0]
    data = bytearray((zips / "train2017.zip").read_bytes())
    start = member.header + 30 + len(key)                     # writestr adds no extra field
    data[start + 10:start + 20] = bytes(10)                   # zeroes inside its deflated bytes
    (zips / "train2017.zip").write_bytes(bytes(data))
    result = run(PrepConfig(root=str(zips), out_dir=str(tmp_path / "damaged"), **cfg), progress=False)
    skipped = contract.read_manifest(tmp_path / "damaged")["skipped"]
    assert result.written == 7 and [s["key"] for s in skipped] == [key]
    assert skipped[0]["reason"].startswith("undecodable: ") and "train2017.zip" in skipped[0]["reason"]
