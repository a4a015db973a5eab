"""Learning rate as a function of the step: constant, step (the reference solver) or cosine, after a linear
warm-up. A pure function of the step, so a resumed run continues the schedule where it stopped.

The reference ECCV16 solver (richzhang/colorization, models/colorization_train_val_v2.prototxt's solver):
Adam (0.9, 0.99), weight decay 1e-3, base_lr 3.16e-5, lr_policy "step" with gamma 0.316 every 215,000
iterations of batch 40. By default `step` keeps the samples per decay (215,000 x 40), so a global batch
of 80 decays every 107,500 steps; --lr-step sets the steps directly.
"""
from __future__ import annotations

import math

import torch

REFERENCE_STEP_SAMPLES = 215_000 * 40


def lr_at(step: int, base: float, schedule: str = "constant", total: int = 0, warmup: int = 0,
          step_size: int = 0, gamma: float = 0.316, global_batch: int = 40) -> float:
    """The lr of optimiser step `step` (0-based: the step about to be taken) of a run of `total` steps."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    if schedule == "step":
        size = step_size or max(1, round(REFERENCE_STEP_SAMPLES / global_batch))
        return base * gamma ** (step // size)
    if schedule == "cosine":
        span = max(1, total - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    raise ValueError(f"unknown lr schedule {schedule!r}")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr
