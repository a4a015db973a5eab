"""Dataset layouts: turn a root folder into a sorted list of (key, split), the key being the source path
relative to the root (DESIGN.md, "Splits"). Listing never opens an image: a listed file that turns out to be
missing, empty or not an image is the preprocessor's business and ends up in the manifest with its reason.

    sample       colour photos bundled with scikit-image (no download); hash split
    folder       every image file under --root, recursively; the user's own splits when the root has train/
                 and val/ (or validation/ or test/) folders, else the hash split
    sun_objects  SUN2012 pascal layout: JPEGImages/ and ImageSets/Main/{train,test}.txt (ids, no extension)
    sun_scenes   SUN397: official Training_NN.txt / Testing_NN.txt lists (lines like /a/abbey/sun_x.jpg),
                 in the root, root/Partitions or a sibling Partitions/ folder
    imagenet     ILSVRC2012: train/ and val/ folders or the tars as distributed; val is the test split;
                 subsets first10k and ctest10k (pipeline/resources)
    places365    Places365-Standard: the official lists with data_256/ (or data_large/) and val_256/ (val_large/),
                 or their tars
    coco         COCO 2017: train2017/ and val2017/ (the test split)
    webdataset   WebDataset-style tar shards: one image member per sample

Archives (pipeline.archives) are read in place: a listing's `members` maps a key to its bytes inside a tar, keyed
as if the tar had been extracted where the distribution's instructions put it, so the tars and the extracted
tree give the same keys, hence the same shards.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.archives import ArchiveError, Member, ZipMember, nested_tar_members, tar_members, zip_members
from pipeline.config import PrepConfig
from pipeline.keys import key_of_name
from pipeline.registry import Registry
from pipeline.subsets import SubsetError, check_subset, select_subset

DATASETS = Registry("dataset")
SAMPLE_TEST_FRACTION = 0.25
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
TEST_FOLDERS = ("val", "validation", "test")   # beside train/, the first one present is a folder's test split
_HELD_OUT = "val/, validation/ or test/"


class DatasetError(ValueError):
    """The dataset root does not have the layout its name promises (a user error, shown without traceback)."""


@dataclass(frozen=True)
class Listing:
    name: str
    root: Path
    items: tuple[tuple[str, str], ...]        # (key, split), sorted by split then key
    members: Mapping[str, Member | ZipMember] = field(default_factory=dict)  # key -> its bytes in an archive
    split_rule: str = ""      # folder: "folders" (the user's train/ and val/) or "hash"; "" for fixed layouts
    split_note: str = ""      # how the split was made, for the summary

    def split(self, name: str) -> list[str]:
        return [k for k, s in self.items if s == name]


def hash_split(key: str, test_fraction: float) -> str:
    """Deterministic split of a key: stable across runs, machines and Python versions (no hash())."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2.0 ** 64
    return "test" if h < test_fraction else "train"


def _hash_order(key: str) -> bytes:
    return hashlib.sha1(("limit:" + key).encode()).digest()


def shard_order(keys, order: str = "mixed") -> list[str]:
    """The order in which a split's keys fill its shard files. "name": sorted, so a class-folder dataset puts one
    or two classes in each 256-key shard (ImageNet has ~1,300 images a class), and the loader's windowed shuffle
    (trainer.data.EpochSampler), which mixes only the samples of a few dozen shards, then gives runs of hundreds
    of batches drawn from a few dozen classes, while validation's "first N test samples" cover the first classes
    only. "mixed": the stable hash order that `limit` already uses, so every shard, window and prefix is a
    spread-out sample of the whole split, the same on every machine and for tar or extracted inputs."""
    return sorted(keys) if order == "name" else sorted(keys, key=_hash_order)


