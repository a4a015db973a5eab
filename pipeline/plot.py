"""`cli.py prior-plot`: the class prior of a shard folder drawn on the ab plane (a right, b up).

Three panels over the in-gamut bins: the colour of each bin at L = 50 (to read the other two), the empirical
distribution of nearest bins in log10 scale (training split, before smoothing; bins never hit are hatched
grey), and the rebalancing weights, which are high exactly where the data is rare.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.bins import GRID
from pipeline.contract import Prior

EXTENT = 120                     # the plane shown: a, b in [-EXTENT, EXTENT]


def _grid(centers: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values of the bins -> an image of the ab plane, rows = b (top = +b), columns = a; NaN off-gamut."""
    n = int(2 * EXTENT // GRID) + 1
    img = np.full((n, n) + values.shape[1:], np.nan)
    ia = np.rint((centers[:, 0] + EXTENT) / GRID).astype(int)
    ib = np.rint((EXTENT - centers[:, 1]) / GRID).astype(int)
    img[ib, ia] = values
    return img


def plot_prior(prior: Prior, out, title: str = "") -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.images import lab_to_rgb

    c = prior.centers.astype(np.float64)
    lab = np.concatenate([np.full((len(c), 1), 50.0), c], axis=1).astype(np.float32)[None]    # (1, Q, 3)
    colours = lab_to_rgb(lab)[0] / 255.0
    total = prior.counts.sum()
    empirical = np.where(prior.counts > 0, np.log10(np.maximum(prior.counts, 1) / max(total, 1)), np.nan)
    ext = (-EXTENT - 5, EXTENT + 5, -EXTENT - 5, EXTENT + 5)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), constrained_layout=True)
    rgba = np.nan_to_num(_grid(c, np.concatenate([colours, np.ones((len(c), 1))], 1)), nan=1.0)
    axes[0].imshow(rgba, extent=ext)
    axes[0].set_title(f"{prior.Q} in-gamut bins (colour at L = 50)")
    never = _grid(c, np.where(prior.counts == 0, 1.0, np.nan))
    axes[1].imshow(never, extent=ext, cmap="Greys", vmin=0, vmax=4)
    im = axes[1].imshow(_grid(c, empirical), extent=ext, cmap="viridis")
    fig.colorbar(im, ax=axes[1], label="log10 p (empirical)")
    axes[1].set_title(f"empirical distribution, {total:,} training pixels\n(grey: bins never nearest)")
    im = axes[2].imshow(_grid(c, prior.weights), extent=ext, cmap="magma")
    fig.colorbar(im, ax=axes[2], label="weight")
    axes[2].set_title(f"rebalancing weights (lam = {prior.lam:g}, sigma = {prior.sigma:g})\n"
                      f"range {prior.weights.min():.2f} .. {prior.weights.max():.2f}")
    for ax in axes:
        ax.set_xlabel("a")
        ax.set_ylabel("b")
        ax.grid(alpha=0.2)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
