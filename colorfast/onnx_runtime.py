"""An exported .onnx file (colorfast.onnx_export) as a Colorizer run by onnxruntime on the CPU.

Everything but the network call is the torch colorizer's (padding to multiples of 8, cropping back, the
decoding defaults and upsampling mode), so colorize, evaluate, compare and the web page take either. A guided
network's graph (inputs L, hint_ab, hint_mask; outputs ab and logits) stands in for the torch module itself
(`GuidedSession`), so hints and suggested colours go through the torch colorizer's own code.
The decoding settings come from the file's colorfast.* metadata_props; a file without them (an ONNX model
from elsewhere) is refused, since its inputs and outputs could mean anything, and so is one whose settings do
not parse or do not fit its graph (a hand-edited or crafted file).

Integrity: since version 2 the metadata carries colorfast.sha256, the SHA-256 of the file's bytes with that
value's 64 hex digits read as zeros (with_digest writes it, check_digest verifies it before onnxruntime sees
the bytes). Over the bytes rather than the parsed model because protobuf does not promise one serialisation of
a message, so a re-serialised model could hash differently on another onnx version. A mismatch, or a version 2
file without the entry, is refused as damaged; a version 1 file (exported before) loads with a warning.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colorfast.colorizer import Colorizer
from colorfast.extras import require
from trainer.checkpoint import CheckpointError
from trainer.decode import check_temperature
from trainer.losses import LOSSES
from trainer.models import AB_NORM

FORMAT, VERSION = "colorfast-onnx", 2           # as written by colorfast.onnx_export; 1: before the digest
DIGEST_KEY = "colorfast.sha256"
_ZEROS = b"0" * 64
# The serialised metadata entry (StringStringEntryProto: field 1, the key, then field 2, a 64-byte value)
_ENTRY = b"\x0a" + bytes([len(DIGEST_KEY)]) + DIGEST_KEY.encode() + b"\x12\x40"


class GuidedSession:
    """An exported guided graph called like the network it came from (trainer.siggraph17.SIGGRAPH17Net):
    (L, hint_ab=None, hint_mask=None) -> (logits or None, ab / AB_NORM), torch tensors on the CPU."""
    guided = True

    def __init__(self, session, centers: torch.Tensor | None):
        self.session, self.centers = session, centers
        self.outputs = [o.name for o in session.get_outputs()]

    def __call__(self, L, hint_ab=None, hint_mask=None):
        B, _, H, W = L.shape
        feed = {"L": L.detach().cpu().float().numpy(),
                "hint_ab": (np.zeros((B, 2, H, W), np.float32) if hint_ab is None else
                            hint_ab.detach().cpu().float().expand(B, 2, H, W).numpy()),
                "hint_mask": (np.zeros((B, 1, H, W), np.float32) if hint_mask is None else
                              hint_mask.detach().cpu().float().expand(B, 1, H, W).numpy())}
        out = dict(zip(self.outputs, self.session.run(self.outputs, feed)))
        logits = torch.from_numpy(out["logits"]) if "logits" in out else None
        return logits, torch.from_numpy(out["ab"]) / AB_NORM


@dataclass
class OnnxColorizer(Colorizer):
    session: object = None                      # onnxruntime.InferenceSession
    onnx_centers: torch.Tensor | None = None    # (Q, 2) from the metadata; None for an l2 model

    @property
    def centers(self) -> torch.Tensor | None:
        return self.onnx_centers

    def _forward_ab(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        feed = {"L": x.cpu().numpy()}
        if "temperature" in self._inputs:     # the graph divides by it unchecked: the torch path's bounds here
            feed["temperature"] = np.asarray(check_temperature(temperature), np.float32)
        (ab,) = self.session.run(["ab"], feed)
        return torch.from_numpy(ab)

    @property
    def _inputs(self) -> set:
        return {i.name for i in self.session.get_inputs()}


def with_digest(data: bytes) -> bytes:
    """A serialised model whose metadata holds DIGEST_KEY = 64 zeros -> the same bytes with the digest there."""
    at = data.rfind(_ENTRY + _ZEROS) + len(_ENTRY)
    assert at >= len(_ENTRY), "the model has no zeroed colorfast.sha256 entry"
    return data[:at] + hashlib.sha256(data).hexdigest().encode() + data[at + 64:]


def check_digest(data: bytes, path) -> bool:
    """True if the file's digest matches its bytes, False if it carries none; CheckpointError on a mismatch."""
    at = data.rfind(_ENTRY) + len(_ENTRY)
    if at < len(_ENTRY):
        return False
    stored = data[at:at + 64]
    if hashlib.sha256(data[:at] + _ZEROS + data[at + 64:]).hexdigest().encode() != stored:
        raise CheckpointError(f"{path}: checksum mismatch (the file is damaged): its bytes are not the ones "
                              f"exported; export it again from its checkpoint")
    return True


