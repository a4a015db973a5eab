"""`cli.py export`: a checkpoint -> one self-contained .onnx file for onnxruntime (CPU-only users).

The graph holds the network *and* its decoding, so the file alone colours an image:

    inputs   L            (B, 1, H, W) float32, L* in 0..100; B, H, W dynamic, H and W multiples of 8
             temperature  () float32 > 0, the annealed-mean temperature (class heads only)
    output   ab           (B, 2, H/4, W/4) float32 in ab units

A guided network (siggraph17, which takes colour hints) is exported as the network itself, its decoding being
its regression head:

    inputs   L            (B, 1, H, W) float32, L* in 0..100; H and W multiples of 8
             hint_ab      (B, 2, H, W) float32, the hints' ab in ab units (0 elsewhere)
             hint_mask    (B, 1, H, W) float32, 1 where a hint is (all zeros: the automatic colorizer)
    outputs  ab           (B, 2, H, W) float32 in ab units, the regression head (the colour)
             logits       (B, Q, H/4, W/4) float32, the class head over the bin centres (suggested colours)

and its metadata_props carry what a reader needs beside it (colorfast.* keys, strings): the loss, whether
these are the released ECCV16 weights, the default temperature (1 for released weights, 0.38 for ours),
the upsampling mode (bilinear / bicubic), the bin centres and the training prior as JSON. Exported with
torch.onnx.export (the dynamo exporter; needs the `onnx` extra) and, when onnxruntime is there, checked
against torch on a test input before it is moved into place.

`export --format safetensors` is here too (export_safetensors): the weights and the same decoding settings as a
.safetensors file, whose format is colorfast.safetensors_io's.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from colorfast import safetensors_io
from colorfast.colorizer import Colorizer
from colorfast.extras import require
from colorfast.loader import load_colorizer
from colorfast.onnx_runtime import DIGEST_KEY, FORMAT, VERSION, with_digest    # one definition, beside the reader
from pipeline.contract import atomic_write
from trainer.models import AB_NORM

PARITY_TOL = 1e-3            # max |delta ab| between torch and onnxruntime accepted at export


class ExportError(ValueError):
    """The exported graph does not reproduce the torch model (or the output cannot be written)."""


class _ClassHead(nn.Module):
    """Network + annealed mean, as trainer.decode.annealed_mean (whose argument check cannot be traced)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, L, temperature):
        p = torch.softmax(self.model(L).float() / temperature, dim=1)               # (B, Q, h, w)
        return torch.einsum("bqhw,qc->bchw", p, self.model.centers)                # (B, 2, h, w)


class _Guided(nn.Module):
    """A hinted network's two heads: ab in ab units (the colour) and the class logits (the suggestions)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, L, hint_ab, hint_mask):
        logits, ab = self.model(L, hint_ab, hint_mask)
        if self.model.centers is None:                # regression only: no bins to suggest from
            return ab.float() * AB_NORM
        return ab.float() * AB_NORM, logits.float()


class _AbHead(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, L):
        return self.model(L).float() * AB_NORM


def metadata(colorizer: Colorizer) -> dict[str, str]:
    """The colorfast.* metadata_props of an exported colorizer."""
    meta = {"format": FORMAT, "version": str(VERSION), "loss": colorizer.loss,
            "released": "true" if colorizer.released else "false", "upsample": colorizer.upsample,
            "default_temperature": "" if colorizer.default_temperature is None else repr(colorizer.default_temperature),
            "source": colorizer.source, "net_stride": "8",
            "io": "L (B,1,H,W) float32 L* 0..100, H and W multiples of 8; temperature () float32 > 0 "
                  "(class heads) -> ab (B,2,H/4,W/4) float32 ab units"}
    if getattr(colorizer, "guided", False):
        meta["guided"] = "true"
        meta["io"] = ("L (B,1,H,W) float32 L* 0..100, H and W multiples of 8; hint_ab (B,2,H,W) float32 ab units; "
                      "hint_mask (B,1,H,W) float32 1 at hints -> ab (B,2,H,W) float32 ab units, logits (B,Q,H/4,W/4)")
    if colorizer.centers is not None:
        meta["centers"] = json.dumps(colorizer.centers.cpu().numpy().round(4).tolist())
    if colorizer.prior is not None:
        meta["prior"] = json.dumps({k: np.asarray(v).tolist() for k, v in colorizer.prior.items()})
    return {f"colorfast.{k}": v for k, v in meta.items()}


@contextlib.contextmanager
def _quiet():
    """The exporter narrates every step on stdout and warns about torchvision ops we do not use."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def to_onnx_proto(colorizer: Colorizer):
    """The colorizer's network and decoding as an onnx.ModelProto with dynamic batch, height and width."""
    require("onnx", "onnxscript", extra="onnx", what="`export`")
    model = colorizer.model.float().cpu().eval()
    classes = model.centers is not None
    L = torch.rand(2, 1, 64, 96) * 100
    B, h8, w8 = torch.export.Dim("batch"), torch.export.Dim("h8"), torch.export.Dim("w8")
    shapes = {"L": {0: B, 2: 8 * h8, 3: 8 * w8}}
    outputs = ["ab"]
    if getattr(colorizer, "guided", False):
        graph = _Guided(model).eval()
        hint_ab, hint_mask = torch.zeros(2, 2, 64, 96), torch.zeros(2, 1, 64, 96)
        hint_mask[:, :, 8:16, 40:48] = 1                  # a traced example with a hint in it
        hint_ab[:, :, 8:16, 40:48] = 30
        args = (L, hint_ab, hint_mask)
        shapes["hint_ab"] = shapes["hint_mask"] = shapes["L"]
        outputs += ["logits"] if classes else []
    elif classes:
        graph = _ClassHead(model).eval()
        args = (L, torch.tensor(colorizer.temperature_for(), dtype=torch.float32))
        shapes["temperature"] = None
    else:
        graph, args = _AbHead(model).eval(), (L,)
    with _quiet():
        program = torch.onnx.export(graph, args, dynamo=True, external_data=False, verbose=False,
                                    input_names=list(shapes), output_names=outputs, dynamic_shapes=shapes)
    proto = program.model_proto
    del proto.metadata_props[:]
    for k, v in metadata(colorizer).items():
        proto.metadata_props.add(key=k, value=v)
    proto.metadata_props.add(key=DIGEST_KEY, value="0" * 64)      # with_digest fills it in
    proto.doc_string = f"colorfast colorizer exported from {colorizer.source}"
    return proto


