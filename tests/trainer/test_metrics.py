"""Metrics against values computed by hand on tiny images."""
import numpy as np
import pytest

from trainer import metrics


def test_perfect_prediction_scores_auc_100_and_capped_psnr():
    rng = np.random.default_rng(0)
    ab = rng.uniform(-60, 60, (2, 5, 7))
    assert metrics.auc(metrics.ab_error(ab, ab)) == pytest.approx(100.0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    assert metrics.psnr(rgb, rgb) == metrics.PSNR_CAP
    assert metrics.ssim(rgb, rgb) == pytest.approx(1.0)


def test_auc_of_constant_errors_by_hand():
    # error 30 everywhere: the CDF is 0 below 30 and 1 from 30 to 150 -> area 120 / 150 = 80 %
    gt = np.zeros((2, 4, 4))
    pred = np.zeros((2, 4, 4))
    pred[0] = 18.0
    pred[1] = 24.0                                  # sqrt(18^2 + 24^2) = 30
    assert metrics.auc(metrics.ab_error(pred, gt)) == pytest.approx(80.0)
    # half the pixels exact, half off by 200 (beyond the sweep): (100 + 0) / 2
    err = np.array([[0.0, 200.0], [0.0, 200.0]])
    assert metrics.auc(err) == pytest.approx(50.0)
    # weighted: the exact pixels weigh 3, the wrong ones 1 -> 75 %
    assert metrics.auc(err, weights=np.array([[3, 1], [3, 1]])) == pytest.approx(75.0)


def test_closed_form_auc_matches_a_threshold_sweep():
    err = np.random.default_rng(1).uniform(0, 200, 1000)
    t = np.arange(0, 151)
    cdf = metrics.error_cdf(err, thresholds=t)
    swept = 100 * np.trapezoid(cdf, t) / 150
    assert metrics.auc(err) == pytest.approx(swept, abs=100 / 150)


def test_colourfulness_of_constructed_images():
    gray = np.full((4, 4, 3), 128, np.uint8)
    assert metrics.colourfulness(gray) == 0.0
    # half pure red, half black: rg = 255 | 0 (mean 127.5, sd 127.5), yb = 127.5 | 0 (mean 63.75, sd 63.75)
    img = np.zeros((2, 2, 3), np.uint8)
    img[0, :, 0] = 255
    s = np.hypot(127.5, 63.75)
    assert metrics.colourfulness(img) == pytest.approx(s + 0.3 * s)
    # a flat colour has no spread, only the 0.3 mean term: rg = 0, yb = 100 - 0 -> 30
    flat = np.zeros((3, 3, 3), np.uint8)
    flat[..., :2] = 100
    assert metrics.colourfulness(flat) == pytest.approx(30.0)


def test_mean_chroma():
    ab = np.zeros((2, 1, 2))
    ab[:, 0, 0] = (3, 4)                             # chroma 5 and 0
    assert metrics.mean_chroma(ab) == pytest.approx(2.5)


def test_rebalancer_picks_the_nearest_bin_and_floors_unseen_bins():
    centers = np.array([[0, 0], [50, 50], [-50, 0]], np.float32)
    prob = np.array([0.8, 0.2, 0.0])
    r = metrics.Rebalancer(centers, prob)
    gt = np.array([[[2.0, 48.0, -45.0]], [[-3.0, 51.0, 4.0]]])      # (2, 1, 3)
    assert r.nearest_bin(gt).tolist() == [[0, 1, 2]]
    assert r.weights(gt) == pytest.approx(np.array([[1 / 0.8, 1 / 0.2, 1 / 0.2]]))


def test_gray_baseline_shows_high_raw_and_low_rebalanced_auc():
    # 90 % of ground-truth pixels near gray, 10 % saturated, like real photos; the prior is their histogram
    gt = np.zeros((2, 10, 10))
    gt[:, :, :] = 3.0
    gt[:, 0, :] = 60.0
    centers = np.array([[0, 0], [60, 60]], np.float32)
    r = metrics.Rebalancer(centers, np.array([0.9, 0.1]))
    gray = np.zeros_like(gt)
    totals = metrics.MetricTotals(rebalancer=r)
    rgb = np.full((10, 10, 3), 100, np.uint8)
    totals.update("x", gray, gt, rgb, rgb)
    s = totals.summary()
    d_near, d_far = np.hypot(3, 3), np.hypot(60, 60)
    raw = 0.9 * (1 - d_near / 150) + 0.1 * (1 - d_far / 150)
    balanced = 0.5 * (1 - d_near / 150) + 0.5 * (1 - d_far / 150)    # each class counts equally
    assert s["auc"] == pytest.approx(100 * raw)
    assert s["auc_rebalanced"] == pytest.approx(100 * balanced)
    assert s["auc"] > 90 and s["auc"] - s["auc_rebalanced"] > 15
    assert s["chroma"] == 0.0 and s["gt_chroma"] == pytest.approx(0.9 * np.hypot(3, 3) + 0.1 * d_far)


def test_summary_averages_images_and_reports_the_gap():
    totals = metrics.MetricTotals()
    red = np.zeros((4, 4, 3), np.uint8)
    red[:2, :, 0] = 255
    gray = np.full((4, 4, 3), 40, np.uint8)
    ab = np.zeros((2, 2, 2))
    totals.update("a", ab, ab, gray, red)
    totals.update("b", ab, ab, red, red)
    s = totals.summary()
    M = metrics.colourfulness(red)
    assert s["images"] == 2 and s["auc_rebalanced"] is None
    assert s["colourfulness"] == pytest.approx(M / 2) and s["gt_colourfulness"] == pytest.approx(M)
    assert s["colourfulness_gap"] == pytest.approx(-M / 2)
    table = metrics.markdown_table({"gray": s})
    assert table.splitlines()[2].startswith("| gray | 2 |") and "n/a" in table


def _two_images(seed=0, shape=(32, 40, 3)):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, shape, dtype=np.uint8)
    noisy = np.clip(gt.astype(np.int64) + rng.integers(-40, 41, shape), 0, 255).astype(np.uint8)
    return gt, noisy


