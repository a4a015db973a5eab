"""Fixture networks that respond to their input.

A default-initialised ColorNet in eval mode gives the same output for any L: its BatchNorms hold the
initial statistics (mean 0, var 1), the signal shrinks over ~20 layers and the biases decide. A test on
such a network passes with the input zeroed, so it cannot see how L enters (e.g. (L - 50) / 100 vs L / 100).
calibrate_batchnorm sets every BatchNorm's running statistics from a few forward passes over the lightness
of real photos (the photos bundled with scikit-image), as training would, so that every block's output is
normalised to unit spread and the input's variation reaches the head.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import skimage
import torch
from torch import nn

from pipeline.images import load_rgb, resize_center_crop, rgb_to_lab

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")     # bundled colour photos


@functools.lru_cache(maxsize=4)
def real_l(size: int = 64) -> torch.Tensor:
    """(4, 1, size, size) float32 L* in 0..100 of real photos, centre-cropped and resized."""
    folder = Path(skimage.__file__).resolve().parent / "data"
    Ls = [rgb_to_lab(resize_center_crop(load_rgb(folder / p), size))[..., 0] for p in PHOTOS]
    return torch.from_numpy(np.stack(Ls)[:, None]).float()


@torch.no_grad()
def calibrate_batchnorm(net: nn.Module, L: torch.Tensor | None = None) -> nn.Module:
    """Running statistics of every BatchNorm from forward passes over real L (cumulative: momentum None);
    returns the network in eval mode."""
    L = real_l() if L is None else L
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    for flip in (False, True):
        net(L.flip(-1) if flip else L)
    for bn in bns:
        bn.momentum = 0.1
    return net.eval()


def responds_to_l(net: nn.Module, L: torch.Tensor | None = None, min_change: float = 0.1) -> bool:
    """True when the network's output on real L differs from its output on a constant L = 50 by more than
    `min_change` of the output's own spread."""
    L = real_l() if L is None else L
    with torch.no_grad():
        out, flat = net(L), net(torch.full_like(L, 50.0))
    return bool((out - flat).abs().max() > min_change * out.std())
