"""Learning rate as a function of the step: constant, step (the reference solver) or cosine, after a linear
warm-up, through torch's LambdaLR: lr = base * lr_factor(step). The factor is a closed form of the step (the
built-in StepLR, LinearLR and CosineAnnealingLR update the previous lr recursively, so their values depend
on the path and drift by rounding from the closed form), and a resumed run rebuilds the scheduler at the
checkpoint's step (`last_epoch`), so it continues the schedule where it stopped; nothing of it is saved.
In the warm-up, base * ((step + 1) / warmup) can differ from the hand-written schedule's base * (step + 1) /
warmup in the last bit of the double (about a third of the steps for common values); rounded to float32 they
were equal for every base lr and warm-up checked, and a run stopped by that version inside its warm-up resumes
to the same weights, EMA and losses as it would have (the logged lr shows the difference at the 17th digit).

The reference ECCV16 solver (richzhang/colorization, models/colorization_train_val_v2.prototxt's solver):
Adam (0.9, 0.99), weight decay 1e-3, base_lr 3.16e-5, lr_policy "step" with gamma 0.316 every 215,000
iterations of batch 40. By default `step` keeps the samples per decay (215,000 x 40), so a global batch
of 80 decays every 107,500 steps; --lr-step sets the steps directly.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch.optim.lr_scheduler import LambdaLR

REFERENCE_STEP_SAMPLES = 215_000 * 40


def lr_factor(step: int, schedule: str = "constant", total: int = 0, warmup: int = 0, step_size: int = 0,
              gamma: float = 0.316, global_batch: int = 40) -> float:
    """The lr of optimiser step `step` (0-based: the step about to be taken) of a run of `total` steps, as a
    fraction of the base lr."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "step":
        size = step_size or max(1, round(REFERENCE_STEP_SAMPLES / global_batch))
        return gamma ** (step // size)
    if schedule == "cosine":
        span = max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(step - warmup, span) / span))
    raise ValueError(f"unknown lr schedule {schedule!r}")


def lr_at(step: int, base: float, schedule: str = "constant", total: int = 0, warmup: int = 0,
          step_size: int = 0, gamma: float = 0.316, global_batch: int = 40) -> float:
    """The lr the scheduler gives step `step`: LambdaLR's base * factor, in that order."""
    return base * lr_factor(step, schedule, total, warmup, step_size, gamma, global_batch)


def create(opt: torch.optim.Optimizer, base: float, step: int, schedule: str = "constant", total: int = 0,
           warmup: int = 0, step_size: int = 0, gamma: float = 0.316, global_batch: int = 40) -> LambdaLR:
    """The scheduler with the optimiser's lr already set for step `step` (0 from scratch, the checkpoint's on
    resume); call its step() after each optimiser step."""
    for g in opt.param_groups:
        g["initial_lr"] = base                               # LambdaLR's base; also when resuming a loaded optimiser
    factor = partial(lr_factor, schedule=schedule, total=total, warmup=warmup, step_size=step_size, gamma=gamma,
                     global_batch=global_batch)
    return LambdaLR(opt, factor, last_epoch=step - 1)        # its constructor steps once, to `step`
