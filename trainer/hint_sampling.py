"""Simulated user hints for training and validating SIGGRAPH17 (Zhang et al. 2017) from shards.

The reference (richzhang/colorization-pytorch, util.add_color_patches_rand_gt) gives every training image a
geometric number of hints: while rand() < 1 - p, one more square patch of side P (drawn from --sample_Ps, 1..9 px)
at (h, w) ~ clip(N((H - P + 1) / 2, (H - P + 1) / 4), 0, H - P), truncated to ints; the hint is the patch's mean
ab, painted over the patch (a later patch over an earlier one) with the mask set there. p = 0.125 in its hinted
training phases (scripts/train_siggraph.sh): 1/8 of the images get no hint, 7 hints on average.

Here the same, with two differences the shards impose or allow:
- The grid: the shards hold ab at 1/4 resolution (4x4 area means), so hints live on the 4-pixel grid. A patch
  of P px becomes ceil(P / 4) target cells (4, 8 or 12 px), its position is drawn as above over target cells,
  and its mean over those cells equals the mean of the full-resolution ab over its 4P x 4P pixels (the cells
  are area means). The hint planes are then repeated 4x to the network's input resolution.
- The device: everything is tensor ops on the batch's device with a generator seeded from (seed, step, rank),
  no Python loop over points and no value read back to the host. The geometric count is drawn as
  `max_points` Bernoulli trials per sample (point j exists when trials 0..j all continue: the first failure
  ends it), truncated where the tail has probability < 1e-6, and the reference's painting order (a later patch
  over an earlier one) is kept by taking, at each cell, the highest-numbered patch that covers it. A resumed run
  draws the same hints at the same step because the generator is reseeded from the step.

Validation (`sweep_hints`) follows the reference's "PSNR vs number of points" (test_sweep.py): exactly N
patches of 6 px (its sample_Ps = [6]; 2 cells here), drawn from a generator seeded by the sample's key, so
every validation of every run gives an image the same hints, and N hints are the first N of its 20.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F

from pipeline import contract

STRIDE = contract.TARGET_STRIDE
HINT_P = 0.125                           # train_siggraph.sh's --sample_p of its hinted phases
HINT_SIZES = (1, 2, 3, 4, 5, 6, 7, 8, 9)  # its --sample_Ps: patch sides in image pixels
SWEEP_POINTS = (0, 1, 2, 5, 10, 20)      # the reference curve's points up to 20
SWEEP_SIZE = 6                           # test_sweep.py's sample_Ps = [6]
TAIL = 1e-6                              # the geometric count is cut where its tail is this rare
MAX_POINTS = 256                         # ... and never beyond this many candidate points (p -> 0)


def grid_cells(sizes_px) -> tuple[int, ...]:
    """Patch sides in image pixels -> in target cells: each rounded up to the 4-pixel grid."""
    return tuple(max(1, math.ceil(int(s) / STRIDE)) for s in sizes_px)


def max_points(p: float) -> int:
    """Candidate points per sample for a geometric count with stop probability p: P(count >= n) = (1 - p)^n
    falls below TAIL at this n (0 when p = 1: never a hint)."""
    if p >= 1:
        return 0
    if p <= 0:
        return MAX_POINTS
    return min(MAX_POINTS, math.ceil(math.log(TAIL) / math.log(1 - p)))


def draw_points(B: int, M: int, t: int, cells: torch.Tensor, generator: torch.Generator):
    """M candidate patches per sample on a t x t target grid: (side, y, x), each (B, M) int64 in cells.
    cells (S,) int64: the sides to draw from, uniformly; positions ~ clip(N(span / 2, span / 4), 0, t - side)
    with span = t - side + 1, truncated to ints as the reference does."""
    dev = cells.device
    pick = (torch.rand(B, M, generator=generator, device=dev) * len(cells)).long().clamp_max(len(cells) - 1)
    side = cells[pick].clamp(max=t)                                              # a crop smaller than a patch
    span = (t - side + 1).float()
    z = torch.randn(B, M, 2, generator=generator, device=dev)
    yx = (span[..., None] / 2 + z * span[..., None] / 4).clamp(min=0)
    yx = torch.minimum(yx.floor(), (t - side)[..., None].float()).long()       # clip to 0..t - side, then int
    return side, yx[..., 0], yx[..., 1]


def geometric_active(B: int, M: int, p: float, generator: torch.Generator, device) -> torch.Tensor:
    """(B, M) bool: point j exists when the reference's `rand() < 1 - p` held for trials 0..j."""
    go = torch.rand(B, M, generator=generator, device=device) < 1 - p
    return go.long().cumprod(1).bool()