def parity(colorizer: Colorizer, onnx_path: Path, side=(40, 72), batch: int = 2) -> float | None:
    """Max |delta ab| between torch and onnxruntime on one random-lightness batch (a guided network: with
    random hints and without); None without onnxruntime."""
    try:
        from colorfast.onnx_runtime import load_onnx_colorizer
        other = load_onnx_colorizer(onnx_path)
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    L = torch.rand(batch, 1, *side, generator=g) * 100
    if not colorizer.guided:
        return float((colorizer.predict_ab(L) - other.predict_ab(L)).abs().max())
    mask = (torch.rand(batch, 1, *side, generator=g) < 0.02).float()       # a few scattered hints, and none
    hints = ((torch.rand(batch, 2, *side, generator=g) * 160 - 80) * mask, mask)
    return max(float((colorizer.predict_ab(L, hints=h) - other.predict_ab(L, hints=h)).abs().max())
               for h in (hints, None))


def is_input(out, source) -> bool:
    """Whether writing `out` would replace the file `source` (the same path, a link to it, a hard link)."""
    out, source = Path(out), Path(source)
    return out.exists() and source.exists() and os.path.samefile(out, source)


def export(ref, out) -> tuple[Path, Colorizer, float | None]:
    """Checkpoint file or name -> OUT (.onnx, written atomically); returns (path, the torch colorizer,
    the parity figure). Raises ExportError when onnxruntime disagrees with torch by more than PARITY_TOL."""
    onnx, _ = require("onnx", "onnxscript", extra="onnx", what="`export`")
    out = Path(out)
    if is_input(out, ref):
        raise ExportError(f"{out} is the checkpoint being exported; an export never replaces its input "
                          f"(not even with --force): choose another --out")
    colorizer = load_colorizer(ref, device="cpu", runtime="torch")
    proto = to_onnx_proto(colorizer)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(out) as tmp:
            tmp.write_bytes(with_digest(proto.SerializeToString()))   # what onnx.save writes, plus the digest
            onnx.checker.check_model(str(tmp))
            delta = parity(colorizer, Path(tmp))
            if delta is not None and delta > PARITY_TOL:
                raise ExportError(f"{out}: onnxruntime and torch differ by up to {delta:.2g} ab units "
                                  f"(> {PARITY_TOL}); not written")
    except OSError as e:                      # a full disk, a read-only folder: nothing was replaced
        raise ExportError(f"{out}: cannot write ({errno.errorcode.get(e.errno, 'error')}: "
                          f"{e.strerror or e}); nothing was written") from None
    return out, colorizer, delta


def export_safetensors(ref, out):
    """Checkpoint file or name -> OUT (.safetensors, written atomically, read back and compared before it is
    moved into place); returns (path, the torch colorizer). ExportError for an OUT that is the input or cannot
    be written."""
    out = Path(out)
    if is_input(out, ref):
        raise ExportError(f"{out} is the checkpoint being exported; an export never replaces its input "
                          f"(not even with --force): choose another --out")
    colorizer = load_colorizer(ref, device="cpu", runtime="torch")
    try:
        with atomic_write(out, suffix=safetensors_io.SUFFIX) as tmp:
            safetensors_io.write(colorizer, tmp)
            _, back = safetensors_io.read(tmp)     # what was written is what a reader gets, checked like any load
            if any(not torch.equal(back[k], v) for k, v in colorizer.model.state_dict().items()):
                raise ExportError(f"{out}: the weights read back differ from the checkpoint's; not written")
    except OSError as e:                      # a full disk, a read-only folder: nothing was replaced
        raise ExportError(f"{out}: cannot write ({e.strerror or e}); nothing was written") from None
    return out, colorizer