def test_psnr_of_different_images_is_10_log10_of_255_squared_over_mse():
    gt, pred = _two_images()
    mse = np.mean((gt.astype(np.float64) - pred) ** 2)
    assert metrics.psnr(gt, pred) == pytest.approx(10 * np.log10(255.0 ** 2 / mse), rel=1e-9)
    # a constant offset of 5 grey levels: mse 25 -> 10 log10(255^2 / 25) = 34.15 dB
    flat = np.full((8, 8, 3), 100, np.uint8)
    assert metrics.psnr(flat, flat + 5) == pytest.approx(10 * np.log10(255.0 ** 2 / 25), rel=1e-9)


def test_ssim_of_different_images_uses_a_7_pixel_window_over_0_255():
    """Per-channel SSIM (skimage, uniform 7 x 7 window, data range 255), averaged over the 3 channels."""
    from skimage.metrics import structural_similarity
    gt, pred = _two_images(1)
    per_channel = [structural_similarity(gt[..., c], pred[..., c], win_size=7, data_range=255.0) for c in range(3)]
    got = metrics.ssim(gt, pred)
    assert got == pytest.approx(np.mean(per_channel), rel=1e-9) and 0.2 < got < 0.99
    # a tiny image shrinks the window to its (odd) side: 5 x 6 -> 5
    small_gt, small_pred = _two_images(2, (5, 6, 3))
    ref = np.mean([structural_similarity(small_gt[..., c], small_pred[..., c], win_size=5, data_range=255.0)
                   for c in range(3)])
    assert metrics.ssim(small_gt, small_pred) == pytest.approx(ref, rel=1e-9)