def paint(ab: torch.Tensor, active: torch.Tensor, side, y, x, sides: tuple[int, ...]):
    """Hint planes at target resolution: (B, 2, t, t) ab (the patch means, a later patch over an earlier one)
    and (B, 1, t, t) mask, 1 where some active patch lies. ab (B, 2, t, t) the stored targets."""
    B, _, t, _ = ab.shape
    M = active.shape[1]
    sides = tuple(min(s, t) for s in sides)                                       # as draw_points clamps them
    if M == 0:
        return torch.zeros(B, 2, t, t, device=ab.device), torch.zeros(B, 1, t, t, device=ab.device)
    means = _means(ab, sides, side, y, x)                                         # (B, 2, M)
    r = torch.arange(t, device=ab.device)
    in_y = (r >= y[..., None]) & (r < (y + side)[..., None])                      # (B, M, t)
    in_x = (r >= x[..., None]) & (r < (x + side)[..., None])
    cover = in_y[..., :, None] & in_x[..., None, :] & active[..., None, None]    # (B, M, t, t)
    order = torch.arange(1, M + 1, device=ab.device, dtype=torch.int32).view(1, M, 1, 1)
    last = torch.where(cover, order, 0).amax(1).long()                            # (B, t, t): 0 = no patch
    value = means.gather(2, (last - 1).clamp(min=0).flatten(1)[:, None].expand(-1, 2, -1)).view(B, 2, t, t)
    mask = (last > 0)[:, None].float()
    return value * mask, mask


def _means(ab, sides, side, y, x):
    """(B, 2, M) mean ab of each patch: one stride-1 average pool per distinct side (a handful, known on the host:
    no read-back to learn them), gathered at the patches' corners."""
    B, _, t, _ = ab.shape
    flat = (y * t + x)[:, None].expand(-1, 2, -1)                                 # (B, 2, M)
    out = torch.zeros(B, 2, y.shape[1], device=ab.device, dtype=torch.float32)
    for s in sorted(set(sides)):
        pooled = F.avg_pool2d(ab.float(), s, stride=1)                            # (B, 2, t - s + 1, t - s + 1)
        grid = F.pad(pooled, (0, s - 1, 0, s - 1))                                # back to (B, 2, t, t)
        out = torch.where((side == s)[:, None], grid.flatten(2).gather(2, flat), out)
    return out


def to_input(hint_ab: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Target-resolution planes -> the network's input resolution (each cell covers 4 x 4 pixels)."""
    up = lambda a: a.repeat_interleave(STRIDE, 2).repeat_interleave(STRIDE, 3)   # noqa: E731
    return up(hint_ab), up(mask)


class HintSampler:
    """Training hints: `sampler(ab, step)` -> (hint_ab (B, 2, H, W) ab units, hint_mask (B, 1, H, W)) from the
    batch's stored ab (B, 2, t, t) on its device, seeded by (seed, step, rank)."""

    def __init__(self, p: float = HINT_P, sizes_px=HINT_SIZES, seed: int = 0, rank: int = 0):
        self.p, self.seed, self.rank = p, seed, rank
        self.sides = grid_cells(sizes_px)
        self.M = max_points(p)
        self._cells = {}                                   # device -> (S,) int64 tensor of self.sides

    def generator(self, step: int, device) -> torch.Generator:
        seed = int(np.random.SeedSequence([self.seed, step, self.rank]).generate_state(1)[0])
        return torch.Generator(device=device).manual_seed(seed)     # host-side state: no device work

    def __call__(self, ab: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, t, _ = ab.shape
        dev = ab.device
        if dev not in self._cells:
            self._cells[dev] = torch.tensor(self.sides, dtype=torch.long, device=dev)
        g = self.generator(step, dev)
        side, y, x = draw_points(B, self.M, t, self._cells[dev], g)
        active = geometric_active(B, self.M, self.p, g, dev)
        return to_input(*paint(ab, active, side, y, x, self.sides))


def sweep_points(keys, t: int, points: int = max(SWEEP_POINTS), size_px: int = SWEEP_SIZE):
    """The validation hints' patches: (side, y, x) each (B, points) on the CPU, one seeded draw per key
    (crc32 of the key), so a sample's patches depend on nothing else."""
    cells = torch.tensor(grid_cells([size_px]), dtype=torch.long)
    drawn = [draw_points(1, points, t, cells, torch.Generator().manual_seed(zlib.crc32(k.encode()))) for k in keys]
    return tuple(torch.cat(parts) for parts in zip(*drawn))


def sweep_hints(ab: torch.Tensor, patches, n: int, size_px: int = SWEEP_SIZE):
    """Planes at input resolution for the first n of `patches` (from sweep_points) on ab (B, 2, t, t) (CPU)."""
    side, y, x = patches
    active = torch.arange(side.shape[1]) < n
    return to_input(*paint(ab, active.expand(side.shape[0], -1), side, y, x, grid_cells([size_px])))
