"""Scoring a network on held-out samples: the one code path behind `evaluate` and the validation inside `fit`.

Both feed the same `metrics.MetricTotals` through `score_samples`, so a validation row written during
training equals `evaluate --data` on the same samples and checkpoint. A sample from shards is a centre crop
(side `crop`, 0: the stored size) of the stored L and its 1/4-resolution targets; the network sees L, AuC,
chroma, L2 and CE are measured at target resolution, colourfulness on RGB rebuilt from L and bicubically
upsampled ab (prediction and ground truth alike: the shards hold no full-resolution ab).

A predictor is a name, a `forward` (L (B, 1, H, W) float L* on the CPU -> the head's raw output
(B, C, H/4, W/4) float32 on the CPU) and the bin centres of its logits (None: an l2 head); `forward` None
is the gray baseline (ab = 0). A predictor `with_samples` is called forward(L, samples): a guided network
whose hints are drawn from each sample's own ab (trainer.validate, the PSNR-vs-hints sweep).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import cv2
import numpy as np
import torch

from pipeline import contract
from pipeline.gamut import lab_to_rgb_in_gamut
from trainer.decode import decode
from trainer.losses import Targets, soft_ce_pixels

GRAY = "gray (ab = 0)"


@dataclass
class Sample:
    key: str
    L: np.ndarray                    # (S, S) float32, L* 0..100: what the network sees
    gt_ab: np.ndarray                # (2, s, s) float32: ground truth at the resolution AuC is measured at
    gt_rgb: np.ndarray               # (S, S, 3) uint8
    nn_idx: np.ndarray | None = None  # (K, s, s) int: soft-target bins in the folder's bin order (shards only)
    nn_w: np.ndarray | None = None   # (K, s, s) float32


@dataclass
class Predictor:
    name: str
    forward: Callable | None         # None: the gray baseline
    centers: torch.Tensor | None = None
    temperature: float | None = None  # annealed-mean temperature; None: score_samples' own
    interpolation: int = cv2.INTER_CUBIC   # how its ab is upsampled to the image (released weights: bilinear)
    with_samples: bool = False       # forward(x, batch) also gets the batch's Samples (hints drawn from their ab)


def upsample_ab(ab: np.ndarray, side: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """(2, s, s) -> (2, side, side), bicubic unless told (a model's own mode: Colorizer.interpolation)."""
    return cv2.resize(ab.transpose(1, 2, 0), (side, side), interpolation=interpolation).transpose(2, 0, 1)


def to_rgb(L: np.ndarray, ab_full: np.ndarray) -> np.ndarray:
    """L (S, S), ab (2, S, S) -> (S, S, 3) uint8, chroma pulled into gamut so L is kept."""
    return lab_to_rgb_in_gamut(L, np.ascontiguousarray(ab_full.transpose(1, 2, 0), dtype=np.float32))


def shard_samples(folder, split: str | None = "test", limit: int = 0, crop: int = 0, rank: int = 0,
                  world_size: int = 1) -> Iterable[Sample]:
    """Samples of one split of a shard folder (None: every shard), in manifest order: the first `limit` (0: all),
    of which this rank takes every world_size-th. `crop` > 0 takes the centre crop of that side (a multiple of
    4, so the targets stay aligned) instead of the stored square."""
    n = 0
    for path in contract.shard_paths(folder, split):
        with contract.open_shard(path) as shard:
            keys = shard.keys()
            for i in range(len(shard)):
                if limit and n >= limit:
                    return
                n += 1
                if (n - 1) % world_size != rank:
                    continue
                S = shard.L.shape[-1]
                c = crop or S
                o = (S - c) // 2 // contract.TARGET_STRIDE * contract.TARGET_STRIDE
                t, to = c // contract.TARGET_STRIDE, o // contract.TARGET_STRIDE
                L = contract.uint8_to_l(shard.L[i][o:o + c, o:o + c])
                gt = shard.ab[i][:, to:to + t, to:to + t].astype(np.float32)
                yield Sample(keys[i], L, gt, to_rgb(L, upsample_ab(gt, c)),
                             shard.nn_idx[i][:, to:to + t, to:to + t].astype(np.int64),
                             shard.nn_w[i][:, to:to + t, to:to + t].astype(np.float32))


def count_samples(folder, split: str | None, limit: int = 0) -> int:
    n = sum(s["count"] for s in contract.read_manifest(folder)["shards"] if split is None or s["split"] == split)
    return min(n, limit) if limit else n


def map_bins(model_centers: np.ndarray, folder_centers: np.ndarray) -> torch.Tensor | None:
    """(Q_folder,) index of each of a shard folder's bins among a model's bins, or None when they are the same
    list. Raises ValueError when some folder bin is not among the model's (its targets cannot be scored)."""
    mine, theirs = np.asarray(model_centers, np.float64), np.asarray(folder_centers, np.float64)
    if mine.shape == theirs.shape and np.allclose(mine, theirs, atol=1e-3):
        return None
    d = np.abs(theirs[:, None, :] - mine[None]).max(-1)                     # (Q_folder, Q_model)
    missing = np.flatnonzero(d.min(1) > 1e-3)
    if len(missing):
        raise ValueError(f"{len(missing)} shard bins (e.g. ab {theirs[missing[0]].tolist()}) are not among "
                         f"the model's {len(mine)} bins; targets cannot be mapped onto its classifier")
    return torch.from_numpy(d.argmin(1)).long()


def _ce_pixels(raw: torch.Tensor, batch: list[Sample], remap: torch.Tensor | None) -> np.ndarray:
    """Unweighted soft-target CE per pixel (B, s, s) of class logits against the samples' stored targets."""
    idx = torch.from_numpy(np.stack([s.nn_idx for s in batch]))
    idx = idx if remap is None else remap[idx]
    nn_w = torch.from_numpy(np.stack([s.nn_w for s in batch]))
    tg = Targets(ab=None, nn_idx=idx, nn_w=nn_w, w=None)
    return soft_ce_pixels(raw, tg).double().numpy()


@torch.no_grad()
def score_samples(predictors: list[Predictor], totals: dict, samples: Iterable[Sample], batch_size: int,
                  temperature: float, folder_centers: np.ndarray | None = None, progress=None) -> None:
    """Run every predictor over the samples and add each to totals[name] (metrics.MetricTotals).
    folder_centers (Q, 2): the bins of the samples' nn_idx, so class models get CE against the stored
    targets (a model whose bins do not cover them gets none); None: no CE."""
    remaps = {}
    for p in predictors:
        if p.forward is None or p.centers is None or folder_centers is None:
            continue
        try:
            remaps[p.name] = map_bins(p.centers.cpu().numpy(), folder_centers)
        except ValueError:
            pass                                     # CE n/a for this model on these shards

    def flush(batch):
        side = batch[0].L.shape[0]
        x = torch.from_numpy(np.stack([s.L for s in batch]))[:, None]              # (B, 1, S, S)
        for p in predictors:
            if p.forward is None:
                ab = np.zeros((len(batch), 2, side // 4, side // 4), np.float32)
                ce = None
            else:
                raw = p.forward(x, batch) if p.with_samples else p.forward(x)
                t = temperature if p.temperature is None else p.temperature
                ab = decode(raw, p.centers, t).float().numpy()                       # (B, 2, S/4, S/4)
                ce = (_ce_pixels(raw, batch, remaps[p.name]) if p.name in remaps and batch[0].nn_idx is not None
                      else None)
            for i, s in enumerate(batch):
                full = upsample_ab(ab[i], side, p.interpolation)
                at_gt = ab[i] if s.gt_ab.shape[1] == ab.shape[2] else full if s.gt_ab.shape[1] == side else \
                    upsample_ab(ab[i], s.gt_ab.shape[1], cv2.INTER_AREA)    # a full-size ab (SIGGRAPH17) vs 1/4 targets
                totals[p.name].update(s.key, at_gt, s.gt_ab, to_rgb(s.L, full), s.gt_rgb,
                                      None if ce is None else ce[i])
        if progress is not None:
            progress(len(batch))

    batch = []
    for s in samples:
        batch.append(s)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
