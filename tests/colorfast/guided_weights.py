"""A guided (siggraph17-tiny) checkpoint whose answer to a hint is known: its regression head copies the hint.

No trained SIGGRAPH17 weights can be downloaded here, and a random network moves colours near a hint in a random
direction. This one is wired by hand: the hint ab (split into positive and negative parts, since every layer on
the way ends in a ReLU) goes through model1, the model1short10 skip and model10 to model_out, each a box filter,
so the output ab near a hint is ~110 tanh(hint / 110) spread over a few pixels, and gray (0) elsewhere, whatever
L is. Its class head is a fixed distribution over a few bins (`LIKELY`, most likely first), so suggestions are
known too. Every other weight is zero and every BatchNorm the identity. The page and API tests check, through
it, that a hint reaches the network at the right place with the right colour.
"""
from pathlib import Path

import torch

from trainer import checkpoint
from trainer.models import create_model
from trainer.siggraph17 import grid_centers

MODEL = "siggraph17-tiny"
LIKELY = ((-20, 50), (40, 30), (0, -40))         # ab bins (on the 23x23 grid) the class head prefers, in order
LIKELY_LOGITS = (9.0, 8.0, 7.0)


def _box(conv: torch.nn.Conv2d, pairs) -> None:
    """conv's output channel o = the 3x3 mean of input channel i (times sign), for (o, i, sign) in pairs."""
    for o, i, sign in pairs:
        conv.weight.data[o, i] = sign / 9.0


def hint_copy_model():
    centers = grid_centers()
    net = create_model(MODEL, len(centers), centers).eval()
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name != "centers" and t.is_floating_point():
                t.zero_()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.fill_(1.0)
                m.weight.fill_(1.0)
        # model1's input: (L - 50) / 100, a / 110, b / 110, mask -> channels +a, -a, +b, -b
        _box(net.model1[0], [(0, 1, 1.0), (1, 1, -1.0), (2, 2, 1.0), (3, 2, -1.0)])
        _box(net.model1[2], [(c, c, 1.0) for c in range(4)])
        _box(net.model1short10[0], [(c, c, 1.0) for c in range(4)])
        _box(net.model10[1], [(c, c, 1.0) for c in range(4)])
        out = net.model_out[0].weight.data
        out[0, 0], out[0, 1], out[1, 2], out[1, 3] = 1.0, -1.0, 1.0, -1.0
        bias = net.model_class[0].bias.data
        for (a, b), logit in zip(LIKELY, LIKELY_LOGITS):
            bias[int(((centers - torch.tensor([a, b], dtype=torch.float32)).abs().sum(1)).argmin())] = logit
    return net


def save_hint_copy(path) -> Path:
    net = hint_copy_model()
    return checkpoint.save(Path(path), {"model": net.state_dict(), "model_name": MODEL, "out_channels": 529,
                                        "loss": "ce", "step": 0})
