"""Any checkpoint file or name as a Colorizer: load_colorizer(ref) -> colorfast.colorizer.Colorizer.

`ref` is a file or a checkpoint name (colorfast.hub: `eccv16-released`, `siggraph17-released` are downloaded
once). Accepted files: a colorfast training checkpoint (RUN_DIR/last.pt), a bare state dict in the released
ECCV16 PyTorch layout (model1..model8, model_out; decoded with its own 313 bins) or in the released SIGGRAPH17
layout (model1..model10, shortcuts, model_class, model_out; trainer/siggraph17.py), an .onnx file written by `cli.py export`
(run by onnxruntime: colorfast.onnx_runtime) or a .safetensors file written by `cli.py export --format
safetensors` (colorfast.safetensors_io). .pt files are read with torch.load(weights_only=True)
(trainer.checkpoint), so a file carrying pickled code is refused.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from colorfast.colorizer import Colorizer, checkpoint_model, released_model
from colorfast.hub import is_named, resolve_checkpoint
from trainer import checkpoint, siggraph17
from trainer.models import create_model
from trainer.models import from_released, is_released_layout, load_trunk

RUNTIMES = ("auto", "torch", "onnx")


def load_colorizer(ref, device="cpu", runtime: str = "auto", announce: bool = False) -> Colorizer:
    """A checkpoint file or name -> Colorizer on `device` ("auto": CUDA if visible).
    A checkpoint of a run with --ema loads its EMA weights (the ones validated and selected for best.pt);
    `announce` says so on stderr.
    runtime "auto" runs .onnx files with onnxruntime and everything else with torch.
    Raises checkpoint.CheckpointError naming the file when it cannot or must not be loaded, hub.HubError when
    a named checkpoint cannot be fetched, extras.MissingExtra when onnxruntime is not installed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    path = resolve_checkpoint(ref)
    is_onnx = path.suffix.lower() == ".onnx"
    if runtime == "onnx" or (runtime == "auto" and is_onnx):
        if not is_onnx:
            raise checkpoint.CheckpointError(
                f"{ref}: --runtime onnx runs an .onnx file; make one with `python cli.py export --checkpoint {ref} "
                f"--out model.onnx` and pass --checkpoint model.onnx")
        from colorfast.onnx_runtime import load_onnx_colorizer
        return load_onnx_colorizer(path, device=device)
    if is_onnx:
        raise checkpoint.CheckpointError(f"{ref}: an ONNX file runs with --runtime onnx (or auto), not torch")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    source = f"{ref} ({path})" if is_named(ref) else str(path)
    if path.suffix.lower() == ".safetensors":
        from colorfast.safetensors_io import load_safetensors_colorizer
        return load_safetensors_colorizer(path, device, source)
    raw = checkpoint.load_any(path)
    released, weights = False, "raw"
    if raw.get("format") == checkpoint.FORMAT:
        checkpoint.check_fields(raw, path, checkpoint.COLORIZER_FIELDS)
        state = raw["model"]
        if raw.get("ema") is not None:
            state, weights = raw["ema"], "ema"
            if announce:
                print(f"{path}: using its EMA weights (decay {raw.get('config', {}).get('ema')}, "
                      f"step {raw.get('step')})", file=sys.stderr)
        model = checkpoint_model(raw, state, path)
        loss = raw["loss"]
        prior = {k: np.asarray(v) for k, v in raw["prior"].items()} if raw.get("prior") else None
    elif is_released_layout(raw):
        try:
            state, centers = from_released(raw)
        except ValueError as e:
            raise checkpoint.CheckpointError(f"{path}: {e}") from None
        model = released_model(state, centers)
        loss, prior, released = "ce", None, True
    elif siggraph17.is_released_layout(raw):
        try:
            state, centers, name = siggraph17.from_released(raw)
        except ValueError as e:
            raise checkpoint.CheckpointError(f"{path}: {e}") from None
        model = create_model(name, len(centers), centers)
        loss, prior, released = "ce", None, True
    else:
        raise checkpoint.CheckpointError(f"{path}: neither a colorfast checkpoint nor a released ECCV16 or SIGGRAPH17 "
                                         f"state dict (keys model1.* .. model8.*, model_out.weight; or model1.* .. "
                                         f"model10.*, model_class.0.weight, model_out.0.weight)")
    try:
        load_trunk(model, state)
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{path}: {e}") from None
    return Colorizer(model=model.to(device).eval(), loss=loss, prior=prior, source=source, device=device,
                     released=released, weights=weights)

