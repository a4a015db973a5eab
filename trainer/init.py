"""Data-dependent initialisation of a network trained from scratch: LSUV (Mishkin & Matas 2016, "All you need is
a good init").

Why: the reference trained from a data-dependent (k-means, philkr/magic_init) initialisation, and without one
its training is reported to stall and turn everything yellow (colorization-pytorch issue #3). torch's default
init shrinks the signal at every conv (kaiming-uniform with a = sqrt(5): output variance ~1/6 of the input's
after a ReLU); BatchNorm at the end of blocks 1..7 restores it, but model8 (transposed conv, two 3x3 convs, the
1x1 classifier) has no BatchNorm after it, so the head starts with activations ~100x too small.

LSUV, in forward order over every conv of the network: an orthonormal init, zero bias, then the weights
scaled so that the conv's output (before its ReLU or BatchNorm) has unit variance on a batch of real training
L crops. BatchNorm runs in train mode (batch statistics, as training sees them); its running statistics are
put back afterwards, so only conv weights and biases change.

The 1x1 classifier is the exception: it is scaled to an output standard deviation of HEAD_STD = 0.1, not 1.
The model should start uncommitted, a near-uniform softmax over the Q bins (initial CE ~ log Q, every colour
equally likely: the "prior" is learnt in the first steps, not unlearnt) or, for an l2 head, ab near 0 (gray, the
L2 optimum without information; 0.1 x 110 = 11 ab units of spread). Unit-variance logits would give each pixel
random preferences of e^3 among 313 bins to undo. Adam normalises each parameter's step, so the small head
does not slow the trunk's updates the way it would under SGD.

Cheap and deterministic: one pass through the network on `samples` crops (a per-layer forward, not one forward
per layer), the crops and the orthonormal matrices drawn from the run's seed. Under DDP every rank computes it
from the same samples, and DistributedDataParallel broadcasts rank 0's weights when it wraps the model anyway.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from pipeline import contract
from trainer.config import FitError
from trainer.models import L_CENT, L_NORM, ColorNet

DATA_INITS = ("lsuv", "off")
HEAD_STD = 0.1                     # output std of the 1x1 classifier after the init (module docstring)
_SALT = 0x15_0F                    # the init's crops differ from the first batch's crops of the same seed


def layers_in_order(model: ColorNet) -> list[tuple[str, nn.Module]]:
    """(name, module) of every leaf module in forward order: ColorNet.forward is model1 .. model8 in sequence."""
    return [(f"model{b}.{i}", m) for b in range(1, 9) for i, m in enumerate(getattr(model, f"model{b}"))]


def convs_in_order(model: ColorNet) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in layers_in_order(model) if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


def init_crops(dataset, samples: int, seed: int) -> torch.Tensor:
    """(n, 1, c, c) L* of `samples` training crops (fewer if the split is smaller), chosen from the seed."""
    n = min(samples, len(dataset))
    pick = np.random.default_rng((seed, _SALT)).choice(len(dataset), size=n, replace=False)
    L = np.stack([dataset[int(i)]["L"] for i in pick])                    # uint8 (n, c, c), epoch 0's crops
    dataset.close()            # no HDF5 handle of this process may be inherited by the loader's forked workers
    return torch.from_numpy(contract.uint8_to_l(L))[:, None]


@torch.no_grad()
def lsuv(model: ColorNet, L: torch.Tensor, seed: int, head_std: float = HEAD_STD) -> list[dict]:
    """Initialise every conv of `model` in place (module docstring); returns one record per conv: its name and
    the output std the orthonormal init gave before scaling."""
    gen = torch.Generator().manual_seed(seed)
    bn_state = {k: v.clone() for k, v in model.state_dict().items() if ".running_" in k or "num_batches" in k}
    was_training = model.training
    model.train()                                      # BatchNorm normalises with the batch's statistics
    device = next(model.parameters()).device
    x = (L.to(device) - L_CENT) / L_NORM
    convs = convs_in_order(model)
    head = convs[-1][1]
    records = []
    for name, layer in layers_in_order(model):
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            w = torch.empty(layer.weight.shape)
            nn.init.orthogonal_(w, generator=gen)      # on the CPU: the same matrices on every device
            layer.weight.copy_(w)
            if layer.bias is not None:
                layer.bias.zero_()
            y = layer(x)
            std = float(y.float().std())
            if not std > 0:
                raise FitError(f"--data-init lsuv: {name} outputs a constant on the {len(L)} init crops (are they all "
                               f"one lightness?); pass --data-init off")
            scale = (head_std if layer is head else 1.0) / std
            layer.weight.mul_(scale)
            records.append({"layer": name, "std_before": std})
            x = y.mul_(scale)                          # = the scaled conv's output: its bias is zero
        else:
            x = layer(x)
    model.load_state_dict(bn_state, strict=False)      # running statistics as they were: weights only change
    model.train(was_training)
    return records


def apply(name: str, model: ColorNet, dataset, samples: int, seed: int, echo=print) -> list[dict]:
    """The data init `name` (DATA_INITS) on `model` from `samples` crops of `dataset`; "off" leaves torch's."""
    if name == "off":
        return []
    t0 = time.perf_counter()
    L = init_crops(dataset, samples, seed)
    records = lsuv(model, L, seed)
    if echo is not None:
        echo(f"data init: LSUV on {len(L)} training crops, {len(records)} convs to unit output variance "
             f"(classifier {HEAD_STD}), {time.perf_counter() - t0:.1f} s")
    return records
