"""Reading inputs straight out of uncompressed tar files and zip files, without extracting them.

An uncompressed tar stores each member's bytes contiguously after its 512-byte header, and a tar nested in a
tar (ILSVRC2012_img_train.tar holds 1,000 per-class tars) is itself contiguous inside the outer file. So every
image, nested or not, is a byte range of one file on disk: a `Member` (archive path, data offset, size).
Listing reads only the headers (Python's tarfile, which seeks over the data); a worker reads a member with one
pread on the archive it opens itself, so no image bytes pass through the main process.

Hand-written on top of tarfile because neither tarfile nor webdataset offers random access by offset: tarfile
reads members through a TarFile object that must parse headers from the start, and webdataset streams a shard
from its beginning. Compressed tars (.tar.gz, ...) have no byte offsets to seek to and are refused.

A zip (COCO's train2017.zip) lists from its central directory in one read; an entry is a `ZipMember`, its local
header and its stored or deflated bytes, which a worker reads with two preads, inflates with zlib and checks
against the CRC-32 the zip records. zipfile itself would do the same through a ZipFile per worker that parses
the central directory (118 k entries for COCO) again in every process.

Listing a tar parses every header in Python (16-50 us a member: ~20-60 s for ImageNet's 1.28 M on two cores),
so it shows progress, and a listing is kept in the user's cache (`listing_cache_dir()`: by default
~/.cache/colorfast/archive-listings, one small file per archive, never evicted: delete the folder to reclaim it),
keyed by the archive's path, size, mtime, inode and both ends: a resumed or repeated run reads it back in about a
second, and a changed archive is listed again. The cache is only a shortcut: an unwritable or damaged one is
ignored.
"""
from __future__ import annotations

import hashlib
import os
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.keys import key_of_name

LISTING_VERSION = 2              # bump when what a listing holds changes: older cached listings are then ignored
ENDS = 64 * 1024                 # bytes at each end of an archive that its cache key includes


class ArchiveError(ValueError):
    """A file that should be an uncompressed tar or a zip is not one (compressed, truncated, another format)."""


class Member(NamedTuple):
    """One input inside a tar: `size` bytes at byte `offset` of the file at `archive` (absolute path)."""
    archive: str
    offset: int
    size: int


class ZipMember(NamedTuple):
    """One entry of a zip: its local header at byte `header` of `archive`, `packed` bytes after that header
    holding `size` bytes compressed by `method` (0 stored, 8 deflated), whose CRC-32 is `crc`."""
    archive: str
    header: int
    packed: int
    size: int
    method: int
    crc: int
    encrypted: bool


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
    for _inner, name, offset, size in cached_listing(path, "flat", _list_flat):
        yield name, Member(path, offset, size)


def _list_flat(path: str) -> list[tuple[str, str, int, int]]:
    from pipeline.progress import progress
    found = []
    with _open(path) as tar, progress(total=os.path.getsize(path), unit="B", unit_scale=True, leave=False,
                                  desc=f"listing {os.path.basename(path)}", disable=None) as bar:
        try:
            for info in tar:
                if info.isreg() and not info.sparse:
                    found.append(("", _name(info.name), info.offset_data, info.size))
                    if len(found) % 4096 == 0:
                        bar.update(info.offset_data - bar.n)
        except (tarfile.TarError, EOFError) as e:
            raise ArchiveError(f"{path}: broken tar ({e})") from None
    return found


PARALLEL_LISTING_MIN = 64        # inner tars from which listing them is worth starting worker processes


def nested_tar_members(path: str, jobs: int = 0) -> Iterator[tuple[str, str, Member]]:
    """(inner tar name, member name, Member) for every regular file of every .tar member of the tar at `path`
    (the layout of ILSVRC2012_img_train.tar), in archive order; offsets are into the outer file. The inner tars
    are listed by `jobs` processes (0: up to 8, when there are at least PARALLEL_LISTING_MIN of them): tarfile
    parses a header in ~30-50 us of Python, ~1 min for ImageNet's 1.28 M on one core."""
    path = os.path.abspath(path)
    for inner, name, offset, size in cached_listing(path, "nested", lambda p: _list_nested(p, jobs)):
        yield inner, name, Member(path, offset, size)


