"""Checkpoints that survive crashes and do not trust strangers.

Saved atomically (temporary file, fsync, rename: pipeline.contract.atomic_write), so a crash while saving
leaves the previous complete checkpoint. Loaded with torch.load(weights_only=True): tensors and plain
containers only, so a file carrying pickled code is refused instead of run. A checkpoint is a dict:
    format "colorfast-checkpoint", version, model (state dict, incl. buffer `centers` for class heads),
    model_name, out_channels, loss, config (FitConfig as a dict), step, epoch, epoch_step,
    world_size, optimizer (state dict), rng (torch CPU generator state),
    prior ({"centers", "prob", "weights"} tensors of the training shards),
    checksum ("sha256:<hex>" over everything else: checksum_of)
torch.load does not check the CRC-32 its zip records, so a flipped byte in a tensor's data used to load as
other weights; the checksum is recomputed at load and a mismatch refused. It covers the loaded values (tensor
bytes, dtypes, shapes, keys, numbers, strings) rather than the file's bytes, so the file stays a plain
torch.load-able dict. A colorfast checkpoint without one (saved before checksums, or edited by hand and saved
with torch.save after deleting the entry) loads with a one-line warning on stderr.
"""
from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path

import torch

from pipeline.contract import atomic_write
from trainer.digest import CheckpointError, digest_of

FORMAT = "colorfast-checkpoint"
VERSION = 1
CHECKSUM = "checksum"
# Checkpoint entries that the readers use and the type each must have (a crafted file that claims the format
# but lacks one, or holds something else there, is refused in one line instead of failing deep inside).
FIELDS = {"model": dict, "model_name": str, "out_channels": int, "loss": str, "config": dict, "step": int,
          "epoch": int, "epoch_step": int, "world_size": int, "optimizer": dict, "rng": torch.Tensor,
          "prior": dict, "ema": (dict, type(None)), "ema_updates": int, "validation": (dict, type(None))}
RESUME_FIELDS = ("model", "model_name", "out_channels", "loss", "config", "step", "epoch", "epoch_step",
                 "optimizer", "rng", "prior")
COLORIZER_FIELDS = ("model", "model_name", "out_channels", "loss")


def checksum_of(ck: dict) -> str:
    """"sha256:<hex>" over every entry of a checkpoint but the checksum itself."""
    return "sha256:" + digest_of({k: v for k, v in ck.items() if k != CHECKSUM})


def save(path, payload: dict) -> Path:
    """Write payload (a checksum computed over it, replacing any it carries) atomically. OSError (a full disk,
    a read-only folder) leaves the previous file as it was."""
    path = Path(path)
    ck = {"format": FORMAT, "version": VERSION, **{k: v for k, v in payload.items() if k != CHECKSUM}}
    ck[CHECKSUM] = checksum_of(ck)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        # a file object, not a path: torch's own writer reports a full disk as "enforce fail at
        # inline_container.cc"; through Python's file the OSError keeps its errno (ENOSPC, EROFS)
        try:
            torch.save(ck, f)
        except RuntimeError as e:
            if isinstance(e.__context__, OSError):     # the zip writer's close, after the failed write, raised
                raise e.__context__ from None          # its own error over the OSError
            raise
    return path


def verify(ck: dict, path) -> dict:
    """ck if its checksum matches (or, for a colorfast checkpoint saved before checksums, with a warning)."""
    stored = ck.get(CHECKSUM)
    if stored is None:
        if ck.get("format") == FORMAT:
            print(f"warning: {path}: carries no checksum (saved by an older colorfast, or edited by hand): damage "
                  f"to it cannot be detected; the next save of a run adds one", file=sys.stderr)
        return ck
    actual = checksum_of(ck)
    if stored != actual:
        raise CheckpointError(f"{path}: checksum mismatch (the file is damaged): what it holds is not what was "
                              f"saved; use an earlier copy (a file changed on purpose is re-saved with "
                              f"trainer.checkpoint.save)")
    return ck


def check_fields(ck: dict, path, required) -> dict:
    """ck if it has each of `required` (keys of FIELDS), every FIELDS entry it has is of its type, and its
    `model`, `ema` and `prior` map names to tensors."""
    for name in required:
        if name not in ck:
            raise CheckpointError(f"{path}: claims the colorfast checkpoint format but has no {name!r} entry")
    for name, types in FIELDS.items():
        if name in ck and (not isinstance(ck[name], types) or isinstance(ck[name], bool)):
            raise CheckpointError(f"{path}: its {name!r} entry is a {type(ck[name]).__name__}, not "
                                  f"{_type_names(types)}")
    for name in ("model", "ema", "prior"):
        state = ck.get(name)
        if state is not None and not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
            raise CheckpointError(f"{path}: its {name!r} entry is not a dict of names -> tensors")
    return ck


def _type_names(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def _crc_failure(path: Path) -> str | None:
    """The first zip entry whose CRC-32 or local header does not match (torch.load checks neither), or None."""
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip()
    except Exception:                       # not a zip, or its directory is unreadable: undecided here
        return None


def _crc_message(path: Path, entry: str) -> str:
    return f"{path}: damaged: its zip entry {entry} fails its CRC-32 or header check; use an earlier copy"


def _unloadable(path: Path, e: Exception) -> str:
    """One line saying why torch.load failed: a damaged file, pickled code, or not a checkpoint at all."""
    detail = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
    bad = _crc_failure(path)
    if bad is not None:
        return _crc_message(path, bad)
    if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
        return (f"{path}: refused: it holds pickled Python objects other than tensors and plain containers, which "
                f"could run code when loaded. Only tensors, dicts, lists, numbers and strings are accepted "
                f"(detail: {detail})")
    return (f"{path}: damaged, truncated or not a PyTorch checkpoint ({detail}); if a run was saving it, use an "
            f"earlier copy")


def load_any(path) -> dict:
    """Any weights-only torch file as a dict (ours or a bare state dict), or an exported .safetensors file as the
    fields of ours that describe its weights, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix.lower() == ".safetensors":          # from `export --format safetensors` (for fit --init)
        from trainer import safetensors_file
        meta, tensors = safetensors_file.read(path)
        described = {k: meta.get(k) for k in ("model_name", "out_channels", "loss")}
        return {"format": FORMAT, "model": tensors, **described}    # its weights and what they are, as ours
    with open(path, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip (PK..) or, in its legacy format, a pickle (protocol byte 0x80). Anything else (an
    # image, a text file) would reach the unpickler and be reported as refused pickled code, which misleads.
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (it starts with {head!r}, not a zip or pickle)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                  # a damaged pickle stream fails in any way (IndexError, KeyError, ...)
        raise CheckpointError(_unloadable(path, e)) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, expected a dict (a checkpoint or state dict)")
    if CHECKSUM not in obj:
        # a released state dict or an older checkpoint: the zip's CRC-32s, at least, catch damaged data
        bad = _crc_failure(path)
        if bad is not None:
            raise CheckpointError(_crc_message(path, bad))
    return verify(obj, path)


def load(path) -> dict:
    """One of our training checkpoints; a bare state dict or a foreign format is refused with the reason."""
    if Path(path).suffix.lower() == ".safetensors":
        raise CheckpointError(f"{path}: an exported .safetensors file holds weights only, no training state: "
                              f"start a new run from it with --init")
    ck = load_any(path)
    if ck.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a colorfast training checkpoint (a bare state dict can be used "
                              f"with --init or load_colorizer, not resumed)")
    if ck.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ck.get('version')}, this code reads {VERSION}")
    return check_fields(ck, path, RESUME_FIELDS)
