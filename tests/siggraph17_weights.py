"""Test state dicts in the published SIGGRAPH17 layout (richzhang/colorization's siggraph17-df00044c.pth).

Random weights would not do: a default-initialised network gives the same colours whatever L and the hints are
(live_networks explains why). released_siggraph17_state_dict calibrates every BatchNorm on real photos' L with
random sparse hints (so the statistics cover hinted inputs too), scales the class head so its distribution is far
from uniform, and, with `hint_path`, wires a direct route from the hint planes to the regression head (what a
trained network learns: a hint's colour shows at the hint), so that a test can see WHERE and WHICH colour a hint
lands, not only that something changed.
"""
from __future__ import annotations

import torch
from torch import nn

from live_networks import calibrate_batchnorm, real_l
from trainer.models import create_model
from trainer.siggraph17 import grid_centers

HINT_GAIN = 1.5          # pre-tanh gain of the hint route: a hint of a = +60 alone gives a = 110 * tanh(0.82) = 74


def random_hints(n: int, side: int, seed: int = 0, points: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """(hint_ab (n, 2, side, side) in ab units, hint_mask (n, 1, side, side)): `points` 4x4 patches per image."""
    g = torch.Generator().manual_seed(seed)
    ab, mask = torch.zeros(n, 2, side, side), torch.zeros(n, 1, side, side)
    for i in range(n):
        for _ in range(points):
            y, x = torch.randint(0, side - 4, (2,), generator=g).tolist()
            ab[i, :, y:y + 4, x:x + 4] = (torch.rand(2, generator=g) * 160 - 80)[:, None, None]
            mask[i, :, y:y + 4, x:x + 4] = 1
    return ab, mask


class _Hinted(nn.Module):
    """net(L) with fixed random hints: calibrate_batchnorm's forward passes then see hinted inputs."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, L):
        return self.net(L, *random_hints(L.shape[0], L.shape[-1], seed=L.shape[0]))


def _wire_hint_path(net) -> None:
    """Channels 0..3 carry +a, -a, +b, -b of the hint (ReLU keeps each sign in its own channel) from the input
    through model1, model1short10 and model10 to model_out, which adds HINT_GAIN * hint / 110 before its tanh."""
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0])
    with torch.no_grad():
        for conv, src in ((net.model1[0], None), (net.model1[2], "same"), (net.model1short10[0], "same"),
                          (net.model10[1], "same")):
            conv.weight[:4] = 0
            conv.bias[:4] = 0
            for c in range(4):
                if src is None:                          # input channels: L, hint a, hint b, mask
                    conv.weight[c, 1 + c // 2, 1, 1] = sign[c]
                else:
                    conv.weight[c, c, 1, 1] = 1.0
        net.model10up[0].weight[:, :4] = 0               # the decoder adds nothing to those channels
        net.model10up[0].bias[:4] = 0
        bn = net.model1[4]                               # BatchNorm: identity on the route's channels
        bn.weight[:4] = torch.sqrt(bn.running_var[:4] + bn.eps)
        bn.bias[:4] = bn.running_mean[:4]
        w = net.model_out[0].weight
        w[:, :4] = 0
        w[0, 0], w[0, 1], w[1, 2], w[1, 3] = HINT_GAIN, -HINT_GAIN, HINT_GAIN, -HINT_GAIN


def released_siggraph17_state_dict(model: str = "siggraph17-tiny", seed: int = 0, scale: float = 10.0,
                                   hint_path: bool = True) -> dict:
    """A state dict as the published file holds it (no `centers`, no BN counters, 529 classes), its output
    depending on L and on the hints (see the module docstring)."""
    torch.manual_seed(seed)
    net = create_model(model, 529, grid_centers())
    calibrate_batchnorm(_Hinted(net), real_l(64))
    if hint_path:
        _wire_hint_path(net)
    sd = {k: v.clone() for k, v in net.state_dict().items() if k != "centers" and not k.endswith("num_batches_tracked")}
    sd["model_class.0.weight"] = sd["model_class.0.weight"] * scale
    sd["model_class.0.bias"] = torch.randn(529) * 2
    return sd
