"""The ImageNet evaluation subsets colorization papers report on, as `--subset NAME` of `preprocess imagenet`.

    first10k   ILSVRC2012_val_00000001 .. 00010000.JPEG: the first 10,000 validation images, the reference's
               (richzhang/colorization) validation set
    ctest10k   colorization-pytorch's 10,000 test images: resources/ilsvrclin12_val_inds.npy there, 0-based
               indices into the 50,000 validation files sorted by name (index i is ILSVRC2012_val_{i+1:08d}.JPEG,
               as its make_ilsvrc_dataset.py links them). Shipped as pipeline/resources/ilsvrclin12_val_inds.txt,
               whose header names the source commit and the original file's SHA-256; loading checks it.

A subset is a list of validation file names, not of positions in what is on disk, so a partial or class-foldered
val/ picks the same images; a subset image that is not there is still listed and shows up in the manifest as a
"missing" skip (seen = written + skipped still holds, and nothing is silently left out).
"""
from __future__ import annotations

import hashlib
import struct
from importlib import resources

SUBSETS = ("first10k", "ctest10k")
CTEST10K_FILE = "ilsvrclin12_val_inds.txt"
# numpy's .npy format 1.0 header as the 2018 file has it (newer numpy pads to 128 bytes), so the text resource
# can rebuild the original byte for byte and be checked against its published SHA-256
_NPY_HEADER = b"\x93NUMPY\x01\x00F\x00{'descr': '<i8', 'fortran_order': False, 'shape': (%d,), }        \n"


class SubsetError(ValueError):
    """A subset that does not apply (unknown name, another dataset, the train split) or a damaged resource."""


def read_resource(name: str) -> tuple[dict[str, str], list[int]]:
    """A text resource of pipeline/resources: ({header field: value}, the integers, one a line)."""
    text = (resources.files("pipeline") / "resources" / name).read_text()
    header, values = {}, []
    for line in text.splitlines():
        if line.startswith("#"):
            field, sep, value = line[1:].partition(":")
            if sep:
                header[field.strip()] = value.strip()
        elif line.strip():
            values.append(int(line))
    return header, values


def original_npy(indices: list[int]) -> bytes:
    """The .npy file (int64, 1-D) these indices were converted from, rebuilt exactly."""
    return _NPY_HEADER % len(indices) + struct.pack(f"<{len(indices)}q", *indices)


def ctest10k_indices() -> list[int]:
    """colorization-pytorch's 10,000 test indices, checked against the SHA-256 its header records."""
    header, indices = read_resource(CTEST10K_FILE)
    recorded = next((v.split()[-1] for k, v in header.items() if k.startswith("sha256")), "")
    actual = hashlib.sha256(original_npy(indices)).hexdigest()
    if actual != recorded:
        raise SubsetError(f"pipeline/resources/{CTEST10K_FILE} is damaged: its indices hash to {actual}, "
                          f"its header records {recorded or 'nothing'}; restore it from the repository")
    return indices


def subset_names(subset: str) -> list[str]:
    """Validation file names of a subset, in index order."""
    if subset == "first10k":
        return [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 10_001)]
    if subset == "ctest10k":
        return [f"ILSVRC2012_val_{i + 1:08d}.JPEG" for i in ctest10k_indices()]
    raise SubsetError(f"unknown subset {subset!r}; known: {', '.join(SUBSETS)}")


def check_subset(dataset: str, subset: str, split: str) -> None:
    """Raise SubsetError unless `subset` applies to this dataset and split (checked before any listing)."""
    if dataset != "imagenet":
        raise SubsetError(f"--subset {subset}: subsets are ImageNet validation images; dataset is {dataset}")
    if split == "train":
        raise SubsetError(f"--subset {subset} picks validation images: use --split val (or all), not train")
    if subset not in SUBSETS:
        raise SubsetError(f"unknown subset {subset!r}; known: {', '.join(SUBSETS)}")


def select_subset(listing, subset: str, split: str) -> list[tuple[str, str]]:
    """The (key, "test") items of an imagenet Listing that a subset names; names not on disk keep the flat
    val/<name> key, so they are skipped as missing. SubsetError when it does not apply or its list is damaged."""
    check_subset(listing.name, subset, split)
    names = subset_names(subset)
    by_name = {key.rsplit("/", 1)[-1]: key for key, s in listing.items if s == "test"}
    return [(by_name.get(name, f"val/{name}"), "test") for name in names]
