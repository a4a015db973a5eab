"""Dataset layouts: turn a root folder into a sorted list of (key, split), the key being the source path
relative to the root (DESIGN.md, "Splits"). Listing never opens an image: a listed file that turns out to be
missing, empty or not an image is the preprocessor's business and ends up in the manifest with its reason.

    sample       colour photos bundled with scikit-image (no download); hash split
    folder       every image file under --root, recursively; hash split
    sun_objects  SUN2012 pascal layout: JPEGImages/ and ImageSets/Main/{train,test}.txt (ids, no extension)
    sun_scenes   SUN397: official Training_NN.txt / Testing_NN.txt lists (lines like /a/abbey/sun_x.jpg),
                 in the root, root/Partitions or a sibling Partitions/ folder
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.registry import Registry

DATASETS = Registry("dataset")
SAMPLE_TEST_FRACTION = 0.25
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class DatasetError(ValueError):
    """The dataset root does not have the layout its name promises (a user error, shown without traceback)."""


@dataclass(frozen=True)
class Listing:
    name: str
    root: Path
    items: tuple[tuple[str, str], ...]        # (key, split), sorted by split then key

    def split(self, name: str) -> list[str]:
        return [k for k, s in self.items if s == name]


def hash_split(key: str, test_fraction: float) -> str:
    """Deterministic split of a key: stable across runs, machines and Python versions (no hash())."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if h < test_fraction else "train"


def _hash_order(key: str) -> bytes:
    return hashlib.sha1(("limit:" + key).encode()).digest()


def list_dataset(name: str, root: str = "", partition: int = 1, test_fraction: float = 0.1,
                 split: str = "all", limit: int = 0) -> Listing:
    """The inputs of one run. `limit` keeps a stable, spread-out subset (the keys with the smallest hash),
    so a limited run on SUN397 is not just the first categories in alphabetical order."""
    listing = DATASETS.build(name, root=root, partition=partition, test_fraction=test_fraction)
    items = [(k, s) for k, s in listing.items if split in ("all", s)]
    if limit:
        items = sorted(items, key=lambda it: _hash_order(it[0]))[:limit]
    order = {"train": 0, "test": 1}
    return Listing(name, listing.root, tuple(sorted(items, key=lambda it: (order[it[1]], it[0]))))


def _need_root(name: str, root: str) -> Path:
    if not root:
        raise DatasetError(f"dataset {name!r} needs --root DIR")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetError(f"--root {root}: no such directory")
    return path.resolve()


def _image_files(root: Path) -> list[str]:
    """Keys of the image files under root, by name. String operations rather than pathlib: a folder of SUN397's
    108k photos is listed in the main process before any worker starts, and pathlib's parsing made that
    ~50 us a file on the 16-core machine (0.12-0.21 s for 2,400)."""
    keys, seen, top = [], set(), os.fspath(root)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:                          # a symlink cycle: do not walk a folder twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, top)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        keys += [prefix + f for f in filenames
                 if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
    return keys


@DATASETS.register
def sample(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    """The images in scikit-image's data folder; the grayscale ones are listed too and skipped with a reason.
    Only 11 of them have colour, so the test share is at least SAMPLE_TEST_FRACTION: the demo gets a test image."""
    import skimage
    path = Path(skimage.__file__).resolve().parent / "data"
    keys = sorted(k for k in _image_files(path) if "/" not in k)
    fraction = max(test_fraction, SAMPLE_TEST_FRACTION)
    return Listing("sample", path, tuple((k, hash_split(k, fraction)) for k in keys))


@DATASETS.register
def folder(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    path = _need_root("folder", root)
    keys = sorted(_image_files(path))
    if not keys:
        raise DatasetError(f"--root {root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under it")
    return Listing("folder", path, tuple((k, hash_split(k, test_fraction)) for k in keys))


@DATASETS.register
def sun_objects(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    """SUN2012 in pascal layout. An id listed in both image sets counts once, as train."""
    path = _need_root("sun_objects", root)
    sets = path / "ImageSets" / "Main"
    lists = {s: sets / f"{s}.txt" for s in ("train", "test") if (sets / f"{s}.txt").is_file()}
    if not (path / "JPEGImages").is_dir() or not lists:
        raise DatasetError(f"--root {root}: expected SUN2012 pascal layout with JPEGImages/ and "
                           f"ImageSets/Main/train.txt and/or test.txt")
    split_of: dict[str, str] = {}
    for split, file in lists.items():
        for line in file.read_text().split("\n"):
            ident = line.split()[0] if line.split() else ""
            if ident:
                split_of.setdefault(ident, split)
    return Listing("sun_objects", path, tuple(sorted((_jpeg_key(path, i), s) for i, s in split_of.items())))


def _jpeg_key(root: Path, ident: str) -> str:
    """Key of a pascal id: JPEGImages/<id>.jpg, or the file with another image suffix if that one exists."""
    key = f"JPEGImages/{ident}.jpg"
    if not (root / key).exists():
        for suffix in (".jpeg", ".JPG", ".png", ".bmp"):
            if (root / f"JPEGImages/{ident}{suffix}").exists():
                return f"JPEGImages/{ident}{suffix}"
    return key                                   # missing files stay listed: skipped later with a reason


def partition_lists(root: Path, partition: int) -> tuple[Path, Path]:
    names = (f"Training_{partition:02d}.txt", f"Testing_{partition:02d}.txt")
    places = (root, root / "Partitions", root.parent / "Partitions")
    for place in places:
        if all((place / n).is_file() for n in names):
            return place / names[0], place / names[1]
    raise DatasetError(f"SUN397 partition {partition}: {names[0]} and {names[1]} not found in "
                       + ", ".join(str(p) for p in places)
                       + " (download Partitions.zip from the SUN397 page and unpack it next to the images)")


@DATASETS.register
def sun_scenes(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    path = _need_root("sun_scenes", root)
    train_list, test_list = partition_lists(path, partition)
    split_of: dict[str, str] = {}
    for split, file in (("train", train_list), ("test", test_list)):
        for line in file.read_text().split("\n"):
            if line.strip():
                split_of.setdefault(line.strip().lstrip("/"), split)
    return Listing("sun_scenes", path, tuple(sorted(split_of.items())))