def list_dataset(name: str, root: str = "", partition: int = 1, test_fraction: float = 0.1,
                 split: str = "all", limit: int = 0, subset: str = "", split_rule: str | None = None) -> Listing:
    """The inputs of one run. `subset` names an evaluation subset (pipeline.subsets); `limit` keeps a stable,
    spread-out subset (the keys with the smallest hash), so a limited run on SUN397 is not just the first
    categories in alphabetical order. `split_rule` (folder only): the rule a manifest recorded, so that a folder
    is relisted as it was split; None: the rule its subfolders give now."""
    rule = {"split_rule": split_rule} if name == "folder" else {}     # the one layout with a choice of rule
    try:
        if subset:
            check_subset(name, subset, split)                 # before listing what may be 1.3 M files
        listing = DATASETS.build(name, root=root, partition=partition, test_fraction=test_fraction, **rule)
        items = [(k, s) for k, s in listing.items if split in ("all", s)]
        if subset:
            items = select_subset(listing, subset, split)
    except (ArchiveError, SubsetError) as e:
        raise DatasetError(str(e)) from None
    if limit:
        items = sorted(items, key=lambda it: _hash_order(it[0]))[:limit]
    order = {"train": 0, "test": 1}
    return Listing(name, listing.root, tuple(sorted(items, key=lambda it: (order[it[1]], it[0]))), listing.members,
                   listing.split_rule, listing.split_note)


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
        keys += [key_of_name(prefix + f) for f in filenames
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
def folder(root: str = "", partition: int = 1, test_fraction: float = 0.1, split_rule: str | None = None) -> Listing:
    """Every image under the root. Split: the user's own when the root has a train/ folder and a val/,
    validation/ or test/ one (split_rule "folders"; images elsewhere under the root are left out, and counted in
    the note), else a hash of each key with `test_fraction` ("hash"). None picks by the folders there now; a
    manifest's recorded rule is passed back by a rerun's checks, so an old folder keeps its split."""
    path = _need_root("folder", root)
    keys = sorted(_image_files(path))
    if not keys:
        raise DatasetError(f"--root {root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under it")
    folders = _split_folders(path)
    if split_rule is None:
        split_rule = "folders" if folders else "hash"
    if split_rule == "hash":
        note = f"split by a hash of each path: test fraction {test_fraction:g} (no train/ beside a {_HELD_OUT} folder)"
        return Listing("folder", path, tuple((k, hash_split(k, test_fraction)) for k in keys), {}, "hash", note)
    if folders is None:
        raise DatasetError(f"--root {root}: no train/ folder beside a {_HELD_OUT} one, which made this folder's "
                           "splits")
    split_of = {folders[0]: "train", folders[1]: "test"}
    items = [(k, split_of[k.split("/", 1)[0]]) for k in keys if "/" in k and k.split("/", 1)[0] in split_of]
    n = {s: sum(1 for _, x in items if x == s) for s in ("train", "test")}
    if not items:
        raise DatasetError(f"--root {root}: its {folders[0]}/ and {folders[1]}/ folders hold no image files")
    note = f"splits from the folders {folders[0]}/ ({n['train']}) and {folders[1]}/ ({n['test']})"
    if len(keys) > len(items):
        note += f"; {len(keys) - len(items)} image(s) elsewhere under the root left out"
    if test_fraction != PrepConfig.test_fraction:
        note += f"; test fraction {test_fraction:g} not used: the folders make the split"
    return Listing("folder", path, tuple(items), {}, "folders", note)


def _split_folders(root: Path) -> tuple[str, str] | None:
    """("train", the test folder) when the root holds the user's own splits, else None."""
    if not (root / "train").is_dir():
        return None
    test = next((d for d in TEST_FOLDERS if (root / d).is_dir()), None)
    return ("train", test) if test else None


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
        for line in _lines(file):
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
                return key_of_name(f"JPEGImages/{ident}{suffix}")
    return key_of_name(key)                      # missing files stay listed: skipped later with a reason


def _lines(file: Path) -> list[str]:
    """The lines of a list file; bytes that are not UTF-8 (a name from a Latin-1 machine) read as os.walk gives
    them, so that key_of_name keys them as it keys the file."""
    return file.read_text(encoding="utf-8", errors="surrogateescape").split("\n")


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
        for line in _lines(file):
            if line.strip():
                split_of.setdefault(key_of_name(line.strip().lstrip("/")), split)
    return Listing("sun_scenes", path, tuple(sorted(split_of.items())))


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES and not os.path.basename(name).startswith(".")


def _first_file(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.is_file()), None)


