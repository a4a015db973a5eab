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

Only regular files are read (a link is followed first): a FIFO would block the read forever and a link to
/dev/zero would fill the memory. Such an entry named on the command line, or carrying an image suffix in a
folder, is reported in one line as not a regular file; without one it is counted as ignored (its content
cannot be sniffed). Every read is bounded: read_input opens without blocking, checks the open file again and
reads at most the size it had then (MAX_INPUT_BYTES at most).

Output names: x.jpg becomes x.png (with --format png). When two inputs of a folder share a stem (x.jpg and
x.png), or a file's output name is a folder of the output tree (a.jpg beside a folder a.png/), the inputs
concerned keep their own suffix (x.jpg.png), except the one whose name already is the output name (x.png):
adding x.jpg beside x.png leaves x.png's output where it was. A name still taken (two files of the same
name from different folders named on the command line) gets -1, -2 .. in command-line order. File names are
kept byte for byte, UTF-8 or not (they are str with surrogate escapes here, os.fsencode gives the bytes
back); `shown` makes such a name printable.
"""
from __future__ import annotations

import os
import stat
from collections import Counter
from pathlib import Path


from pipeline.datasets import IMAGE_SUFFIXES
from pipeline.images import ImageError, sniff_format
from pipeline.progress import write as progress_write

READ_ERRORS = (OSError, ValueError)      # what load_rgb raises for a bad file (ImageError is a ValueError)

HEADER_BYTES = 16                # sniff_format needs the first 12
MAX_INPUT_BYTES = 4 << 30        # far above any photo (an uncompressed 16-bit 20000 x 20000 TIFF is 2.4 GB)
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def shown(path) -> str:
    """`path` as printable text: bytes that are not UTF-8 (a Latin-1 name) as \\xNN escapes. Printing the
    str itself would raise UnicodeEncodeError on a terminal whose encoding is strict."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def not_regular(path) -> str | None:
    """None for a regular file (links followed); else what it is, for a one-line skip."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "a broken link" if os.path.islink(path) else "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    return next((what for test, what in _KINDS if test(mode)), "not a file")


def _unusable(what: str) -> str:
    """not_regular's answer -> the one-line reason a user reads."""
    if what == "missing":
        return "no such file or folder"
    return what if what.startswith("unreadable") else f"not a regular file ({what})"


def read_input(path, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of the input file at `path`, read once and bounded: ImageError (a ValueError) when it is not
    a regular file, now that it is open (O_NONBLOCK: opening a FIFO does not wait for a writer), or larger
    than `limit`; OSError when it cannot be opened. Never reads more than the size the file had when opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ImageError("missing", f"{shown(path)} does not exist") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            what = next((w for test, w in _KINDS if test(st.st_mode)), "not a file")
            raise ImageError("not a regular file", what)
        if st.st_size > limit:
            raise ImageError("too large", f"{st.st_size / 1e9:.1f} GB, more than the {limit / 1e9:.1f} GB read at most")
        return f.read(st.st_size)


def is_image_file(path) -> bool:
    """True when the folder walk takes the regular file `path` as an input (see the module docstring)."""
    if os.path.splitext(os.fspath(path))[1].lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return sniff_format(f.read(HEADER_BYTES)) is not None
    except OSError:
        return False


def list_inputs(inputs, exclude=None, suffix: str = ".png") -> tuple[list[tuple[Path, Path]], int, list]:
    """Expand files and folders into (input path, output path relative to --out) pairs.

    Folders keep their relative layout under their own name (`colorize photos` writes out/photos/...; `.`
    names its folder too); `exclude` (a folder or a list of them: where the outputs go) is not walked; outputs
    get `suffix`, named as the module docstring says. Returns the pairs, the count of folder files that are
    not images, and (path, reason) for inputs that do not exist or are not regular files."""
    pairs, ignored, unusable = [], 0, []
    excluded = {Path(os.path.abspath(p)).resolve() for p in
                ([] if exclude is None else [exclude] if isinstance(exclude, (str, os.PathLike)) else exclude)}
    for item in map(Path, inputs):
        if item.is_dir():
            item = Path(os.path.abspath(item))          # so that "." still names its folder in the output
            for dirpath, dirnames, filenames in os.walk(item):
                here = Path(dirpath)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                     and (here / d).resolve() not in excluded)
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    what = not_regular(here / name)
                    if what is None and is_image_file(here / name):
                        pairs.append((here / name, (here / name).relative_to(item.parent)))
                    elif what is not None and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES:
                        unusable.append((here / name, _unusable(what)))
                    else:
                        ignored += 1
        elif (what := not_regular(item)) is None:
            pairs.append((item, Path(item.name)))
        else:
            unusable.append((item, _unusable(what)))
    return output_names(pairs, suffix), ignored, unusable


def output_names(pairs: list[tuple[Path, Path]], suffix: str) -> list[tuple[Path, Path]]:
    """(input, relative input path) -> (input, relative output path), unique and stable (module docstring)."""
    plain = [rel.with_name(rel.stem + suffix) for _, rel in pairs]
    folders = {parent for _, rel in pairs for parent in rel.parents}
    claims = Counter(plain)
    wanted = [rel.with_name(rel.name + suffix) if (claims[out] > 1 and rel.name != out.name) or out in folders
              else out for (_, rel), out in zip(pairs, plain)]
    taken, named = set(folders), [None] * len(pairs)
    # plain names first, so that a kept-suffix name (x.jpg.png) never takes a file's own plain one
    for i in sorted(range(len(pairs)), key=lambda i: wanted[i] != plain[i]):
        out, n = wanted[i], 1
        while out in taken:
            out, n = wanted[i].with_name(f"{wanted[i].stem}-{n}{suffix}"), n + 1
        taken.add(out)
        named[i] = (pairs[i][0], out)
    return named


def report_unreadable(path, error: Exception, echo: bool = True) -> tuple[str, str]:
    """Print `error: PATH: reason` (unless echo is False: the caller has already said it) -> (path, reason)."""
    reason = str(error) or type(error).__name__
    if echo:
        progress_write(f"error: {shown(path)}: {reason}")
    return str(path), reason
