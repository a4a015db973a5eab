import numpy as np
import pytest

from pipeline.bins import in_gamut_centers
from pipeline.prior import build_prior, rebalance, smooth


@pytest.fixture(scope="module")
def centers():
    return in_gamut_centers()


def _skewed_counts(centers, seed=0):
    rng = np.random.default_rng(seed)
    chroma = np.hypot(centers[:, 0], centers[:, 1])
    return rng.poisson(1e6 * np.exp(-chroma / 15)).astype(np.int64)       # greyish colours dominate, as in photos


def test_prob_and_weights_are_normalised(centers):
    p = build_prior(_skewed_counts(centers), centers, sigma=5.0, lam=0.5)
    assert abs(p.prob.sum() - 1) < 1e-6
    assert abs((p.prob * p.weights).sum() - 1) < 1e-6
    assert p.counts.dtype == np.int64 and np.array_equal(p.counts, _skewed_counts(centers))
    rare, common = np.argmin(p.prob), np.argmax(p.prob)
    assert p.weights[rare] > p.weights[common]                             # rare colours weigh more
    ref = 1 / (0.5 * p.prob + 0.5 / len(centers))
    np.testing.assert_allclose(p.weights, ref / (p.prob * ref).sum(), rtol=1e-12)


def test_smoothing_spreads_mass_to_neighbouring_bins(centers):
    counts = np.zeros(len(centers), np.int64)
    i = int(np.argmin(np.hypot(centers[:, 0], centers[:, 1])))            # the (0, 0) bin
    counts[i] = 1000
    prob = smooth(counts, centers, 5.0)
    d = np.hypot(*(centers - centers[i]).T)
    assert prob[i] == prob.max() and np.all(prob[d == 10] > 0.05) and prob[d > 40].max() < 1e-6
    # exp(-10^2 / (2 * 5^2)) = exp(-2) relative weight of each of the 4 neighbours at distance 10
    assert prob[d == 10][0] / prob[i] == pytest.approx(np.exp(-2.0))


def test_edge_cases(centers):
    assert np.allclose(rebalance(np.full(4, .25), 1.0), 1.0)              # lam = 1: all weights 1
    p = build_prior(np.zeros(len(centers), np.int64), centers, 5.0, 0.5)  # no training pixels: uniform
    assert np.allclose(p.prob, 1 / len(centers)) and np.allclose(p.weights, 1.0)
    with pytest.raises(ValueError, match="lam"):
        rebalance(np.full(4, .25), 1.5)


@pytest.mark.parametrize("lam", [0.1, 0.8])
def test_lambda_is_the_share_of_the_uniform_distribution_at_any_value(centers, lam):
    """w = ((1 - lam) p + lam / Q)^-1: lam = 0.5 cannot tell lam from 1 - lam, a user's --lam can."""
    p = build_prior(_skewed_counts(centers, seed=1), centers, sigma=5.0, lam=lam)
    Q = len(centers)
    ref = np.array([1.0 / ((1.0 - lam) * pq + lam / Q) for pq in p.prob])
    np.testing.assert_allclose(p.weights, ref / (p.prob * ref).sum(), rtol=1e-12)
    # more lam, flatter weights: the rarest bin's weight relative to the commonest shrinks
    ratio = lambda pr: pr.weights.max() / pr.weights.min()                      # noqa: E731
    assert ratio(build_prior(p.counts, centers, 5.0, 0.8)) < ratio(build_prior(p.counts, centers, 5.0, 0.1))
