"""Network output -> ab colours.

Class heads use the annealed mean of the ECCV16 paper: softmax(logits / T) @ centres. T = 1 is the mean
of the predicted distribution (desaturated), T -> 0 its mode (vivid, patchy); T = 0.38 is the paper's
compromise. The l2 head predicts ab / AB_NORM directly.
"""
from __future__ import annotations

import torch

from trainer.models import AB_NORM

DEFAULT_TEMPERATURE = 0.38
# Below ~1e-2 the float32 softmax of logits / T overflows to inf and decodes to NaN (an all-white image); above
# ~1e2 every pixel gets the prior's mean. Outside these bounds a temperature is a typo, never a choice.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0


def check_temperature(temperature, what: str = "temperature") -> float:
    """`temperature` as a float, or a ValueError in one line when it is not a finite number in
    [MIN_TEMPERATURE, MAX_TEMPERATURE]. Every place a user's temperature enters goes through here."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a finite number between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g}, "
                         f"got {temperature!r}") from None
    if not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE:          # also False for NaN
        raise ValueError(f"{what} must be a finite number between {MIN_TEMPERATURE:g} and {MAX_TEMPERATURE:g} "
                         f"(1: the mean, 0.38: the paper's annealed mean), got {temperature!r}")
    return t


def annealed_mean(logits: torch.Tensor, centers: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """logits (B, Q, h, w), centers (Q, 2) -> (B, 2, h, w) float32 in the centres' units (ab units here; the
    block loss passes them / AB_NORM). Differentiable."""
    temperature = check_temperature(temperature)
    p = torch.softmax(logits.float() / temperature, dim=1)                       # (B, Q, h, w)
    return torch.einsum("bqhw,qc->bchw", p, centers.to(p.device, torch.float32))


def decode(out: torch.Tensor, centers: torch.Tensor | None, temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Any head's output (B, C, h, w) -> ab (B, 2, h, w) in ab units; centers None means an l2 head."""
    if centers is None:
        return out.float() * AB_NORM
    return annealed_mean(out, centers, temperature)
