"""Weight-free metrics for colorization: how close, how balanced, how colourful.

All functions take numpy arrays; nothing here knows about models or shards.

    ab        float (2, H, W), in ab units (roughly -110..110), channels first like the network's output
    rgb       uint8 (H, W, 3)

- AuC (Zhang et al. 2016, sec. 3.1): the share of pixels whose ab error (L2 distance in the ab plane) is
  within a threshold, swept over thresholds 0..150 and integrated, in %. We integrate the CDF exactly:
  for one pixel with error d, the area under its step CDF over [0, 150] is 150 - min(d, 150), so
  AuC = 100 * mean(1 - min(d, 150) / 150). A sweep in steps of 1 agrees to within 1/150 of a percent.
- Class-rebalanced AuC: the same average with each pixel weighted by 1 / prior(nearest bin of its
  ground-truth ab), the prior being the one of the shards the model was trained on. A gray prediction
  scores high on raw AuC (most real pixels are nearly gray) and low here (rare saturated pixels count).
- PSNR and SSIM on RGB (scikit-image), per image, then averaged over images.
- Colourfulness: Hasler & Suesstrunk 2003, the M(3) variant computed in the opponent space
  rg = R - G, yb = (R + G) / 2 - B on 8-bit RGB:  M = sqrt(sd_rg^2 + sd_yb^2) + 0.3 sqrt(mu_rg^2 + mu_yb^2)
  (standard deviations with ddof = 0). 0 for a gray image; the paper rates ~33 "moderately" and ~59
  "quite" colourful. The gap is predicted minus ground truth, so negative means duller than the truth.
- Mean chroma: mean sqrt(a^2 + b^2) over pixels, in ab units.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

AUC_MAX_THRESHOLD = 150.0        # ab units; Zhang's sweep runs 0..150
PSNR_CAP = 100.0                 # dB reported for an exact match (PSNR is infinite there)
L2_SCALE = 110.0                 # ab / L2_SCALE is the l2 head's output scale (trainer.models.AB_NORM)


# ---- per-pixel ab accuracy ----------------------------------------------------------------------------
def ab_error(pred_ab: np.ndarray, gt_ab: np.ndarray) -> np.ndarray:
    """(2, H, W), (2, H, W) -> (H, W) float64 Euclidean distance in the ab plane."""
    assert pred_ab.shape == gt_ab.shape and pred_ab.shape[0] == 2, (pred_ab.shape, gt_ab.shape)
    d = np.asarray(pred_ab, np.float64) - np.asarray(gt_ab, np.float64)
    return np.sqrt((d * d).sum(0))


def auc_scores(err: np.ndarray, max_threshold: float = AUC_MAX_THRESHOLD) -> np.ndarray:
    """Per-pixel contribution to the AuC, in 0..1: the normalised area under the pixel's step CDF."""
    return 1.0 - np.minimum(err, max_threshold) / max_threshold


def auc(err: np.ndarray, weights: np.ndarray | None = None, max_threshold: float = AUC_MAX_THRESHOLD) -> float:
    """AuC of the (optionally pixel-weighted) ab-error CDF over thresholds 0..max_threshold, in %."""
    s = auc_scores(np.asarray(err, np.float64), max_threshold)
    w = np.ones_like(s) if weights is None else np.asarray(weights, np.float64)
    return float(100.0 * (w * s).sum() / w.sum())


def error_cdf(err: np.ndarray, weights: np.ndarray | None = None,
              thresholds: np.ndarray = np.arange(0, AUC_MAX_THRESHOLD + 1)) -> np.ndarray:
    """(T,) share of (weighted) pixels with error <= each threshold, for plotting the curve."""
    err = np.asarray(err, np.float64).ravel()
    w = np.ones_like(err) if weights is None else np.asarray(weights, np.float64).ravel()
    order = np.argsort(err)
    cum = np.concatenate([[0.0], np.cumsum(w[order])]) / w.sum()
    return cum[np.searchsorted(err[order], thresholds, side="right")]


