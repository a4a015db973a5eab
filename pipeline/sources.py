"""What each shard was made from, and whether its inputs are still that (`sources` in pipeline/contract.py).

A worker records, for every input of its shard, what it read: a file's size and mtime, an archive member's size
and offset with its archive's size and mtime (a zip entry also its CRC-32, free from the central directory), and
a blake2b-128 digest of the bytes it decoded (already in memory: ~0.14 ms for a 48 KB 500x375 JPEG on a loaded
2-core EPYC VM, ~2% of the ~10 ms preprocess spends on it: `cli.py bench stages`). A rerun of preprocess and
`verify --sources` compare that record with the inputs on disk now:
- stat (the default, what a rerun does): a file whose size or mtime differs, or that is gone or appeared; a tar
  member whose offset or size moved or whose archive's size or mtime differs (a rewritten tar is rewritten
  wholesale: its bytes cannot be told apart without reading them); a zip entry whose size or CRC-32 differs;
- deep (`verify --sources-deep`): also the bytes of every input whose stat matches, against the recorded digest
  (a file replaced by one of the same size with its mtime kept, as `cp -p` or `rsync -t` do).
A shard written before sources were recorded has none: a rerun reuses it unchecked and says so.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from pipeline.contract import ShardFormatError, Source, read_manifest, read_sources
from pipeline.keys import name_of_key
from pipeline.plan import ShardSpec

DIGEST_SIZE = 16                 # bytes of blake2b: 128 bits tell two images apart; it is not a security check


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).hexdigest()


def read_input(path: Path, key: str, member=None, max_bytes: int | None = None) -> tuple[bytes | None, Source]:
    """(the input's bytes, what they were read from) for a worker: the file at `path`, or `member` (an
    archives.Member or ZipMember), read through the bounded readers of images/archives (regular files only, at
    most max_bytes). The bytes are None where they cannot be read; the decoder then reads again and says why
    (missing, not a regular file, too large, ...), as it always did."""
    return _read_file(path, key, max_bytes) if member is None else _read_member(key, member, max_bytes)


def _read_file(path: Path, key: str, max_bytes: int | None) -> tuple[bytes | None, Source]:
    from pipeline.images import MAX_PIXELS, ImageError, max_input_bytes, read_input as read_bounded
    try:
        st = os.stat(path)                    # before the read: a change after it moves the mtime, never hides
    except OSError:
        return None, Source(key)
    if not stat.S_ISREG(st.st_mode):          # a folder, or a FIFO that open() would block on
        return None, Source(key, st.st_size, st.st_mtime_ns)
    try:
        data = read_bounded(path, max_input_bytes(MAX_PIXELS) if max_bytes is None else max_bytes)
    except ImageError:
        return None, Source(key, st.st_size, st.st_mtime_ns)
    return data, Source(key, st.st_size, st.st_mtime_ns, digest(data))


def _read_member(key: str, member, max_bytes: int | None) -> tuple[bytes | None, Source]:
    from pipeline.archives import read_member
    from pipeline.images import ImageError
    source = _member_source(key, member, _archive_stat(member.archive))
    try:
        data = read_member(member, max_bytes)
    except ImageError:
        return None, source
    return data, source._replace(digest=digest(data))


def _archive_stat(archive: str) -> tuple[int, int]:
    try:
        st = os.stat(archive)
    except OSError:
        return -1, -1
    return st.st_size, st.st_mtime_ns


def _member_source(key: str, member, archive_stat: tuple[int, int]) -> Source:
    from pipeline.archives import ZipMember
    zipped = isinstance(member, ZipMember)
    return Source(key, member.size, -1, "", member.archive, *archive_stat,
                  member.header if zipped else member.offset, member.crc if zipped else -1)


def on_disk(root, key: str, member, archives: dict[str, tuple[int, int]]) -> Source:
    """The stat-level Source of an input now (no digest): `member` from the current listing, or None for the file
    root/key. `archives` caches each archive's stat across calls (one stat per archive, not per member)."""
    if member is None:
        try:
            st = os.stat(os.path.join(root, name_of_key(key)))
        except OSError:
            return Source(key)
        return Source(key, st.st_size, st.st_mtime_ns)
    if member.archive not in archives:
        archives[member.archive] = _archive_stat(member.archive)
    return _member_source(key, member, archives[member.archive])


def change(recorded: Source, now: Source) -> str | None:
    """Why the input `recorded` is not what is on disk `now` (stat level), or None when it is the same."""
    if recorded.archive and not now.archive and now.size < 0:
        return f"missing: no longer listed in {recorded.archive}"
    if recorded.archive != now.archive:
        return f"now read from {now.archive or 'a file'}, was {recorded.archive or 'a file'}"
    if not now.archive:
        if (recorded.size < 0) != (now.size < 0):
            return "missing" if now.size < 0 else "appeared"
        if recorded.size != now.size:
            return f"changed: {recorded.size} -> {now.size} bytes"
        if recorded.mtime_ns != now.mtime_ns:
            return "changed: modified since (mtime)"
        return None
    if now.archive_size < 0:
        return None if recorded.archive_size < 0 else f"missing: archive {now.archive} is gone"
    if recorded.crc >= 0 or now.crc >= 0:     # a zip entry: its CRC-32 is a content hash, whatever the zip's mtime
        if (recorded.size, recorded.crc) != (now.size, now.crc):
            return f"changed: the zip entry's size or CRC-32 differs ({now.archive})"
        return None
    if (recorded.offset, recorded.size) != (now.offset, now.size):
        return f"changed: the member moved or changed size in {now.archive}"
    if (recorded.archive_size, recorded.archive_mtime_ns) != (now.archive_size, now.archive_mtime_ns):
        return f"changed: its archive {now.archive} was modified (size or mtime)"
    return None