def read_metadata(session, path) -> dict[str, str]:
    props = session.get_modelmeta().custom_metadata_map
    meta = {k.removeprefix("colorfast."): v for k, v in props.items() if k.startswith("colorfast.")}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: an ONNX model without colorfast metadata; export one with "
                              f"`python cli.py export --checkpoint CKPT --out model.onnx`")
    if meta.get("version") not in ("1", str(VERSION)):
        raise CheckpointError(f"{path}: colorfast ONNX version {meta.get('version')}, this code reads 1 and {VERSION}")
    return meta


def _decoding(meta: dict[str, str], inputs: set, path, outputs: set = frozenset({"ab"})):
    """(loss, released, centers or None, prior or None) from the metadata, each checked: a value that does
    not parse, or does not fit the graph's inputs and outputs, is a CheckpointError naming it."""
    def bad(key, why):
        return CheckpointError(f"{path}: its metadata colorfast.{key} {why}")
    loss = meta.get("loss")
    if loss not in LOSSES:
        raise bad("loss", f"is {loss!r}, none of {sorted(LOSSES)}")
    if meta.get("guided", "false") not in ("true", "false"):
        raise bad("guided", f"is {meta.get('guided')!r}, not true or false")
    if meta.get("guided") == "true":             # decoded by its regression head; bins only for suggestions
        classes = "logits" in outputs
        if inputs != {"L", "hint_ab", "hint_mask"} or "ab" not in outputs:
            raise bad("guided", f"does not fit the graph's inputs {sorted(inputs)} and outputs {sorted(outputs)}")
    else:
        classes = LOSSES[loss].head == "classes"
        if classes != ("temperature" in inputs) or "L" not in inputs or "hint_ab" in inputs:
            raise bad("loss", f"({loss}) does not fit the graph's inputs {sorted(inputs)}")
    if meta.get("released") not in ("true", "false"):
        raise bad("released", f"is {meta.get('released')!r}, not true or false")
    t = meta.get("default_temperature", "")
    try:
        if "temperature" in inputs and not (float(t) > 0 and math.isfinite(float(t))):
            raise ValueError
    except ValueError:
        raise bad("default_temperature", f"is {t!r}, not a finite number > 0") from None
    centers = prior = None
    try:
        if classes:
            centers = np.asarray(json.loads(meta.get("centers", "null")), np.float32)
            if centers.ndim != 2 or centers.shape[1] != 2 or len(centers) < 2 or not np.isfinite(centers).all():
                raise ValueError(f"shape {centers.shape}")
        elif "centers" in meta:
            raise ValueError("present, for an l2 model")
    except (ValueError, TypeError) as e:
        raise bad("centers", f"is not a finite (Q, 2) list of bin centres ({str(e)[:100]})") from None
    if meta.get("prior"):
        try:
            prior = {k: np.asarray(json.loads(meta["prior"])[k], np.float32) for k in ("centers", "prob", "weights")}
            if not all(np.isfinite(v).all() for v in prior.values()):
                raise ValueError("not finite")
        except (ValueError, TypeError, KeyError) as e:
            raise bad("prior", f"is not JSON of finite centers, prob and weights ({str(e)[:100]})") from None
    return loss, meta["released"] == "true", centers, prior


def load_onnx_colorizer(path, device="cpu") -> OnnxColorizer:
    """An exported .onnx file -> OnnxColorizer (CPUExecutionProvider). MissingExtra without onnxruntime."""
    (ort,) = require("onnxruntime", extra="onnx", what="--runtime onnx")
    path = Path(path)
    if str(device) == "cuda":
        raise CheckpointError(f"{path}: onnxruntime runs here on the CPU only; for --device cuda pass the "
                              f"checkpoint it was exported from")
    options = ort.SessionOptions()
    options.log_severity_level = 3                # errors only: no per-node warnings on stderr
    # by default onnxruntime's worker threads keep spinning for a while after each run, competing for the cores
    # with what this process does next (the full-resolution rebuild, PNG encoding; serve runs them right after)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    digested = check_digest(data, path)           # before onnxruntime parses a damaged file
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as e:                        # onnxruntime raises its own Fail/InvalidProtobuf types
        raise CheckpointError(f"{path}: not a loadable ONNX model ({type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0][:200]})") from None
    meta = read_metadata(session, path)
    if not digested and meta["version"] != "1":
        raise CheckpointError(f"{path}: damaged: its colorfast.sha256 entry is missing or unreadable; export it "
                              f"again from its checkpoint")
    if not digested:
        print(f"warning: {path}: exported before .onnx files carried a checksum: damage to it cannot be "
              f"detected; export it again to add one", file=sys.stderr)
    loss, released, centers, prior = _decoding(meta, {i.name for i in session.get_inputs()}, path,
                                               {o.name for o in session.get_outputs()})
    centers = None if centers is None else torch.from_numpy(centers)
    return OnnxColorizer(model=GuidedSession(session, centers) if meta.get("guided") == "true" else None, loss=loss,
                         prior=prior, source=str(path), device=torch.device("cpu"), released=released,
                         runtime="onnx", session=session, onnx_centers=centers)
