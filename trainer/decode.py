"""Network output -> ab colours.

Class heads use the annealed mean of the ECCV16 paper: softmax(logits / T) @ centres. T = 1 is the mean
of the predicted distribution (desaturated), T -> 0 its mode (vivid, patchy); T = 0.38 is the paper's
compromise. The l2 head predicts ab / AB_NORM directly.
"""
from __future__ import annotations

import torch

from trainer.models import AB_NORM

DEFAULT_TEMPERATURE = 0.38


def annealed_mean(logits: torch.Tensor, centers: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """logits (B, Q, h, w), centers (Q, 2) -> (B, 2, h, w) float32 in the centres' units (ab units here; the
    block loss passes them / AB_NORM). Differentiable."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = torch.softmax(logits.float() / temperature, dim=1)                       # (B, Q, h, w)
    return torch.einsum("bqhw,qc->bchw", p, centers.to(p.device, torch.float32))


def decode(out: torch.Tensor, centers: torch.Tensor | None, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Any head's output (B, C, h, w) -> ab (B, 2, h, w) in ab units; centers None means an l2 head."""
    if centers is None:
        return out.float() * AB_NORM
    return annealed_mean(out, centers, temperature)
