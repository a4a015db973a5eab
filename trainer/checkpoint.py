"""Checkpoints that survive crashes and do not trust strangers.

Saved atomically (temporary file, fsync, rename: pipeline.contract.atomic_write), so a crash while saving
leaves the previous complete checkpoint. Loaded with torch.load(weights_only=True): tensors and plain
containers only, so a file carrying pickled code is refused instead of run. A checkpoint is a dict:
    format "colorfast-checkpoint", version, model (state dict, incl. buffer `centers` for class heads),
    model_name, out_channels, loss, config (FitConfig as a dict), step, epoch, epoch_step,
    world_size, optimizer (state dict), rng (torch CPU generator state),
    prior ({"centers", "prob", "weights"} tensors of the training shards)
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from pipeline.contract import atomic_write

FORMAT = "colorfast-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot or must not be loaded; the message says which file and why."""


def save(path, payload: dict) -> Path:
    path = Path(path)
    with atomic_write(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    return path


def load_any(path) -> dict:
    """Any weights-only torch file as a dict (ours or a bare state dict), with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip (PK..) or, in its legacy format, a pickle (protocol byte 0x80). Anything else (an
    # image, a text file) would reach the unpickler and be reported as refused pickled code, which misleads.
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (it starts with {head!r}, not a zip or pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused: it holds pickled Python objects other than tensors and plain containers, "
            f"which could run code when loaded. Only tensors, dicts, lists, numbers and strings are accepted "
            f"(detail: {str(e).splitlines()[0][:200]})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"{path}: truncated or not a PyTorch checkpoint ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}); if a run was saving it, use an earlier copy") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a dict (a checkpoint or state dict)")
    return obj


def load(path) -> dict:
    """One of our training checkpoints; a bare state dict or a foreign format is refused with the reason."""
    ck = load_any(path)
    if ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a colorfast training checkpoint (a bare state dict can be used "
                              f"with --init or load_colorizer, not resumed)")
    if ck.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ck.get('version')}, this code reads {VERSION}")
    return ck
