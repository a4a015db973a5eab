"""A trained network as a colorizer: Colorizer.predict_ab(L), and the network a checkpoint describes.

colorfast.loader.load_colorizer(ref) makes one from any file or name; the runtimes beside torch
(colorfast.onnx_runtime) and the other file formats (colorfast.safetensors_io) build on this module.

How a colorizer decodes is part of it. Released weights decode as the reference PyTorch port does
(richzhang/colorization, colorizers/eccv16.py): a plain softmax followed by `model_out`, which is the
annealed mean at T = 1 (the T = 0.38 annealing of the deploy prototxt is baked into the released weights,
not applied again), and ab upsampled bilinearly. Our CE/focal checkpoints use the paper's T = 0.38 and
bicubic upsampling. An explicit temperature overrides either.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.decode import DEFAULT_TEMPERATURE, check_temperature, decode
from trainer.losses import LOSSES
from trainer.models import MODELS, ColorNet, create_model

RELEASED_TEMPERATURE = 1.0       # plain softmax mean, as the reference decodes its released weights
_INTERPOLATION = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass
class Colorizer:
    model: ColorNet | None            # in eval mode, on `device` (None for the onnx runtime)
    loss: str                         # "ce" | "l2" | "focal" | "focal-exact" (released weights: "ce")
    prior: dict | None                # {"centers", "prob", "weights"} numpy arrays of the training shards, if known
    source: str                       # the file (or name) it came from
    device: torch.device
    released: bool = False            # released ECCV16 weights: decoded as the reference does
    runtime: str = "torch"            # "torch" | "onnx"
    weights: str = "raw"              # "raw" | "ema": which of a checkpoint's weights were loaded

    @property
    def centers(self) -> torch.Tensor | None:
        """(Q, 2) ab bin centres the logits refer to; None for an l2 model."""
        return self.model.centers

    @property
    def default_temperature(self) -> float | None:
        """The temperature used when none is given; None for an l2 model (no distribution to anneal)."""
        if self.loss == "l2":
            return None
        return RELEASED_TEMPERATURE if self.released else DEFAULT_TEMPERATURE

    @property
    def upsample(self) -> str:
        """How the 1/4-resolution ab is brought to full size: "bilinear" (the reference's) or "bicubic"."""
        return "bilinear" if self.released else "bicubic"

    @property
    def interpolation(self) -> int:
        """self.upsample as an OpenCV flag, for cv2.resize of ab (H, W, 2) float32."""
        return _INTERPOLATION[self.upsample]

    def temperature_for(self, temperature: float | None = None) -> float:
        """The temperature a prediction uses: `temperature` if given, else this colorizer's default.
        ValueError in one line for one that is not finite or out of bounds (trainer.decode.check_temperature),
        even for an l2 model, which ignores it: a typo is a typo whatever the checkpoint."""
        if temperature is not None:
            return check_temperature(temperature)
        temperature = self.default_temperature
        return DEFAULT_TEMPERATURE if temperature is None else float(temperature)   # l2: unused

    def describe(self, temperature: float | None = None) -> str:
        """One line for the user: which decoding and upsampling this colorizer's output had."""
        up = f"{self.upsample} upsampling" + (", onnxruntime (CPU)" if self.runtime == "onnx" else "")
        if self.loss == "l2":
            return f"l2 regression (no temperature), {up}"
        t = self.temperature_for(temperature)
        why = ("--temperature" if temperature is not None else
               "released weights: plain softmax mean, as the reference decodes them" if self.released else
               "annealed mean, the paper's default for our checkpoints")
        return f"temperature {t:g} ({why}), {up}"

    @torch.no_grad()
    def predict_ab(self, L: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """L (B, 1, H, W) float L* in 0..100 -> ab (B, 2, H // 4, W // 4) float32 in ab units, on L's device.
        Class models decode with the annealed mean at temperature_for(temperature); l2 models ignore it.
        H and W need not be multiples of 8: L is reflect-padded up to them and the prediction cropped back."""
        H, W = L.shape[-2:]
        ab = self._forward_ab(self._padded(L), self.temperature_for(temperature))
        return ab[..., : H // 4, : W // 4].to(L.device)

    @torch.no_grad()
    def predict_raw(self, L: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) float L* in 0..100 -> the head's output (B, C, H // 4, W // 4) on L's device: Q logits
        over `centers`, or ab / AB_NORM for an l2 model (the scoring of evaluate needs logits for CE). Padded
        as predict_ab pads."""
        if self.model is None:
            raise ValueError(f"{self.source}: the {self.runtime} runtime gives decoded colours only")
        H, W = L.shape[-2:]
        return self.model(self._padded(L))[..., : H // 4, : W // 4].to(L.device)

    def _padded(self, L: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) -> float32 on self.device, reflect-padded (replicated when too small to reflect) at the
        bottom and right up to multiples of 8, the network's stride."""
        if L.ndim != 4 or L.shape[1] != 1:
            raise ValueError(f"L must be (B, 1, H, W), got {tuple(L.shape)}")
        H, W = L.shape[-2:]
        ph, pw = -H % 8, -W % 8
        x = L.to(self.device, torch.float32)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        return x

    def _forward_ab(self, x: torch.Tensor, temperature: float) -> torch.Tensor:
        """x (B, 1, H, W) on self.device, H and W multiples of 8 -> ab (B, 2, H/4, W/4)."""
        return decode(self.model(x), self.model.centers, temperature)


def released_model(state: dict, centers: torch.Tensor) -> ColorNet:
    """The registered network whose shapes fit a released-layout state dict (eccv16 for the published file;
    a narrower one for a model saved in that layout). Shapes are compared on the meta device: no allocation."""
    for name in MODELS:
        with torch.device("meta"):
            probe = create_model(name, len(centers), centers)
        if all(k in state and state[k].shape == v.shape for k, v in probe.state_dict().items()
               if k != "centers" and not k.endswith("num_batches_tracked")):
            return create_model(name, len(centers), centers)
    return create_model("eccv16", len(centers), centers)        # load_trunk then names what does not fit


def checkpoint_model(raw: dict, state: dict, path) -> ColorNet:
    """The (untrained) network a colorfast checkpoint describes, its claims checked against each other, so that
    a crafted or inconsistent file is refused in one line rather than failing inside torch."""
    name, channels, loss, centers = raw["model_name"], raw["out_channels"], raw["loss"], state.get("centers")
    if name not in MODELS or loss not in LOSSES:
        raise checkpoint.CheckpointError(f"{path}: model_name {name!r} / loss {loss!r}: this code knows the models "
                                         f"{sorted(MODELS)} and the losses {sorted(LOSSES)}")
    if LOSSES[loss].head == "classes":
        if centers is None or centers.shape != (channels, 2) or channels < 2 or not centers.isfinite().all():
            got = "none" if centers is None else f"shape {tuple(centers.shape)}"
            raise checkpoint.CheckpointError(f"{path}: a {loss} model needs finite bin centres of shape "
                                             f"(out_channels={channels}, 2) in model.centers, it has {got}")
    elif channels != 2 or centers is not None:
        raise checkpoint.CheckpointError(f"{path}: an l2 model has out_channels 2 and no bin centres, this one "
                                         f"claims {channels}" + (" and has centres" if centers is not None else ""))
    return create_model(name, channels, centers)
