"""Which files colorize, evaluate and compare read, and the output name each one gets.

A file named on the command line is always tried. In a folder (walked recursively, hidden entries skipped),
a file is an input when preprocessing would read it: its suffix is one of pipeline.datasets.IMAGE_SUFFIXES
(the list `preprocess --dataset folder` uses), or its first bytes are those of a format the decoder reads
(pipeline.images.sniff_format, which decides by content as `load_rgb` does), so a photo saved without a
suffix or under an odd one is not passed over. A file with an image suffix whose content is no image is an
input too: it is reported as a bad file rather than silently ignored, since its name says it is a photo.
Everything else (notes, sidecar files) is counted as ignored.

One policy for files that cannot be decoded, in colorize, evaluate and compare alike: each is printed in one
line (`error: PATH: reason`) as it is met, the others are still done, the summary counts them, and the
command exits with status 1 (report_unreadable below, and cli.py).
"""
from __future__ import annotations

import os
from pathlib import Path

from tqdm import tqdm

from pipeline.datasets import IMAGE_SUFFIXES
from pipeline.images import sniff_format

READ_ERRORS = (OSError, ValueError)      # what load_rgb raises for a bad file (ImageError is a ValueError)

HEADER_BYTES = 16                # sniff_format needs the first 12


def is_image_file(path) -> bool:
    """True when the folder walk takes `path` as an input (see the module docstring)."""
    if os.path.splitext(os.fspath(path))[1].lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return sniff_format(f.read(HEADER_BYTES)) is not None
    except OSError:
        return False


def list_inputs(inputs, exclude: Path | None = None, suffix: str = ".png") -> tuple[list[tuple[Path, Path]], int, list]:
    """Expand files and folders into (input path, output path relative to --out) pairs.

    Folders keep their relative layout under their own name (`colorize photos` writes out/photos/...; `.`
    names its folder too); `exclude` (the output folder) is not walked; outputs get `suffix`, and names that
    would collide (x.jpg and x.png) get a numeric suffix. Returns the pairs, the count of folder files that
    are not images, and (path, reason) for inputs that do not exist."""
    pairs, ignored, missing = [], 0, []
    exclude = exclude.resolve() if exclude else None
    for item in map(Path, inputs):
        if item.is_dir():
            item = Path(os.path.abspath(item))          # so that "." still names its folder in the output
            for dirpath, dirnames, filenames in os.walk(item):
                here = Path(dirpath)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                     and (here / d).resolve() != exclude)
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    if not is_image_file(here / name):
                        ignored += 1
                        continue
                    pairs.append((here / name, (here / name).relative_to(item.parent)))
        elif item.is_file():
            pairs.append((item, Path(item.name)))
        else:
            missing.append((item, "no such file or folder"))
    seen, unique = set(), []
    for src, rel in pairs:
        out, n = rel.with_name(rel.stem + suffix), 1
        while out in seen:
            out, n = rel.with_name(f"{rel.stem}-{n}{suffix}"), n + 1
        seen.add(out)
        unique.append((src, out))
    return unique, ignored, missing


def report_unreadable(path, error: Exception, echo: bool = True) -> tuple[str, str]:
    """Print `error: PATH: reason` (unless echo is False: the caller has already said it) -> (path, reason)."""
    reason = str(error) or type(error).__name__
    if echo:
        tqdm.write(f"error: {path}: {reason}")
    return str(path), reason
