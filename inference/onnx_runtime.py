"""An exported .onnx file (inference.onnx_export) as a Colorizer run by onnxruntime on the CPU.

Everything but the network call is the torch colorizer's (padding to multiples of 8, cropping back, the
decoding defaults and upsampling mode), so colorize, evaluate, compare and the web page take either.
The decoding settings come from the file's colorfast.* metadata_props; a file without them (an ONNX model
from elsewhere) is refused, since its inputs and outputs could mean anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inference.colorizer import Colorizer
from inference.extras import require
from trainer.checkpoint import CheckpointError
from trainer.decode import check_temperature

FORMAT, VERSION = "colorfast-onnx", 1           # as written by inference.onnx_export


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


def read_metadata(session, path) -> dict[str, str]:
    props = session.get_modelmeta().custom_metadata_map
    meta = {k.removeprefix("colorfast."): v for k, v in props.items() if k.startswith("colorfast.")}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: an ONNX model without colorfast metadata; export one with "
                              f"`python cli.py export --checkpoint CKPT --out model.onnx`")
    if meta.get("version") != str(VERSION):
        raise CheckpointError(f"{path}: colorfast ONNX version {meta.get('version')}, this code reads {VERSION}")
    return meta


def load_onnx_colorizer(path, device="cpu") -> OnnxColorizer:
    """An exported .onnx file -> OnnxColorizer (CPUExecutionProvider). MissingExtra without onnxruntime."""
    (ort,) = require("onnxruntime", extra="onnx", what="--runtime onnx")
    path = Path(path)
    if str(device) == "cuda":
        raise CheckpointError(f"{path}: onnxruntime runs here on the CPU only; for --device cuda pass the "
                              f"checkpoint it was exported from")
    options = ort.SessionOptions()
    options.log_severity_level = 3                # errors only: no per-node warnings on stderr
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:                        # onnxruntime raises its own Fail/InvalidProtobuf types
        raise CheckpointError(f"{path}: not a loadable ONNX model ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]})") from None
    meta = read_metadata(session, path)
    centers = torch.tensor(json.loads(meta["centers"]), dtype=torch.float32) if meta.get("centers") else None
    prior = ({k: np.asarray(v) for k, v in json.loads(meta["prior"]).items()} if meta.get("prior") else None)
    return OnnxColorizer(model=None, loss=meta["loss"], prior=prior, source=str(path), device=torch.device("cpu"),
                         released=meta.get("released") == "true", runtime="onnx", session=session,
                         onnx_centers=centers)
