"""What makes a weights file trusted: the canonical SHA-256 of what it holds (trainer/checkpoint.py's checksum,
trainer/safetensors_file.py's digest), and the error for a file that cannot or must not be loaded.

Below both file formats, so that each can check the other's kind of hash without importing the other.
"""
from __future__ import annotations

import hashlib

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot or must not be loaded; the message says which file and why."""


def _feed(h, x) -> None:
    """Hash x canonically: type tags and lengths keep {"a": [1]} and {"a": 1} (or a dict and its items) apart."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(x, dict):
        h.update(b"D%d" % len(x))
        for k, v in x.items():                   # pickle keeps insertion order: the same order after a load
            _feed(h, k)
            _feed(h, v)
    elif isinstance(x, (list, tuple)):
        h.update(b"%s%d" % (b"L" if isinstance(x, list) else b"U", len(x)))
        for v in x:
            _feed(h, v)
    else:                                        # str, int, float, bool, None: repr is exact and round-trips
        h.update(f"{type(x).__name__}:{x!r};".encode())


def digest_of(x) -> str:
    """SHA-256 hex of x (tensors, dicts, lists and plain values) hashed canonically by _feed."""
    h = hashlib.sha256()
    _feed(h, x)
    return h.hexdigest()
