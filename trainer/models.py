"""ECCV16 colorization network (Zhang, Isola, Efros 2016) and a narrow variant for CPU demos.

Layer for layer the generator of richzhang/colorization (colorizers/eccv16.py), so a state dict saved from
the released PyTorch model loads by name: blocks `model1` .. `model8` (conv, ReLU, ..., BatchNorm), the last
conv of `model8` being the 1x1 classifier. The released file also holds `model_out`, a bias-free 1x1 conv
(2, 313, 1, 1) that maps class probabilities to ab / 110: its columns * 110 are the bin centres, which is
how `from_released` recovers them. Here the centres live in a buffer `centers` (Q, 2) instead, so a
checkpoint always carries the bins its logits refer to.

    input   L* (B, 1, H, W) float in 0..100, normalised inside as (L - 50) / 100; H, W multiples of 8
    output  (B, C, H/4, W/4): C = Q logits for class losses, C = 2 for l2 (ab / AB_NORM)
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.registry import Registry

L_CENT, L_NORM, AB_NORM = 50.0, 100.0, 110.0     # BaseColor constants of the released model
MODELS = Registry("model")

# (convs, dilation, stride of the last conv) of model1..model7; each block ends in a BatchNorm.
# Three stride-2 blocks take the side to 1/8; model8's transposed conv brings it back to 1/4.
_BLOCKS = ((2, 1, 2), (2, 1, 2), (3, 1, 2), (3, 1, 1), (3, 2, 1), (3, 2, 1), (3, 1, 1))


class ColorNet(nn.Module):
    """8 conv blocks + transposed conv up to 1/4 resolution + 1x1 head; `widths` scales blocks 1..8."""

    def __init__(self, widths: tuple[int, ...], out_channels: int, centers: torch.Tensor | None = None):
        super().__init__()
        assert len(widths) == 8, widths
        c_in = 1
        for b, ((n, dil, stride), c) in enumerate(zip(_BLOCKS, widths[:7]), start=1):
            layers: list[nn.Module] = []
            for i in range(n):
                s = stride if i == n - 1 else 1
                layers += [nn.Conv2d(c_in, c, 3, stride=s, padding=dil, dilation=dil), nn.ReLU(True)]
                c_in = c
            layers.append(nn.BatchNorm2d(c))
            setattr(self, f"model{b}", nn.Sequential(*layers))
        c8 = widths[7]
        self.model8 = nn.Sequential(                   # 1/8 -> 1/4 resolution, then the classifier/regressor
            nn.ConvTranspose2d(c_in, c8, 4, stride=2, padding=1), nn.ReLU(True),
            nn.Conv2d(c8, c8, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(c8, c8, 3, padding=1), nn.ReLU(True),
            nn.Conv2d(c8, out_channels, 1))
        self.out_channels = out_channels
        if centers is not None:
            assert centers.shape == (out_channels, 2), (centers.shape, out_channels)
            self.register_buffer("centers", centers.float().clone())
        else:
            self.centers = None                        # l2 head: the output is ab / AB_NORM

    @property
    def head(self) -> str:
        return "ab" if self.centers is None else "classes"

    def forward(self, L: torch.Tensor) -> torch.Tensor:
        x = (L - L_CENT) / L_NORM                      # (B, 1, H, W)
        for b in range(1, 9):
            x = getattr(self, f"model{b}")(x)          # model3 ends at H/8; model8 returns to H/4
        return x                                       # (B, C, H/4, W/4)


@MODELS.register
def eccv16(out_channels: int = 313, centers=None) -> ColorNet:
    """The published network: ~32.2 M parameters with Q = 313."""
    return ColorNet((64, 128, 256, 512, 512, 512, 512, 256), out_channels, centers)


@MODELS.register
def tiny(out_channels: int = 313, centers=None) -> ColorNet:
    """Same blocks, strides and dilations at 1/8 of the width (~0.5 M parameters): CPU demos and tests."""
    return ColorNet((8, 16, 32, 64, 64, 64, 64, 32), out_channels, centers)


def create_model(name: str, out_channels: int, centers=None) -> nn.Module:
    """ColorNet (eccv16, tiny) or trainer.siggraph17.SIGGRAPH17Net (siggraph17, siggraph17-tiny), by name."""
    return MODELS.build(name, out_channels=out_channels, centers=centers)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- the released ECCV16 layout ---------------------------------------------------------------------------
def is_released_layout(state: dict) -> bool:
    return "model_out.weight" in state and "model1.0.weight" in state


def from_released(state: dict) -> tuple[dict, torch.Tensor]:
    """Split a released-layout state dict into (our state dict without `centers`, centres (Q, 2) in ab units).
    model_out.weight (2, Q, 1, 1) maps probabilities to ab / 110, so its columns * 110 are the centres."""
    w = state["model_out.weight"]
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.shape[0] != 2 or w.shape[2:] != (1, 1):
        raise ValueError(f"model_out.weight has shape {tuple(getattr(w, 'shape', ()))}, expected (2, Q, 1, 1)")
    centers = w[:, :, 0, 0].t().float() * AB_NORM
    rest = {k: v for k, v in state.items() if not k.startswith("model_out.")}
    return rest, centers


def load_trunk(model: ColorNet, state: dict, skip_head: bool = False) -> None:
    """Load conv/BN weights by name, refusing any mismatch except BN counters absent from older files and,
    with skip_head, the final 1x1 conv (fine-tuning the released trunk with an l2 head)."""
    head = f"model8.{len(model.model8) - 1}."
    own = {k: v for k, v in model.state_dict().items() if k != "centers"}
    if skip_head:
        own = {k: v for k, v in own.items() if not k.startswith(head)}
        state = {k: v for k, v in state.items() if not k.startswith(head)}
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"state dict entries {not_tensors[:4]} are not tensors")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own and k != "centers"]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise ValueError(f"state dict does not fit this model: missing {missing[:4]}, unexpected {unexpected[:4]}, "
                         f"wrong shapes {wrong[:4]}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


# The SIGGRAPH17 networks register themselves in MODELS; imported last because trainer.siggraph17 needs MODELS.
from trainer import siggraph17 as _siggraph17  # noqa: E402,F401