def _list_nested(path: str, jobs: int) -> list[tuple[str, str, int, int]]:
    from pipeline.parallel import imap_unordered
    from pipeline.progress import progress
    with _open(path) as outer:
        try:
            stored = [(_name(i.name), i.offset_data, i.size) for i in outer if i.isreg() and i.name.endswith(".tar")]
        except (tarfile.TarError, EOFError) as e:
            raise ArchiveError(f"{path}: broken tar ({e})") from None
    last = {name: i for i, (name, _, _) in enumerate(stored)}
    inners = [inner for i, inner in enumerate(stored) if last[inner[0]] == i]   # a tar stored twice: the later
    if not jobs:
        jobs = min(8, os.cpu_count() or 1) if len(inners) >= PARALLEL_LISTING_MIN else 1
    listed = dict(progress(imap_unordered(_list_inner, inners, path, jobs), total=len(inners), unit="tar", leave=False,
                       desc=f"listing {os.path.basename(path)}", disable=None))
    return [(name, member, offset, size) for name, _, _ in inners for member, offset, size in listed[name]]


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
    """A member's key-to-be: without a leading "./", escaped by key_of_name when it is not UTF-8 (tarfile reads
    a Latin-1 name with surrogates, as os.walk does a file's)."""
    while name.startswith("./"):
        name = name[2:]
    return key_of_name(name)


def read_member(member: Member | ZipMember, max_bytes: int | None = None) -> bytes:
    """The bytes of one member, read by this process from the archive (a worker opens the file itself).
    Raises ImageError ("missing" / "unreadable" / "truncated" / "undecodable" / "too large") like a bad file on
    disk would; "too large" for a member over `max_bytes` (images.max_input_bytes), read or inflated."""
    from pipeline.images import ImageError            # not at the top: listing must not load OpenCV
    try:
        fd = os.open(member.archive, os.O_RDONLY)
    except FileNotFoundError:
        raise ImageError("missing", f"archive {member.archive} does not exist") from None
    except OSError as e:
        raise ImageError("unreadable", f"{member.archive}: {e.strerror or e}") from None
    try:
        if max_bytes is not None and max(member.size, getattr(member, "packed", 0)) > max_bytes:
            raise ImageError("too large", f"{member.archive}: a member of {member.size:,} bytes, more than an image "
                                          f"of --max-pixels takes ({max_bytes:,})")
        if isinstance(member, ZipMember):
            return _read_zip_entry(fd, member, ImageError)
        return _pread(fd, member.size, member.offset, member.archive, ImageError)
    finally:
        os.close(fd)


def _pread(fd: int, size: int, offset: int, archive: str, error) -> bytes:
    try:
        data = os.pread(fd, size, offset)
    except OSError as e:
        raise error("unreadable", f"{archive}: {e.strerror or e}") from None
    if len(data) != size:
        raise error("truncated", f"archive {archive} ends {size - len(data)} bytes into a member of {size} bytes")
    return data