class Rebalancer:
    """Pixel weights 1 / prior(q) with q the ground-truth pixel's nearest ab bin.

    centers (Q, 2), prob (Q,) from the training shards' prior.npz. A test pixel whose nearest bin never
    occurred in training (prob 0) would get an infinite weight; it gets the weight of the rarest seen bin.
    loss_weights (Q,), optional: the prior's rebalancing weights, for the class-rebalanced CE."""

    def __init__(self, centers: np.ndarray, prob: np.ndarray, loss_weights: np.ndarray | None = None):
        prob = np.asarray(prob, np.float64)
        assert centers.shape == (len(prob), 2), (centers.shape, prob.shape)
        floor = prob[prob > 0].min()
        self.inv_prob = 1.0 / np.maximum(prob, floor)
        self.loss_weights = None if loss_weights is None else np.asarray(loss_weights, np.float64)
        self.tree = cKDTree(np.asarray(centers, np.float64))

    def nearest_bin(self, gt_ab: np.ndarray) -> np.ndarray:
        """(2, H, W) -> (H, W) int index of the nearest centre."""
        _, idx = self.tree.query(np.asarray(gt_ab, np.float64).reshape(2, -1).T)
        return idx.reshape(gt_ab.shape[1:])

    def weights(self, gt_ab: np.ndarray) -> np.ndarray:
        """(2, H, W) -> (H, W) float64 weights."""
        return self.inv_prob[self.nearest_bin(gt_ab)]


# ---- image-level metrics ------------------------------------------------------------------------------
def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk 2003, M(3): sigma_rgyb + 0.3 mu_rgyb on 8-bit RGB (H, W, 3)."""
    x = np.asarray(rgb, np.float64).reshape(-1, 3)
    R, G, B = x[:, 0], x[:, 1], x[:, 2]
    rg, yb = R - G, 0.5 * (R + G) - B
    sigma = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mu = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(sigma + 0.3 * mu)


def mean_chroma(ab: np.ndarray) -> float:
    """(2, H, W) -> mean sqrt(a^2 + b^2)."""
    ab = np.asarray(ab, np.float64)
    return float(np.sqrt((ab * ab).sum(0)).mean())


def psnr(gt_rgb: np.ndarray, pred_rgb: np.ndarray) -> float:
    if np.array_equal(gt_rgb, pred_rgb):
        return PSNR_CAP
    return float(min(peak_signal_noise_ratio(gt_rgb, pred_rgb, data_range=255), PSNR_CAP))


def ssim(gt_rgb: np.ndarray, pred_rgb: np.ndarray) -> float:
    """Mean SSIM over the three channels; the usual 7 px window, shrunk (odd, >= 3) for tiny images."""
    win = min(7, *gt_rgb.shape[:2])
    win -= 1 - win % 2
    if win < 3:
        return float("nan")                              # undefined below 3 x 3 pixels
    return float(structural_similarity(gt_rgb, pred_rgb, channel_axis=-1, data_range=255, win_size=win))


# ---- running totals over a test set -------------------------------------------------------------------
SUMS = ("images", "pixels", "auc_sum", "wauc_num", "wauc_den", "chroma_sum", "gt_chroma_sum", "l2_sum",
        "ce_pixels", "ce_sum", "ce_rebal_sum", "psnr_sum", "ssim_sum", "colourfulness_sum", "gt_colourfulness_sum")


@dataclass
class MetricTotals:
    """Accumulates one model's metrics over images; `summary()` gives the table row. The one scoring code of
    the project: `evaluate` and the validation inside `fit` both feed it (trainer/scoring.py).

    Pixel metrics (AuC, chroma, L2, CE) are pooled over all pixels; image metrics (PSNR, SSIM, colourfulness)
    are averaged over images, as usual in the literature. Everything is kept as plain sums (`SUMS`), so the
    totals of several processes add up (`vector`, `add_vector`) to those of one process over all images.
    - l2: 1/2 ||(pred - gt) / AB_NORM||^2 per pixel, the scale of the l2 training loss.
    - ce / ce_rebalanced (class models, when soft targets are known): the soft-target cross-entropy per
      pixel, unweighted and weighted by the rebalancing weight of the ground truth's nearest bin (the CE
      training loss). Both need the rebalancer's `loss_weights`."""
    rebalancer: "Rebalancer | None" = None
    per_image: list = field(default_factory=list)    # dicts: key, auc, psnr, ssim, colourfulness, gt_..., chroma

    def __post_init__(self):
        for k in SUMS:
            setattr(self, k, 0.0)

    def update(self, key: str, pred_ab: np.ndarray, gt_ab: np.ndarray, pred_rgb: np.ndarray, gt_rgb: np.ndarray,
               ce_pix: np.ndarray | None = None) -> dict:
        """pred_ab/gt_ab (2, h, w) at the resolution AuC is measured at; pred_rgb/gt_rgb (H, W, 3) uint8;
        ce_pix (h, w) the unweighted soft-target CE of each pixel, or None."""
        err = ab_error(pred_ab, gt_ab)
        s = auc_scores(err)
        self.images += 1
        self.pixels += s.size
        self.auc_sum += float(s.sum())
        self.l2_sum += float(0.5 * ((err / L2_SCALE) ** 2).sum())
        if self.rebalancer is not None:
            idx = self.rebalancer.nearest_bin(gt_ab)
            w = self.rebalancer.inv_prob[idx]
            self.wauc_num += float((w * s).sum())
            self.wauc_den += float(w.sum())
        if ce_pix is not None:
            ce_pix = np.asarray(ce_pix, np.float64)
            self.ce_pixels += ce_pix.size
            self.ce_sum += float(ce_pix.sum())
            if self.rebalancer is not None and self.rebalancer.loss_weights is not None:
                self.ce_rebal_sum += float((self.rebalancer.loss_weights[idx] * ce_pix).sum())
        pred_chroma, gt_chroma = mean_chroma(pred_ab), mean_chroma(gt_ab)
        self.chroma_sum += pred_chroma * s.size
        self.gt_chroma_sum += gt_chroma * s.size
        row = {"key": key, "auc": 100.0 * float(s.mean()), "psnr": psnr(gt_rgb, pred_rgb),
               "ssim": ssim(gt_rgb, pred_rgb), "colourfulness": colourfulness(pred_rgb),
               "gt_colourfulness": colourfulness(gt_rgb), "chroma": pred_chroma}
        for k in ("psnr", "ssim", "colourfulness", "gt_colourfulness"):
            setattr(self, f"{k}_sum", getattr(self, f"{k}_sum") + row[k])
        self.per_image.append(row)
        return row

    def vector(self) -> np.ndarray:
        """(len(SUMS),) float64: every sum, to be added across processes."""
        return np.array([getattr(self, k) for k in SUMS], np.float64)

    def set_vector(self, v: np.ndarray) -> None:
        for k, x in zip(SUMS, np.asarray(v, np.float64)):
            setattr(self, k, float(x))

    def summary(self) -> dict:
        assert self.images, "no images were evaluated"
        n = self.images
        M, M_gt = self.colourfulness_sum / n, self.gt_colourfulness_sum / n
        ce = self.ce_sum / self.ce_pixels if self.ce_pixels else None
        rebal_ce = (self.ce_pixels and self.rebalancer is not None and self.rebalancer.loss_weights is not None)
        return {
            "images": int(n),
            "auc": 100.0 * self.auc_sum / self.pixels,
            "auc_rebalanced": 100.0 * self.wauc_num / self.wauc_den if self.wauc_den else None,
            "psnr": self.psnr_sum / n,
            "ssim": self.ssim_sum / n,
            "colourfulness": M,
            "gt_colourfulness": M_gt,
            "colourfulness_gap": M - M_gt,
            "chroma": self.chroma_sum / self.pixels,
            "gt_chroma": self.gt_chroma_sum / self.pixels,
            "l2": self.l2_sum / self.pixels,
            "ce": ce,
            "ce_rebalanced": self.ce_rebal_sum / self.ce_pixels if rebal_ce else None,
        }


