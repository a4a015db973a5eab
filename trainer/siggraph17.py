"""SIGGRAPH17 user-guided colorization network (Zhang, Zhu, Isola et al. 2017) and a narrow variant for CPU tests.

Layer for layer the generator of richzhang/colorization (colorizers/siggraph17.py; trained by
richzhang/colorization-pytorch), so the published state dict (siggraph17-df00044c.pth) loads by name: a U-Net
whose input is L, the hint ab and the hint mask (4 channels), blocks `model1` .. `model10` with the skip
connections `model3short8`, `model2short9`, `model1short10`, a class head `model_class` (529 classes of the
23x23 ab grid) on the 1/4-resolution features and a regression head `model_out` (conv + tanh) at full
resolution. The bins the class head refers to live in a buffer `centers` (Q, 2), as in ColorNet, so a
checkpoint carries them; the published file has none, `from_released` supplies the grid's centres.

    input   L (B, 1, H, W) L* in 0..100 -> (L - 50) / 100; hint_ab (B, 2, H, W) ab units -> / 110;
            hint_mask (B, 1, H, W) 1 where a hint is (None: no hints, the automatic colorizer); H, W multiples of 8
    output  (logits (B, Q, H/4, W/4), ab (B, 2, H, W) = ab / 110 in -1..1, the reference's out_reg)
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.models import AB_NORM, L_CENT, L_NORM, MODELS

AB_QUANT, AB_MAX = 10.0, 110.0           # colorization-pytorch's --ab_quant / --ab_max: a 23 x 23 grid, 529 classes
GRID_SIDE = int(2 * AB_MAX / AB_QUANT) + 1


def grid_centers() -> torch.Tensor:
    """(529, 2) ab centres of the reference's classes, in its order: class = a_index * 23 + b_index
    (colorization-pytorch util.encode_ab_ind / decode_ind_ab)."""
    steps = torch.arange(GRID_SIDE, dtype=torch.float32) * AB_QUANT - AB_MAX
    a, b = torch.meshgrid(steps, steps, indexing="ij")
    return torch.stack([a.reshape(-1), b.reshape(-1)], 1)


def _block(c_in: int, c: int, n: int, dilation: int = 1, lead_relu: bool = False) -> nn.Sequential:
    """n 3x3 convs, each followed by ReLU, then BatchNorm; `lead_relu` opens with the ReLU the reference puts
    after a skip addition (model8, model9): the layer indices then match the published keys."""
    layers: list[nn.Module] = [nn.ReLU(True)] if lead_relu else []
    for _ in range(n):
        layers += [nn.Conv2d(c_in, c, 3, padding=dilation, dilation=dilation), nn.ReLU(True)]
        c_in = c
    layers.append(nn.BatchNorm2d(c))
    return nn.Sequential(*layers)


def _up(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c, 4, stride=2, padding=1))


def _short(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1))


class SIGGRAPH17Net(nn.Module):
    """The reference U-Net; `widths` (c1, c2, c3, c4) = (64, 128, 256, 512) in the published network."""

    guided = True                        # takes hints (colorfast.Colorizer.guided)

    def __init__(self, widths: tuple[int, int, int, int], out_channels: int, centers: torch.Tensor | None = None):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.model1 = _block(4, c1, 2)
        self.model2 = _block(c1, c2, 2)
        self.model3 = _block(c2, c3, 3)
        self.model4 = _block(c3, c4, 3)
        self.model5 = _block(c4, c4, 3, dilation=2)
        self.model6 = _block(c4, c4, 3, dilation=2)
        self.model7 = _block(c4, c4, 3)
        self.model8up, self.model3short8 = _up(c4, c3), _short(c3, c3)
        self.model8 = _block(c3, c3, 2, lead_relu=True)
        self.model9up, self.model2short9 = _up(c3, c2), _short(c2, c2)
        self.model9 = _block(c2, c2, 1, lead_relu=True)
        self.model10up, self.model1short10 = _up(c2, c2), _short(c1, c2)
        self.model10 = nn.Sequential(nn.ReLU(True), nn.Conv2d(c2, c2, 3, padding=1), nn.LeakyReLU(0.2))
        self.model_class = nn.Sequential(nn.Conv2d(c3, out_channels, 1))
        self.model_out = nn.Sequential(nn.Conv2d(c2, 2, 1), nn.Tanh())
        self.out_channels = out_channels
        if centers is not None:
            assert centers.shape == (out_channels, 2), (centers.shape, out_channels)
            self.register_buffer("centers", centers.float().clone())
        else:
            self.centers = None                        # no class targets: only the regression head is trained

    @property
    def head(self) -> str:
        """What the class head is: "classes" (logits over `centers`) or "ab" (none; the regression head is all)."""
        return "ab" if self.centers is None else "classes"

    def forward(self, L: torch.Tensor, hint_ab: torch.Tensor | None = None,
                hint_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if hint_ab is None:
            hint_ab = L.new_zeros(L.shape[0], 2, *L.shape[2:])
        if hint_mask is None:
            hint_mask = L.new_zeros(L.shape)
        x = torch.cat(((L - L_CENT) / L_NORM, hint_ab / AB_NORM, hint_mask), 1)
        conv1 = self.model1(x)
        conv2 = self.model2(conv1[:, :, ::2, ::2])          # the reference subsamples by striding, not pooling
        conv3 = self.model3(conv2[:, :, ::2, ::2])
        x = self.model4(conv3[:, :, ::2, ::2])              # 1/8
        x = self.model7(self.model6(self.model5(x)))
        conv8 = self.model8(self.model8up(x) + self.model3short8(conv3))          # 1/4
        conv9 = self.model9(self.model9up(conv8) + self.model2short9(conv2))      # 1/2
        conv10 = self.model10(self.model10up(conv9) + self.model1short10(conv1))  # 1/1
        return self.model_class(conv8), self.model_out(conv10)


@MODELS.register
def siggraph17(out_channels: int = 529, centers=None) -> SIGGRAPH17Net:
    """The published network: ~34 M parameters with Q = 529."""
    return SIGGRAPH17Net((64, 128, 256, 512), out_channels, centers)


@MODELS.register(name="siggraph17-tiny")
def siggraph17_tiny(out_channels: int = 529, centers=None) -> SIGGRAPH17Net:
    """Same layers at 1/8 of the width (~0.5 M parameters): CPU demos and tests."""
    return SIGGRAPH17Net((8, 16, 32, 64), out_channels, centers)


# ---- the published SIGGRAPH17 layout -----------------------------------------------------------------------
def is_released_layout(state: dict) -> bool:
    """The state dict of richzhang/colorization's SIGGRAPHGenerator (no `centers`)."""
    return all(k in state for k in ("model1.0.weight", "model1short10.0.weight", "model_class.0.weight",
                                    "model_out.0.weight"))


def from_released(state: dict) -> tuple[dict, torch.Tensor, str]:
    """A published-layout state dict -> (the same dict, bin centres (Q, 2), the registered model whose widths
    fit). Its classes are the 23x23 grid of colorization-pytorch (ab_quant 10, ab_max 110), in that order."""
    w = state["model_class.0.weight"]
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.shape[0] != GRID_SIDE ** 2:
        raise ValueError(f"model_class.0.weight has shape {tuple(getattr(w, 'shape', ()))}, expected "
                         f"({GRID_SIDE ** 2}, C, 1, 1): the reference's 23x23 ab grid")
    c1 = state["model1.0.weight"].shape[0]
    name = "siggraph17" if c1 == 64 else "siggraph17-tiny"     # load_trunk names any other mismatch
    return dict(state), grid_centers(), name