def content_change(recorded: Source, root, member) -> str | None:
    """For `verify --sources-deep`: read the input as a rerun would (`member` from the current listing, or the file
    root/key) and compare its digest with the recorded one; None when the same, or when nothing was recorded (an
    input that could not be read when its shard was written)."""
    if not recorded.digest:
        return None
    data, _ = read_input(Path(root, name_of_key(recorded.key)), recorded.key, member)
    if data is None:
        return "unreadable now"
    return None if digest(data) == recorded.digest else "changed: content differs (same size and mtime)"


def changed_inputs(path: Path, spec: ShardSpec, root, archives: dict) -> list[str] | None:
    """"key: why" for each input of the shard file at `path` (complete for `spec`) that is not what it was made
    from; None when the shard recorded no sources (written before they were)."""
    recorded = read_sources(path)
    if recorded is None:
        return None
    by_key = {s.key: s for s in recorded}
    found = []
    for key, member in zip(spec.keys, spec.members or (None,) * len(spec.keys)):
        was = by_key.get(key)
        why = "not recorded" if was is None else change(was, on_disk(root, key, member, archives))
        if why:
            found.append(f"{key}: {why}")
    return found


def stale_shards(out: Path, specs: list[ShardSpec], root, progress: bool = False
                 ) -> tuple[dict[str, list[str]], list[str]]:
    """Of the complete shard files of `specs` in `out`: ({file: its changed inputs} for those to rewrite, [the files
    without recorded sources]). Stat level: one stat per input, one per archive; ~10 ms a 256-input shard of files
    on the loaded 2-core VM (4 of them reading the shard's table), against seconds to write one."""
    from pipeline.progress import progress as progress_bar
    archives: dict[str, tuple[int, int]] = {}
    changed, unrecorded = {}, []
    for spec in progress_bar(specs, desc="checking inputs", unit="shard", leave=False, disable=not progress or None):
        try:
            found = changed_inputs(out / spec.file, spec, root, archives)
        except ShardFormatError:                  # a damaged record: rewriting the shard records it again
            found = ["(all): its recorded sources are unreadable"]
        if found is None:
            unrecorded.append(spec.file)
        elif found:
            changed[spec.file] = found
    return changed, unrecorded


def check_folder(folder, deep: bool = False, progress: bool = False) -> tuple[list[str], list[str]]:
    """`verify --sources`: (one line per input that differs from what its shard recorded, naming shard and key, and
    one for the inputs the dataset lists now that no shard holds; the shards that recorded nothing). Lists the
    dataset again as its manifest says (once a shard has sources to compare), so a tar or zip is looked up as a
    rerun would; with `deep`, also reads every input whose stat matches and compares its digest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    listing = None
    archives: dict[str, tuple[int, int]] = {}
    problems, unrecorded, damaged = [], [], False
    seen = {s["key"] for s in manifest.get("skipped", []) if isinstance(s, dict) and "key" in s}
    entries = manifest.get("shards", [])
    if progress:
        from pipeline.progress import progress as progress_bar
        entries = progress_bar(entries, desc="verify sources", unit="shard")
    for entry in entries:
        path = folder / entry["file"]
        try:
            recorded = read_sources(path)
        except ShardFormatError as e:
            problems.append(str(e))
            damaged = True
            continue
        if recorded is None:
            unrecorded.append(entry["file"])
            seen.update(_stored_keys(path))
            continue
        seen.update(s.key for s in recorded)
        if listing is None:
            listing, why = _listing_of(manifest)
            if why:
                return [f"{folder}: the dataset its shards were made from cannot be listed now: {why}"], unrecorded
        for was in recorded:
            member = listing.members.get(was.key)
            why = change(was, on_disk(listing.root, was.key, member, archives))
            if why is None and deep:
                why = content_change(was, listing.root, member)
            if why:
                problems.append(f"{path}: {was.key}: {why}")
    if listing is not None and not damaged:          # a damaged table hides which inputs its shard holds
        new = _new_inputs(manifest, seen, listing)
        if new:
            problems.append(f"{folder}: {len(new)} input(s) the dataset lists now are in no shard (e.g. {new[0]}); "
                            "a rerun adds them")
    return problems, unrecorded


def _stored_keys(path: Path) -> list[str]:
    import h5py
    with h5py.File(path, "r") as h:
        return [k.decode("utf-8", "surrogateescape") if isinstance(k, bytes) else str(k) for k in h["key"][:]]


def _new_inputs(manifest: dict, seen: set[str], listing) -> list[str]:
    """The keys of this run's inputs (the manifest's split, limit and subset applied to the whole `listing`) that
    are not in `seen`."""
    config = manifest.get("config") or {}
    if (config.get("split", "all"), config.get("limit", 0), config.get("subset", "")) != ("all", 0, ""):
        listing, _ = _listing_of(manifest, filtered=True)
    return sorted(k for k, _split in listing.items if k not in seen) if listing else []


def _listing_of(manifest: dict, filtered: bool = False):
    """(the dataset listed as the manifest records it, None), or (None, why not); `filtered`: only the inputs of
    its run (split, limit, subset), else all of them."""
    from pipeline.datasets import DatasetError, list_dataset
    config = manifest.get("config") or {}
    run = (config.get("split", "all"), config.get("limit", 0), config.get("subset", "")) if filtered else ()
    try:
        return list_dataset(manifest.get("dataset", "?"), manifest.get("root", ""), config.get("partition", 1),
                            config.get("test_fraction", 0.1), *run,
                            split_rule=manifest.get("split_rule", "hash")), None   # as it was split, not as now
    except (DatasetError, ValueError) as e:
        return None, str(e)
