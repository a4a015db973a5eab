"""The empirical class prior over the ab bins and its rebalancing weights (DESIGN.md, "The recipe").

    counts  exact int64 histogram of each training target pixel's nearest bin (merged over shards)
    prob    counts smoothed by a Gaussian of `sigma` ab units over the bin centres, renormalised to sum 1
    weights w = ((1 - lam) prob + lam / Q)^-1, scaled so that sum(prob * w) = 1

Smoothing over the bin centres is the same as smoothing the histogram on the 10-grid and keeping the
in-gamut cells. A pixel's CE weight is w of its nearest bin; with lam = 1 every weight is 1.
"""
from __future__ import annotations

import numpy as np

from pipeline.contract import Prior, rebalancing_weights, smoothed_prior

# Both formulas are part of the shard contract, which verification recomputes: one implementation each, there.
smooth = smoothed_prior                  # counts (Q,) -> prob (Q,), Gaussian-smoothed over the bin centres
rebalance = rebalancing_weights          # prob (Q,) -> weights (Q,)


def build_prior(counts: np.ndarray, centers: np.ndarray, sigma: float, lam: float) -> Prior:
    counts = np.asarray(counts, np.int64)
    prob = smooth(counts, centers, sigma)
    return Prior(centers=np.asarray(centers, np.float32), counts=counts, prob=prob,
                 weights=rebalance(prob, lam), lam=float(lam), sigma=float(sigma))
