"""Simulated hints (trainer/hint_sampling.py) against colorization-pytorch's add_color_patches_rand_gt: the same
patches give the same planes, the count is geometric with its p, draws are seeded by step and rank, validation
hints are a fixed nested set per image, and nothing is read back to the host."""
import numpy as np
import pytest
import torch

from test_recipe import HOST_SYNC_OPS, _Record
from trainer.hint_sampling import (HINT_P, HintSampler, draw_points, geometric_active, grid_cells, max_points,
                                   paint, sweep_hints, sweep_points, to_input)


def _reference_paint(B_full, patches):
    """util.add_color_patches_rand_gt's painting loop (use_avg=True), on full-resolution ab in ab units:
    patches = per sample, in order, (P, h, w) in pixels. Returns (hint_B, mask_B + mask_cent)."""
    N, C, H, W = B_full.shape
    hint_B = torch.zeros_like(B_full)
    mask_B = torch.zeros(N, 1, H, W)
    for nn in range(N):
        for P, h, w in patches[nn]:
            hint_B[nn, :, h:h + P, w:w + P] = torch.mean(torch.mean(B_full[nn, :, h:h + P, w:w + P], dim=2,
                                                                    keepdim=True), dim=1, keepdim=True).view(1, C, 1, 1)
            mask_B[nn, :, h:h + P, w:w + P] = 1
    return hint_B, mask_B


def test_planes_equal_the_reference_loop_on_the_4_pixel_grid():
    """Stored ab are 4x4 area means; on an image whose ab is constant in each 4x4 block the reference's loop with
    patches of 4 * side px at (4y, 4x) gives exactly our planes (later patches painted over earlier ones)."""
    g = torch.Generator().manual_seed(0)
    B, t, M = 3, 12, 9
    ab = torch.randn(B, 2, t, t, generator=g) * 40
    sides_px = (1, 5, 9)                                  # -> 1, 2, 3 cells
    cells = torch.tensor(grid_cells(sides_px))
    side, y, x = draw_points(B, M, t, cells, g)
    active = torch.rand(B, M, generator=g) < 0.7
    hint, mask = to_input(*paint(ab, active, side, y, x, grid_cells(sides_px)))
    full = ab.repeat_interleave(4, 2).repeat_interleave(4, 3)
    patches = [[(4 * int(side[b, j]), 4 * int(y[b, j]), 4 * int(x[b, j])) for j in range(M) if active[b, j]]
               for b in range(B)]
    ref_hint, ref_mask = _reference_paint(full, patches)
    assert sum(map(len, patches)) > 10 and len({p[0] for ps in patches for p in ps}) == 3
    torch.testing.assert_close(mask, ref_mask)
    torch.testing.assert_close(hint, ref_hint, atol=1e-4, rtol=1e-5)


def test_patch_sizes_round_up_to_the_grid():
    assert grid_cells((1, 2, 3, 4, 5, 6, 7, 8, 9)) == (1, 1, 1, 1, 2, 2, 2, 2, 3)


def test_the_count_is_geometric_with_the_references_p():
    """P(no hint) = p and mean count (1 - p) / p, as `while rand() < 1 - p` gives; p = 1: never a hint."""
    B = 20000
    M = max_points(HINT_P)
    assert (1 - HINT_P) ** M < 1e-6 <= (1 - HINT_P) ** (M - 1)
    n = geometric_active(B, M, HINT_P, torch.Generator().manual_seed(3), "cpu").sum(1).float()
    assert (n == 0).float().mean().item() == pytest.approx(HINT_P, abs=0.01)
    assert n.mean().item() == pytest.approx((1 - HINT_P) / HINT_P, rel=0.04)
    # exactly geometric: each count k has probability (1 - p)^k p
    for k in (1, 3, 7):
        assert (n == k).float().mean().item() == pytest.approx((1 - HINT_P) ** k * HINT_P, abs=0.01)
    assert max_points(1.0) == 0
    hint, mask = HintSampler(p=1.0)(torch.randn(2, 2, 8, 8) * 30, step=0)
    assert mask.sum() == 0 and hint.abs().sum() == 0


def test_positions_follow_the_references_clipped_normal():
    """h = int(clip(N((t - P + 1) / 2, (t - P + 1) / 4), 0, t - P)) for a side of one cell on a 40-cell grid."""
    t = 40
    _, y, x = draw_points(4000, 4, t, torch.tensor([1]), torch.Generator().manual_seed(5))
    rng = np.random.default_rng(0)
    ref = np.clip(rng.normal(t / 2, t / 4, 16000), 0, t - 1).astype(int)
    for ours in (y, x):
        ours = ours.flatten().numpy()
        assert ours.min() >= 0 and ours.max() <= t - 1
        assert abs(ours.mean() - ref.mean()) < 0.4 and abs(ours.std() - ref.std()) < 0.4
        assert abs((ours == 0).mean() - (ref == 0).mean()) < 0.01                   # the clipped tail at 0


def test_training_hints_are_seeded_by_step_and_rank_and_reproduce():
    ab = torch.randn(8, 2, 10, 10, generator=torch.Generator().manual_seed(1)) * 40
    a = HintSampler(seed=4)(ab, step=17)
    assert all(torch.equal(u, v) for u, v in zip(a, HintSampler(seed=4)(ab, step=17)))   # a resumed run's draw
    for other in (HintSampler(seed=4)(ab, step=18), HintSampler(seed=5)(ab, step=17),
                  HintSampler(seed=4, rank=1)(ab, step=17)):
        assert not torch.equal(a[1], other[1])
    # hints are the image's own colours: each painted pixel holds the mean of the stored ab over its patch
    hint, mask = a
    assert mask.sum() > 0 and hint.abs().max() <= ab.abs().max() + 1e-4
    assert torch.all(hint[mask.expand_as(hint) == 0] == 0)


def test_validation_hints_are_fixed_per_image_and_nested():
    g = torch.Generator().manual_seed(2)
    ab = torch.randn(3, 2, 11, 11, generator=g) * 40
    keys = ["a.jpg", "b.jpg", "c.jpg"]
    pts = sweep_points(keys, 11)
    masks = {n: sweep_hints(ab, pts, n)[1] for n in (0, 1, 2, 5, 10, 20)}
    assert masks[0].sum() == 0
    for small, big in ((1, 2), (2, 5), (5, 10), (10, 20)):
        assert torch.all(masks[big] >= masks[small]) and torch.all(masks[big].sum((1, 2, 3)) > 0)
    # a 6 px patch is 2 cells (8 px): one hint covers 64 pixels
    assert masks[1].sum((1, 2, 3)).tolist() == [64.0] * 3
    # the same image gets the same hints whatever else is in the batch
    alone = sweep_hints(ab[1:2], sweep_points(keys[1:2], 11), 5)
    torch.testing.assert_close(alone[0], sweep_hints(ab, pts, 5)[0][1:2])


def test_drawing_hints_reads_nothing_back_to_the_host():
    ab = torch.randn(4, 2, 8, 8) * 30
    sampler = HintSampler(seed=0)
    with _Record() as rec:
        sampler(ab, step=3)
    assert {"randn", "cumprod", "gather", "amax"} <= rec.ops          # the recorder saw the draw
    assert not rec.ops & HOST_SYNC_OPS, rec.ops & HOST_SYNC_OPS
