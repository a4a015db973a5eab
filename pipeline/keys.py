"""Keys: how a source file's name becomes the `key` that shards and manifests store, and back.

A key is the source path relative to the dataset root, "/"-separated, as a UTF-8 string (h5py's string dtype
and JSON hold nothing else). Linux file names and tar member names are bytes: os.walk and tarfile hand a name
that is not UTF-8 (b"caf\\xe9.jpg", from a Latin-1 machine) over as a str with lone surrogates
(surrogateescape), which cannot be encoded. Such a name is kept, not skipped: its key writes each byte that
is not UTF-8 as \\xNN and, so that the mapping stays one to one, each backslash of that name as \\x5c. Every
other name (valid UTF-8 with no backslash-x in it: all but the hostile ones) is its own key, so existing
shards keep their keys. `name_of_key` gives the file name back, for opening the source.

Standard library only: listing (pipeline.archives, in worker processes too) and colorize import it.
"""
from __future__ import annotations

import os
import re

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def key_of_name(name: str) -> str:
    """The key of a relative name as os.walk or tarfile give it. b"caf\\xe9.jpg" -> "caf\\xe9.jpg" (a backslash,
    x, e, 9); b"a\\x41.jpg" (a literal backslash-x) -> "a\\x5cx41.jpg"; "café.jpg" -> "café.jpg".
    Hand-written: Python's backslashreplace gives the escapes, but leaves backslashes as they are, which makes
    b"caf\\xe9" and a file literally named "caf\\xe9" the same key."""
    if "\\x" not in name:
        try:
            name.encode("utf-8")
            return name
        except UnicodeEncodeError:
            pass
    return name.encode("utf-8", "surrogateescape").replace(b"\\", b"\\x5c").decode("utf-8", "backslashreplace")


def name_of_key(key: str) -> str:
    """The relative name of a key (key_of_name's inverse), as a str that os and pathlib open (surrogateescape)."""
    if "\\x" not in key:
        return key
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), key.encode("utf-8")))
