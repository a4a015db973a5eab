"""Reading inputs straight out of uncompressed tar files, without extracting them.

An uncompressed tar stores each member's bytes contiguously after its 512-byte header, and a tar nested in a
tar (ILSVRC2012_img_train.tar holds 1,000 per-class tars) is itself contiguous inside the outer file. So every
image, nested or not, is a byte range of one file on disk: a `Member` (archive path, data offset, size).
Listing reads only the headers (Python's tarfile, which seeks over the data); a worker reads a member with one
pread on the archive it opens itself, so no image bytes pass through the main process.

Hand-written on top of tarfile because neither tarfile nor webdataset offers random access by offset: tarfile
reads members through a TarFile object that must parse headers from the start, and webdataset streams a shard
from its beginning. Compressed tars (.tar.gz, ...) have no byte offsets to seek to and are refused.
"""
from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from typing import NamedTuple


class ArchiveError(ValueError):
    """A file that should be an uncompressed tar is not one (compressed, truncated, not a tar)."""


class Member(NamedTuple):
    """One input inside an archive: `size` bytes at byte `offset` of the file at `archive` (absolute path)."""
    archive: str
    offset: int
    size: int


def _open(path: str) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")          # "r:" refuses compression: offsets must be file offsets
    except tarfile.ReadError as e:
        with open(path, "rb") as f:
            magic = f.read(6)
        packed = {b"\x1f\x8b": "gzip", b"BZ": "bzip2", b"\xfd7zXZ": "xz", b"(\xb5/\xfd": "zstd"}
        kind = next((v for k, v in packed.items() if magic.startswith(k)), None)
        if kind:
            raise ArchiveError(f"{path}: a {kind}-compressed tar has no byte offsets to read members from; "
                               f"decompress it once (e.g. `{kind} -d`) and point --root at the plain .tar") from None
        raise ArchiveError(f"{path}: not a readable tar file ({e})") from None


def tar_members(path: str) -> Iterator[tuple[str, Member]]:
    """(member name, Member) for every regular file in the tar at `path`, in archive order. Names lose a
    leading "./" (tar -C dir . writes them)."""
    path = os.path.abspath(path)
    with _open(path) as tar:
        try:
            for info in tar:
                if info.isreg() and not info.sparse:
                    yield _name(info.name), Member(path, info.offset_data, info.size)
        except (tarfile.TarError, EOFError) as e:
            raise ArchiveError(f"{path}: broken tar ({e})") from None


PARALLEL_LISTING_MIN = 64        # inner tars from which listing them is worth starting worker processes


def nested_tar_members(path: str, jobs: int = 0) -> Iterator[tuple[str, str, Member]]:
    """(inner tar name, member name, Member) for every regular file of every .tar member of the tar at `path`
    (the layout of ILSVRC2012_img_train.tar), in archive order; offsets are into the outer file. The inner tars
    are listed by `jobs` processes (0: up to 8, when there are at least PARALLEL_LISTING_MIN of them): tarfile
    parses a header in ~30-50 us of Python, ~1 min for ImageNet's 1.28 M on one core."""
    path = os.path.abspath(path)
    with _open(path) as outer:
        try:
            inners = [(_name(i.name), i.offset_data, i.size) for i in outer if i.isreg() and i.name.endswith(".tar")]
        except (tarfile.TarError, EOFError) as e:
            raise ArchiveError(f"{path}: broken tar ({e})") from None
    if not jobs:
        jobs = min(8, os.cpu_count() or 1) if len(inners) >= PARALLEL_LISTING_MIN else 1
    from pipeline.parallel import imap_unordered
    listed = dict(imap_unordered(_list_inner, inners, path, jobs))
    for name, _, _ in inners:
        for member_name, offset, size in listed[name]:
            yield name, member_name, Member(path, offset, size)


def _list_inner(inner: tuple[str, int, int], path: str) -> tuple[str, list[tuple[str, int, int]]]:
    """(name, [(member name, offset, size)]) of one tar stored at `inner` = (name, offset, size) inside `path`.
    tarfile reads from the file's current position and reports offsets from the file's start, so opening it
    there gives offsets into the outer file directly; members must end within the inner tar's bytes."""
    name, start, size = inner
    end, found = start + size, []
    with open(path, "rb") as f:
        f.seek(start)
        try:
            with tarfile.open(fileobj=f, mode="r:") as tar:
                for m in tar:
                    if m.offset >= end:                     # no end-of-archive blocks: the outer tar's next header
                        break
                    if m.offset_data + m.size > end:
                        raise ArchiveError(f"{path}: member {m.name} of {name} runs past the end of {name}")
                    if m.isreg() and not m.sparse:
                        found.append((_name(m.name), m.offset_data, m.size))
        except (tarfile.TarError, EOFError) as e:
            raise ArchiveError(f"{path}: {name} is a broken tar ({e})") from None
    return name, found


def _name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name


def read_member(member: Member) -> bytes:
    """The bytes of one member, read by this process from the archive (a worker opens the file itself).
    Raises ImageError ("missing" / "unreadable" / "truncated") like a bad file on disk would."""
    from pipeline.images import ImageError            # not at the top: listing must not load OpenCV
    try:
        fd = os.open(member.archive, os.O_RDONLY)
    except FileNotFoundError:
        raise ImageError("missing", f"archive {member.archive} does not exist") from None
    except OSError as e:
        raise ImageError("unreadable", f"{member.archive}: {e.strerror or e}") from None
    try:
        data = os.pread(fd, member.size, member.offset)
    except OSError as e:
        raise ImageError("unreadable", f"{member.archive}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if len(data) != member.size:
        raise ImageError("truncated", f"archive {member.archive} ends {member.size - len(data)} bytes into a member "
                                      f"of {member.size} bytes")
    return data
