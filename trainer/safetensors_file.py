"""The .safetensors files `cli.py export --format safetensors` writes (colorfast.safetensors_io), read and checked.

Here rather than in colorfast/ because `fit --init` (trainer.checkpoint.load_any) takes them too, and trainer/
does not import colorfast/. The format is described in colorfast.safetensors_io.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from trainer.digest import CheckpointError, digest_of

FORMAT, VERSION = "colorfast-safetensors", 1
METADATA_KEY = "colorfast"
SUFFIX = ".safetensors"


def require():
    try:
        import safetensors.torch
    except ImportError:
        raise CheckpointError("the safetensors package is not installed: pip install 'safetensors>=0.4'") from None
    return safetensors


def digest(meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the metadata (less its sha256 entry) and the tensors, independent of the file's layout: the
    checkpoints' canonical hash over the metadata as sorted JSON and the tensors in name order."""
    return digest_of({"meta": json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True),
                      "tensors": {name: tensors[name] for name in sorted(tensors)}})


def read(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A .safetensors file from export -> (its settings, its tensors), checked; CheckpointError naming the file
    for anything else (not safetensors, damaged, edited, from elsewhere)."""
    st = require()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with st.safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:                       # SafetensorError, a truncated file, a bad header: all "damaged"
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({detail})") from None
    if METADATA_KEY not in header:
        raise CheckpointError(f"{path}: a safetensors file without colorfast metadata (not written by `cli.py "
                              f"export`): its decoding (bins, loss, temperature) is unknown")
    try:
        meta = json.loads(header[METADATA_KEY])
        assert isinstance(meta, dict)
    except (ValueError, AssertionError):
        raise CheckpointError(f"{path}: its colorfast metadata is not a JSON object (damaged or edited)") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}, this code "
                              f"reads {FORMAT!r} version {VERSION}")
    if meta.get("sha256") != digest(meta, tensors):
        raise CheckpointError(f"{path}: checksum mismatch (the file is damaged or was edited): its weights or "
                              f"settings are not the ones exported; export it again from its checkpoint")
    return meta, tensors