@DATASETS.register
def imagenet(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    """ILSVRC2012 as distributed: `train/nXXXXXXXX/*.JPEG` or ILSVRC2012_img_train.tar (a tar of 1,000 per-class
    tars, read in place as train/<wnid>/<file>), and `val/` flat (ILSVRC2012_val_NNNNNNNN.JPEG, the labels in
    LOC_val_solution.csv or the devkit's ground-truth list), `val/nXXXXXXXX/` (after the usual valprep.sh), or
    ILSVRC2012_img_val.tar (flat, read as val/<file>). Kaggle's copy (ILSVRC/Data/CLS-LOC/{train,val}) works
    too. Colorization needs no labels, so none are read. val is the held-out split (stored as "test")."""
    path = _need_root("imagenet", root)
    base = path / "ILSVRC" / "Data" / "CLS-LOC" if (path / "ILSVRC" / "Data" / "CLS-LOC").is_dir() else path
    items: list[tuple[str, str]] = []
    members: dict[str, Member] = {}
    if (base / "train").is_dir():
        items += [("train/" + k, "train") for k in _image_files(base / "train")]
    elif tar := _first_file(path / "ILSVRC2012_img_train.tar", base / "ILSVRC2012_img_train.tar"):
        # keyed where `tar xf nXXXXXXXX.tar -C train/nXXXXXXXX` puts each file; a name stored twice: the later wins
        found = {f"train/{inner[:-len('.tar')]}/{name}": member
                 for inner, name, member in nested_tar_members(str(tar)) if _is_image(name)}
        members.update(found)
        items += [(key, "train") for key in found]
    if (base / "val").is_dir():
        items += [("val/" + k, "test") for k in _image_files(base / "val")]
    elif tar := _first_file(path / "ILSVRC2012_img_val.tar", base / "ILSVRC2012_img_val.tar"):
        found = {"val/" + name: member for name, member in tar_members(str(tar)) if _is_image(name)}
        members.update(found)
        items += [(key, "test") for key in found]
    if not items:
        raise DatasetError(f"--root {root}: no ImageNet images: expected train/nXXXXXXXX/*.JPEG and/or val/ "
                           "(flat or class folders), or ILSVRC2012_img_train.tar / ILSVRC2012_img_val.tar")
    return Listing("imagenet", base, tuple(sorted(items)), members)


PLACES_LISTS = {"train": "places365_train_standard.txt", "test": "places365_val.txt"}
PLACES_DIRS = {"train": ("data_256", "train_256", "data_large", "train_large"), "test": ("val_256", "val_large")}
PLACES_TARS = ("train_256_places365standard.tar", "train_large_places365standard.tar", "val_256.tar",
               "val_large.tar")


@DATASETS.register
def places365(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    """Places365-Standard: the official lists places365_train_standard.txt (lines `/a/airfield/00000001.jpg 0`)
    and places365_val.txt (`Places365_val_00000001.jpg 165`), in the root or its filelist_places365-standard/,
    with the images of the 256x256 release (data_256/, val_256/) or the high-resolution one (data_large/,
    val_large/), extracted or as their tars (train_256_places365standard.tar holds data_256/..., val_256.tar
    val_256/...). The 256 folders win when both are there. The val list is the test split."""
    path = _need_root("places365", root)
    lists = {split: _first_file(path / name, path / "filelist_places365-standard" / name)
             for split, name in PLACES_LISTS.items()}
    if not any(lists.values()):
        raise DatasetError(f"--root {root}: no Places365 lists ({', '.join(PLACES_LISTS.values())}) in it or in "
                           "filelist_places365-standard/ (they come in filelist_places365-standard.tar)")
    in_tars: dict[str, Member] = {}
    for tar in (path / t for t in PLACES_TARS):
        if tar.is_file():
            in_tars.update(tar_members(str(tar)))
    tops = {key.split("/", 1)[0] for key in in_tars}
    items, members = [], {}
    for split, file in lists.items():
        if file is None:
            continue
        folder = next((d for d in PLACES_DIRS[split] if (path / d).is_dir()), None) or \
            next((d for d in PLACES_DIRS[split] if d in tops), None)
        if folder is None:
            raise DatasetError(f"{file.name} lists images, but none of {', '.join(PLACES_DIRS[split])} is a folder "
                               f"under --root {root} or inside {', '.join(PLACES_TARS)} there")
        for line in _lines(file):
            if line.split():
                key = key_of_name(f"{folder}/{line.split()[0].lstrip('/')}")
                items.append((key, split))
                if key in in_tars and not (path / folder).is_dir():
                    members[key] = in_tars[key]
    return Listing("places365", path, tuple(sorted(set(items))), members)


@DATASETS.register
def coco(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    """COCO 2017 images: train2017/ and val2017/ (the test split), or train2017.zip / val2017.zip as downloaded,
    read in place under the same keys (train2017/000000000009.jpg). A folder wins over its zip. Labels are not
    needed."""
    path = _need_root("coco", root)
    items, members = [], {}
    for folder, split in (("train2017", "train"), ("val2017", "test")):
        if (path / folder).is_dir():
            items += [(f"{folder}/{k}", split) for k in _image_files(path / folder)]
        elif (path / f"{folder}.zip").is_file():
            found = {name: m for name, m in zip_members(str(path / f"{folder}.zip"))
                     if name.startswith(folder + "/") and _is_image(name)}
            members.update(found)
            items += [(key, split) for key in found]
    if not items:
        raise DatasetError(f"--root {root}: no images in train2017/ or val2017/ (or train2017.zip, val2017.zip)")
    return Listing("coco", path, tuple(sorted(items)), members)


def _split_of_tar(rel: str) -> str | None:
    tokens = set(re.split(r"[^a-z0-9]+", rel.lower()))
    if "train" in tokens:
        return "train"
    return "test" if tokens & {"val", "valid", "validation", "test"} else None


@DATASETS.register
def webdataset(root: str = "", partition: int = 1, test_fraction: float = 0.1) -> Listing:
    """WebDataset-style shards: the .tar files under --root, read in place. A sample is the members sharing a
    key (a name up to the first dot of its file name: 000123.jpg, 000123.cls); its input is the first member
    whose extension is an image suffix (.jpg, .png, ...; 000123.seg.png is not one), keyed by its member name,
    so the keys are those of the extracted files (a name stored twice: its later copy, as extracting leaves). Split: a tar whose path names train, or val / valid /
    validation / test, gives that split; otherwise the hash split of the key, as for `folder` (which then gives
    the same shards from the extracted tars)."""
    path = _need_root("webdataset", root)
    tars = sorted(k for k in _all_files(path) if k.endswith(".tar") and _regular_or_told(path, k))
    if not tars:
        raise DatasetError(f"--root {root}: no .tar shards under it")
    items, members, origin = [], {}, {}
    for rel in tars:
        split = _split_of_tar(rel)
        inputs, last = {}, {}              # sample -> its first image member's name; name -> its last copy
        for name, member in tar_members(str(path / rel)):
            directory, _, base = name.rpartition("/")
            stem, _, ext = base.partition(".")
            if "." not in ext and _is_image(name):
                inputs.setdefault(f"{directory}/{stem}", name)
                last[name] = member        # a name stored twice: the later copy, what `tar x` leaves on disk
        for name in inputs.values():
            if name in origin:
                raise DatasetError(f"--root {root}: sample {name} is in both {origin[name]} and {rel}")
            origin[name], members[name] = rel, last[name]
            items.append((name, split or hash_split(name, test_fraction)))
    return Listing("webdataset", path, tuple(sorted(items)), members)


def _regular_or_told(root: Path, rel: str) -> bool:
    """True for a regular file (links followed); else one line on stderr saying why it is left out: a FIFO would
    block the listing, a device never end, a dangling link is no data."""
    try:
        mode = os.stat(root / rel).st_mode
    except OSError as e:
        why = e.strerror or str(e)
    else:
        if stat.S_ISREG(mode):
            return True
        kinds = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                 stat.S_IFSOCK: "a socket"}
        why = f"not a regular file ({kinds.get(stat.S_IFMT(mode), 'a directory')})"
    print(f"webdataset: skipped {key_of_name(rel)}: {why}", file=sys.stderr)
    return False


def _all_files(root: Path) -> list[str]:
    return [os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            for d, _, files in os.walk(root) for f in files if not f.startswith(".")]