def _read_zip_entry(fd: int, m: ZipMember, error) -> bytes:
    if m.encrypted:
        raise error("unreadable", f"{m.archive}: an encrypted zip entry")
    if m.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise error("unreadable", f"{m.archive}: zip compression method {m.method}; only stored and deflated entries "
                                  "are read in place (unzip the archive)")
    local = _pread(fd, 30, m.header, m.archive, error)
    if local[:4] != b"PK\x03\x04":
        raise error("undecodable", f"{m.archive}: no zip entry header at byte {m.header}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    data = _pread(fd, m.packed, m.header + 30 + name_len + extra_len, m.archive, error)
    if m.method == zipfile.ZIP_DEFLATED:
        # inflated up to one byte past the size the zip declares, never further: a few MB of deflate data can
        # hold GBs (a zip bomb), and one byte more is all that it takes to know the entry lies
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(data, m.size + 1)
        except zlib.error as e:
            raise error("undecodable", f"{m.archive}: a damaged deflated entry ({e})") from None
        if len(data) > m.size:
            raise error("undecodable", f"{m.archive}: an entry that inflates past the {m.size:,} bytes its "
                                       "header declares (a zip bomb?)")
    if len(data) != m.size or zlib.crc32(data) != m.crc:
        raise error("undecodable", f"{m.archive}: an entry whose bytes do not match its CRC-32")
    return data


def zip_members(path: str) -> Iterator[tuple[str, ZipMember]]:
    """(entry name, ZipMember) for every file in the zip at `path`, in central-directory order."""
    path = os.path.abspath(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
        raise ArchiveError(f"{path}: not a readable zip file ({e})") from None
    for i in infos:
        if not i.is_dir():
            yield _name(i.filename), ZipMember(path, i.header_offset, i.compress_size, i.file_size, i.compress_type,
                                               i.CRC, bool(i.flag_bits & 0x1))


def listing_cache_dir() -> Path:
    """$COLORFAST_CACHE/archive-listings, else $XDG_CACHE_HOME/colorfast/..., else ~/.cache/colorfast/..."""
    base = os.environ.get("COLORFAST_CACHE")
    if not base:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "colorfast"
    return Path(base) / "archive-listings"


def _cache_file(path: str, kind: str) -> Path:
    """The cache entry of this very file: its path, size, mtime, inode and its first and last 64 KiB (a file
    rewritten in place within the filesystem's timestamp granularity keeps size, mtime and inode)."""
    st = os.stat(path)
    with open(path, "rb") as f:
        head = f.read(ENDS)
        f.seek(max(0, st.st_size - ENDS))
        ends = head + f.read(ENDS)
    ident = f"{LISTING_VERSION}\0{kind}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_dev}\0"
    digest = hashlib.sha1(ident.encode("utf-8", "surrogateescape") + ends).hexdigest()
    return listing_cache_dir() / f"{digest}.npz"


def cached_listing(path: str, kind: str, list_it: Callable[[str], list]) -> list[tuple[str, str, int, int]]:
    """[(inner tar name or "", member name, offset, size)] of the archive at `path`: from the cache when this very
    file (`_cache_file`'s key) was listed before, else from `list_it(path)`, then kept. Stored as two
    NUL-joined name blobs and two int64 arrays (no pickle): ImageNet's listing is ~60 MB and loads in ~1 s."""
    cache = _cache_file(path, kind)
    try:
        with np.load(cache) as z:
            inners = z["inner"].tobytes().decode("utf-8", "surrogateescape").split("\0")
            names = z["name"].tobytes().decode("utf-8", "surrogateescape").split("\0")
            offsets, sizes = z["offset"].tolist(), z["size"].tolist()
        if len(inners) == len(names) == len(offsets) == len(sizes):
            return list(zip(inners, names, offsets, sizes))
    except (OSError, ValueError, KeyError, UnicodeDecodeError):      # none yet, or damaged: list again
        pass
    found = list_it(path)
    if found:
        _keep(cache, found)
    return found


def _keep(cache: Path, found: list[tuple[str, str, int, int]]) -> None:
    from pipeline.contract import atomic_write        # not at the top: listing must not load h5py for nothing
    blob = lambda strings: np.frombuffer("\0".join(strings).encode("utf-8", "surrogateescape"), np.uint8)
    inners, names, offsets, sizes = zip(*found)
    try:
        with atomic_write(cache, suffix=".npz") as tmp:
            np.savez(tmp, inner=blob(inners), name=blob(names), offset=np.array(offsets, np.int64),
                     size=np.array(sizes, np.int64))
    except OSError:                                  # a read-only home, a full disk: run without the shortcut
        pass
