"""`cli.py export --format safetensors`: a colorizer as a .safetensors file, and load_colorizer's loader of it.

The format the ecosystem shares (Hugging Face hub, diffusers, ...): a JSON header, then raw tensor bytes; no
pickle, so loading it runs no code. The tensors are the network's state dict exactly as `colorize` uses it (the
EMA weights of a run with --ema), `centers` (the Q bins, ab units) among them, so
`safetensors.torch.load_file(path)` feeds `model.load_state_dict` directly. What decoding needs beside the
weights is one JSON string in the header's metadata (string -> string), under METADATA_KEY:

    format, version, model_name, out_channels, loss, released, default_temperature, upsample, weights, source,
    prior ({"centers", "prob", "weights"} as lists, with their dtypes), sha256

sha256 is the digest of that JSON without it plus every tensor (name, dtype, shape, bytes, in name order), so a
flipped byte in the weights and an edited setting are both refused, in one line naming the file, before the
weights reach the network. The digest is over the parsed tensors rather than the file's bytes because
safetensors writers may order or pad the header differently; the tensors are what must not change. The reader
and the digest live in trainer.safetensors_file (`fit --init` takes these files too).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from trainer.checkpoint import CheckpointError
from trainer.models import MODELS, create_model
from trainer.safetensors_file import FORMAT, METADATA_KEY, SUFFIX, VERSION, digest, read, require


def model_name(model) -> str:
    """The registered network whose parameter names and shapes are the model's (built on the meta device)."""
    state = model.state_dict()
    centers, channels = model.centers, model.out_channels
    for name in MODELS:
        with torch.device("meta"):
            probe = create_model(name, channels, None if centers is None else torch.zeros_like(centers, device="meta"))
        if {k: v.shape for k, v in probe.state_dict().items()} == {k: v.shape for k, v in state.items()}:
            return name
    raise ValueError(f"the network is none of the registered models {sorted(MODELS)}")


def to_safetensors(colorizer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A torch Colorizer -> (tensors, header metadata) as written by export."""
    model = colorizer.model
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    prior = None if colorizer.prior is None else {
        k: {"dtype": str(np.asarray(v).dtype), "data": np.asarray(v).tolist()} for k, v in colorizer.prior.items()}
    meta = {"format": FORMAT, "version": VERSION, "model_name": model_name(model),
            "out_channels": model.out_channels, "loss": colorizer.loss, "released": colorizer.released,
            "default_temperature": colorizer.default_temperature, "upsample": colorizer.upsample,
            "weights": colorizer.weights, "source": colorizer.source, "prior": prior}
    meta["sha256"] = digest(meta, tensors)
    return tensors, {METADATA_KEY: json.dumps(meta)}


def write(colorizer, tmp) -> None:
    """Write the colorizer to the (temporary) path `tmp`."""
    tensors, meta = to_safetensors(colorizer)
    require().torch.save_file(tensors, str(tmp), metadata=meta)


def _prior(meta: dict, path) -> dict | None:
    if meta.get("prior") is None:
        return None
    try:
        return {k: np.asarray(v["data"], dtype=v["dtype"]) for k, v in meta["prior"].items()}
    except (TypeError, ValueError, KeyError, AttributeError):
        raise CheckpointError(f"{path}: its prior does not parse (damaged or edited)") from None


def load_safetensors_colorizer(path, device: torch.device, source: str):
    """An exported .safetensors file -> a torch Colorizer on `device`, decoding as the checkpoint it came from."""
    from colorfast.colorizer import Colorizer, checkpoint_model
    from trainer.models import load_trunk
    meta, state = read(path)
    fields = {"model_name": str, "out_channels": int, "loss": str, "released": bool, "weights": str}
    bad = [k for k, t in fields.items() if not isinstance(meta.get(k), t)]
    if bad:
        raise CheckpointError(f"{path}: metadata field(s) {bad} missing or of the wrong type")
    model = checkpoint_model(meta, state, path)
    try:
        load_trunk(model, state)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    col = Colorizer(model=model.to(device).eval(), loss=meta["loss"], prior=_prior(meta, path), source=source,
                    device=device, released=meta["released"], weights=meta["weights"])
    # the settings are derived, not free: a file whose claims disagree with this code's decoding is refused
    t = meta.get("default_temperature")
    expected = col.default_temperature                # None for l2 and guided networks
    if (t is None) != (expected is None) or (t is not None and not math.isclose(t, expected)) \
            or meta.get("upsample") != col.upsample:
        raise CheckpointError(f"{path}: its decoding (temperature {t}, {meta.get('upsample')} upsampling) is not "
                              f"this code's for a {col.loss} {'released' if col.released else 'colorfast'} model")
    return col


def export_safetensors(ref, out):
    """Checkpoint file or name -> OUT (.safetensors, written atomically, read back and compared before it is
    moved into place); returns (path, the torch colorizer). ExportError for an OUT that is the input or cannot
    be written."""
    from colorfast.colorizer import load_colorizer
    from colorfast.onnx_export import ExportError, is_input
    from pipeline.contract import atomic_write
    out = Path(out)
    if is_input(out, ref):
        raise ExportError(f"{out} is the checkpoint being exported; an export never replaces its input "
                          f"(not even with --force): choose another --out")
    colorizer = load_colorizer(ref, device="cpu", runtime="torch")
    try:
        with atomic_write(out, suffix=SUFFIX) as tmp:
            write(colorizer, tmp)
            _, back = read(tmp)              # what was written is what a reader gets, checked like any load
            if any(not torch.equal(back[k], v) for k, v in colorizer.model.state_dict().items()):
                raise ExportError(f"{out}: the weights read back differ from the checkpoint's; not written")
    except OSError as e:                      # a full disk, a read-only folder: nothing was replaced
        raise ExportError(f"{out}: cannot write ({e.strerror or e}); nothing was written") from None
    return out, colorizer
