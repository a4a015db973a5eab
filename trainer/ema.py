"""Exponential moving average of a model's weights (`fit --ema DECAY`).

After every optimiser step: shadow = d * shadow + (1 - d) * weights, over every floating-point entry of
the state dict (parameters and the BatchNorm running statistics, as timm's ModelEmaV2); integer buffers
(BN's step counter) are copied. d = min(decay, (1 + n) / (10 + n)) after n updates, as TensorFlow's
ExponentialMovingAverage with num_updates: early on the average follows the weights, so a short run is not
dominated by its random initialisation.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        mine, theirs = self.model.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        # one fused kernel over all tensors: no host sync, cheap next to a training step
        torch._foreach_lerp_([mine[k] for k in floats], [theirs[k].detach() for k in floats], 1.0 - d)
        for k, v in mine.items():
            if not v.is_floating_point():
                v.copy_(theirs[k])
        self.updates += 1

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load(self, state: dict, updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = updates