COLUMNS = (  # (key in summary, header, format) for the Markdown / HTML tables
    ("auc", "AuC %", "{:.2f}"),
    ("auc_rebalanced", "rebal. AuC %", "{:.2f}"),
    ("psnr", "PSNR dB", "{:.2f}"),
    ("ssim", "SSIM", "{:.4f}"),
    ("colourfulness", "colourfulness", "{:.2f}"),
    ("gt_colourfulness", "GT colourfulness", "{:.2f}"),
    ("colourfulness_gap", "gap (pred - GT)", "{:+.2f}"),
    ("chroma", "mean chroma", "{:.2f}"),
    ("l2", "L2", "{:.4f}"),
    ("ce", "CE", "{:.3f}"),
    ("ce_rebalanced", "rebal. CE", "{:.3f}"),
)


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """{name: summary} -> (headers, rows of formatted cells); a missing value shows as 'n/a'."""
    headers = ["model", "images"] + [h for _, h, _ in COLUMNS]
    rows = []
    for name, s in results.items():
        cells = [name, str(s["images"])]
        cells += ["n/a" if s.get(k) is None else fmt.format(s[k]) for k, _, fmt in COLUMNS]
        rows.append(cells)
    return headers, rows


def markdown_table(results: dict) -> str:
    headers, rows = table_rows(results)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
