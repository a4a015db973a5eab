"""A trained network as a colorizer: load_colorizer(path) -> Colorizer.predict_ab(L).

Accepts a colorfast training checkpoint (RUN_DIR/last.pt) or a bare state dict in the released ECCV16
PyTorch layout (model1..model8, model_out), the latter decoding with its own 313 bins. Files are read with
torch.load(weights_only=True) (trainer.checkpoint), so a file carrying pickled code is refused.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trainer import checkpoint
from trainer.decode import DEFAULT_TEMPERATURE, decode
from trainer.models import ColorNet, create_model, from_released, is_released_layout, load_trunk


@dataclass
class Colorizer:
    model: ColorNet                   # in eval mode, on `device`
    loss: str                         # "ce" | "l2" | "focal" | "focal-exact" (released weights: "ce")
    prior: dict | None                # {"centers", "prob", "weights"} numpy arrays of the training shards, if known
    source: str                       # the file it came from
    device: torch.device

    @property
    def centers(self) -> torch.Tensor | None:
        """(Q, 2) ab bin centres the logits refer to; None for an l2 model."""
        return self.model.centers

    @torch.no_grad()
    def predict_ab(self, L: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
        """L (B, 1, H, W) float L* in 0..100 -> ab (B, 2, H // 4, W // 4) float32 in ab units, on L's device.
        Class models decode with the annealed mean at `temperature`; l2 models ignore it. H and W need not be
        multiples of 8: L is reflect-padded up to them and the prediction cropped back."""
        if L.ndim != 4 or L.shape[1] != 1:
            raise ValueError(f"L must be (B, 1, H, W), got {tuple(L.shape)}")
        H, W = L.shape[-2:]
        ph, pw = -H % 8, -W % 8
        x = L.to(self.device, torch.float32)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(H, W) > max(ph, pw) else "replicate")
        ab = decode(self.model(x), self.model.centers, temperature)
        return ab[..., : H // 4, : W // 4].to(L.device)


def load_colorizer(path, device="cpu") -> Colorizer:
    """Our checkpoint or a released-layout ECCV16 state dict -> Colorizer on `device` ("auto": CUDA if visible).
    Raises checkpoint.CheckpointError naming the file when it cannot or must not be loaded."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    raw = checkpoint.load_any(path)
    if raw.get("format") == checkpoint.FORMAT:
        state = raw["model"]
        centers = state.get("centers")
        model = create_model(raw["model_name"], raw["out_channels"], centers)
        loss = raw["loss"]
        prior = {k: np.asarray(v) for k, v in raw["prior"].items()} if raw.get("prior") else None
    elif is_released_layout(raw):
        state, centers = from_released(raw)
        model = create_model("eccv16", len(centers), centers)
        loss, prior = "ce", None
    else:
        raise checkpoint.CheckpointError(f"{path}: neither a colorfast checkpoint nor a released ECCV16 state dict "
                                         f"(keys model1.* .. model8.*, model_out.weight)")
    try:
        load_trunk(model, state)
    except ValueError as e:
        raise checkpoint.CheckpointError(f"{path}: {e}") from None
    return Colorizer(model=model.to(device).eval(), loss=loss, prior=prior, source=str(path), device=device)
