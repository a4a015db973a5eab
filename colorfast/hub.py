"""Checkpoints by name: `--checkpoint eccv16-released` instead of a path.

resolve_checkpoint(ref) is the one place where every command (colorize, evaluate, compare, export, serve,
`fit --init`) turns what the user typed into a file. A path is returned as it is; a known name is the
published file of its project, downloaded once into the torch hub cache
(`$TORCH_HOME/hub/checkpoints/`, by default `~/.cache/torch/hub/checkpoints/`) by torch.hub's own
download_url_to_file, which checks the SHA-256 prefix carried by the file name (`...-9b330a0b.pth`) and
moves the file into place only when it matches. A copy already in the cache is checked against the same
prefix before it is used, so a truncated or replaced file is refused instead of loaded.

Offline: copy the file into that folder under its published name, or pass its path to --checkpoint. A
mirror: set the entry's URL variable (COLORFAST_ECCV16_RELEASED_URL, COLORFAST_SIGGRAPH17_RELEASED_URL); its file name must keep the hash
prefix. The file itself is loaded like any local one (trainer.checkpoint.load_any: weights only).

This module imports torch only inside the functions, so cli.py can validate names while `--help` stays instant.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

HASH_REGEX = re.compile(r"-([a-f0-9]{6,})\.")   # torch.hub's convention: name-<sha256 prefix>.ext


class HubError(ValueError):
    """A named checkpoint that could not be fetched or whose bytes are not the published ones."""


@dataclass(frozen=True)
class Named:
    url: str                 # the publisher's address of the file
    url_env: str             # environment variable that replaces it (a mirror, file:// copy, a test server)
    about: str               # one line for --help and the README

    def current_url(self) -> str:
        return os.environ.get(self.url_env) or self.url


NAMED = {
    # richzhang/colorization, colorizers/eccv16.py: the ECCV16 generator's released PyTorch weights
    "eccv16-released": Named(
        url="https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth",
        url_env="COLORFAST_ECCV16_RELEASED_URL",
        about="the ECCV16 weights released by Zhang et al. (richzhang/colorization), 313 bins, ~129 MB"),
    # richzhang/colorization, colorizers/siggraph17.py: the SIGGRAPH17 (user-guided) generator's released weights
    "siggraph17-released": Named(
        url="https://colorizers.s3.us-east-2.amazonaws.com/siggraph17-df00044c.pth",
        url_env="COLORFAST_SIGGRAPH17_RELEASED_URL",
        about="the SIGGRAPH17 user-guided weights released by Zhang et al. (richzhang/colorization), takes "
              "--hints, ~137 MB"),
}


def is_named(ref) -> bool:
    return str(ref) in NAMED


def check_ref(ref: str) -> str:
    """A file that exists or a known name -> ref; anything else -> HubError with the choices (no download)."""
    if is_named(ref) or Path(ref).is_file():
        return ref
    why = "is a folder, not a file" if Path(ref).is_dir() else "no such file"
    raise HubError(f"{ref}: {why}, and not a known checkpoint name (known: {', '.join(sorted(NAMED))})")


def cache_dir() -> Path:
    """Where named checkpoints are kept: torch.hub's checkpoints folder (honours TORCH_HOME)."""
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints"


def expected_prefix(url: str) -> tuple[str, str]:
    """URL -> (file name, SHA-256 hex prefix carried by it)."""
    name = os.path.basename(urlparse(url).path)
    m = HASH_REGEX.search(name)
    if not m:
        raise HubError(f"{url}: the file name carries no SHA-256 prefix (name-<hex>.pth), so the download "
                       f"could not be checked")
    return name, m.group(1)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_checkpoint(ref, progress: bool = True) -> Path:
    """A path -> the same path; a known name -> its file in the cache, downloaded and checked first if absent.
    Raises HubError (one line: what, from where, what to do) when the download fails or the bytes differ."""
    if not is_named(ref):
        return Path(ref)
    entry = NAMED[str(ref)]
    url = entry.current_url()
    name, prefix = expected_prefix(url)
    dst = cache_dir() / name
    if dst.is_file():
        got = sha256_of(dst)
        if not got.startswith(prefix):
            raise HubError(f"{ref}: the cached copy {dst} is corrupt or another file (SHA-256 {got[:12]}..., "
                           f"expected {prefix}...); delete it to download it again, or replace it with a good copy")
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    from torch.hub import download_url_to_file
    try:
        # writes DST.<uuid>.partial beside DST and renames it only after the hash matched
        download_url_to_file(url, str(dst), hash_prefix=prefix, progress=progress)
    except RuntimeError as e:
        if "invalid hash value" not in str(e):
            raise
        raise HubError(f"{ref}: the file downloaded from {url} is corrupt or another file ({e}); nothing was "
                       f"kept, try again later or get a good copy into {dst}") from None
    except (OSError, ValueError) as e:                     # URLError, HTTPError, timeouts, a malformed URL
        raise HubError(f"{ref}: could not download {url} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                       f"offline? copy the file to {dst} or pass its path to --checkpoint "
                       f"(or set {entry.url_env} to a mirror)") from None
    return dst
