import pytest

from hostile_files import jpeg_bytes, photo
from pipeline.datasets import DATASETS, DatasetError, hash_split, list_dataset


def _touch(path, payload=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


def test_registry_knows_every_layout():
    assert sorted(DATASETS) == ["coco", "folder", "imagenet", "places365", "sample", "sun_objects", "sun_scenes",
                                "webdataset"]
    with pytest.raises(ValueError, match="unknown dataset 'imagenet21k'"):
        DATASETS.build("imagenet21k")


def test_sample_lists_skimage_photos_with_a_test_image():
    listing = list_dataset("sample")
    keys = [k for k, _ in listing.items]
    assert {"astronaut.png", "chelsea.png", "coffee.png", "camera.png"} <= set(keys)
    assert (listing.root / "astronaut.png").is_file() and "lfw_subset.npy" not in keys
    assert "rocket.jpg" in listing.split("test")          # the demo gets a colour test image


def test_folder_is_recursive_sorted_and_split_by_hash(tmp_path):
    for i in range(40):
        _touch(tmp_path / f"d{i % 3}" / f"img_{i:02d}.JPG")
    _touch(tmp_path / "notes.txt")
    _touch(tmp_path / ".hidden" / "x.jpg")
    _touch(tmp_path / "d0" / ".x.jpg")
    (tmp_path / "d1" / "loop").symlink_to(tmp_path, target_is_directory=True)   # a cycle must not hang
    listing = list_dataset("folder", str(tmp_path), test_fraction=0.25)
    keys = [k for k, _ in listing.items]
    assert len(keys) == 40 and all(k.startswith("d") and k.endswith(".JPG") for k in keys)
    assert listing.split("train") == sorted(listing.split("train"))
    assert [s for _, s in listing.items] == sorted(s for _, s in listing.items)[::-1]   # train block, then test
    assert all(s == hash_split(k, 0.25) for k, s in listing.items)
    assert 2 <= len(listing.split("test")) <= 20
    again = list_dataset("folder", str(tmp_path), test_fraction=0.25)
    assert again == listing                                  # deterministic


def test_limit_is_a_stable_spread_out_subset(tmp_path):
    for c in "abcdefgh":
        for i in range(10):
            _touch(tmp_path / c / f"{i}.jpg")
    a = list_dataset("folder", str(tmp_path), limit=16)
    assert len(a.items) == 16 and a == list_dataset("folder", str(tmp_path), limit=16)
    assert len({k.split("/")[0] for k, _ in a.items}) >= 4   # not just the first folders alphabetically
    only_test = list_dataset("folder", str(tmp_path), split="test")
    assert only_test.items and all(s == "test" for _, s in only_test.items)


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="needs --root"):
        list_dataset("folder", "")
    with pytest.raises(DatasetError, match="no such directory"):
        list_dataset("folder", str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="no image files"):
        list_dataset("folder", str(tmp_path))


def test_sun_objects_uses_its_image_sets(tmp_path):
    _touch(tmp_path / "JPEGImages" / "sun_a.jpg", jpeg_bytes(photo()))
    _touch(tmp_path / "JPEGImages" / "sun_b.jpg", jpeg_bytes(photo()))
    _touch(tmp_path / "JPEGImages" / "sun_c.png")
    _touch(tmp_path / "ImageSets" / "Main" / "train.txt", b"sun_a\nsun_c\nsun_missing\n\n")
    _touch(tmp_path / "ImageSets" / "Main" / "test.txt", b"sun_b\nsun_a\n")
    listing = list_dataset("sun_objects", str(tmp_path))
    assert listing.items == (("JPEGImages/sun_a.jpg", "train"), ("JPEGImages/sun_c.png", "train"),
                             ("JPEGImages/sun_missing.jpg", "train"), ("JPEGImages/sun_b.jpg", "test"))
    with pytest.raises(DatasetError, match="ImageSets/Main"):
        list_dataset("sun_objects", str(tmp_path / "JPEGImages"))


@pytest.mark.parametrize("where", ["root", "sibling"])
def test_sun_scenes_reads_the_partition_lists(tmp_path, where):
    root = tmp_path / "SUN397"
    _touch(root / "a" / "abbey" / "sun_1.jpg")
    _touch(root / "b" / "beach" / "sun_2.jpg")
    lists = root if where == "root" else tmp_path / "Partitions"
    _touch(lists / "Training_02.txt", b"/a/abbey/sun_1.jpg\n/a/abbey/sun_gone.jpg\n")
    _touch(lists / "Testing_02.txt", b"/b/beach/sun_2.jpg\n")
    listing = list_dataset("sun_scenes", str(root), partition=2)
    assert listing.items == (("a/abbey/sun_1.jpg", "train"), ("a/abbey/sun_gone.jpg", "train"),
                             ("b/beach/sun_2.jpg", "test"))
    with pytest.raises(DatasetError, match=r"Training_01.txt and Testing_01.txt not found in .*Partitions"):
        list_dataset("sun_scenes", str(root), partition=1)
