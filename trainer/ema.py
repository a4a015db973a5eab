"""Exponential moving average of a model's weights (`fit --ema DECAY`).

After every optimiser step: shadow = d * shadow + (1 - d) * weights, over every floating-point entry of
the state dict (parameters and the BatchNorm running statistics, as timm's ModelEmaV2); integer buffers
(BN's step counter) are copied. d = min(decay, (1 + n) / (10 + n)) after n updates, as TensorFlow's
ExponentialMovingAverage with num_updates: early on the average follows the weights, so a short run is not
dominated by its random initialisation. The averaging itself is torch's get_ema_multi_avg_fn (one fused
_foreach_lerp_ over all tensors).

Why not torch.optim.swa_utils.AveragedModel (tried for issue 20): its update_parameters reads its step counter
n_averaged on the host every step. With the counter on the model's device that is `bool(n_averaged == 0)` and
`n_averaged > 0`, an `_local_scalar_dense` each (a GPU sync); with the counter kept on the CPU it is
`n_averaged.to(device)` once per dtype group (floats, and BN's int64 counter), a blocking host-to-device copy,
which torch ends with cudaStreamSynchronize. Measured through torch's dispatch hook with the model on the meta
device standing in for CUDA (torch 2.13: `eq` and `_local_scalar_dense` on the device, or `_to_copy` from the
CPU to it twice per update); tests/trainer/test_ema_schedule.py holds this EMA to the same check. Either way
the training step would wait for the GPU every step, which fit's step never does (trainer/step.py). Besides,
with use_buffers=True (needed so that the average's BN statistics are averaged, not frozen at their step-0
values) it also averages BN's integer step counter (truncated), and its first update copies the weights where
this one blends them with the initial ones. So the counter stays a Python int here, and checkpoints keep their
"ema" (a plain state dict) and "ema_updates" fields.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


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
        mine, theirs = self.model.state_dict(), model.state_dict()
        floats = [k for k, v in mine.items() if v.is_floating_point()]
        # the decay is a host number (a Python counter): no host sync, one fused kernel over all tensors
        average = get_ema_multi_avg_fn(self.current_decay())
        average([mine[k] for k in floats], [theirs[k].detach() for k in floats], None)
        for k, v in mine.items():
            if not v.is_floating_point():
                v.copy_(theirs[k])
        self.updates += 1

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load(self, state: dict, updates: int) -> None:
        self.model.load_state_dict(state)
        self.updates = updates
