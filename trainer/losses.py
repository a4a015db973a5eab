"""Training losses over precomputed soft targets, chosen by name from LOSSES.

Every loss takes the network output and a `Targets` bundle at target resolution (t = crop / 4):
    out     (B, Q, t, t) logits for class losses, (B, 2, t, t) ab / AB_NORM for l2
    ab      (B, 2, t, t) float, ground-truth ab in ab units
    nn_idx  (B, K, t, t) int64, indices of each pixel's K nearest bins in the model's bin order
    nn_w    (B, K, t, t) float, soft-encoding weights, summing to 1 over K
    w       (B, t, t)    float, rebalancing weight of each pixel's nearest bin
    keep    (B,)         float 1 / 0 per sample, or None (all 1): set by SkipGray, read by pixel_mean
and returns a dict whose "loss" is what is minimised; other entries are logged beside it. A network with two
heads (siggraph17) gets Guided: out is then (logits, full-resolution ab / AB_NORM), a class loss plus a regression loss.
Class losses read log-probabilities with a gather over the K stored indices: a dense Q-wide target
(B, Q, t, t) is never built, so CE costs what L2 costs (DESIGN.md, "What fast means here").
All losses are means over pixels (sums over K, Q or the 2 channels inside a pixel), taken by pixel_mean.

Gray crops (`fit --gray-crops skip`, the reference's NonGrayMaskLayer): a crop none of whose target pixels has
|a| or |b| > GRAY_AB gets keep = 0, which multiplies every per-pixel term of every loss (and of the block term)
before the mean. The mean is still over all B x t x t pixels of the batch, gray samples counted as zeros: a gray
crop contributes no gradient and the other samples' gradients are exactly what they are without the rule (the
reference, too, zeroes the gray image's rebalancing factor and keeps its normaliser, the batch). The mask is
computed on the device from the targets' ab, with no host sync. The logged extras (ce_unweighted, block) are
taken over the same kept samples. Validation metrics do not use these losses and are unaffected.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.registry import Registry
from trainer.dist import global_max
from trainer.decode import annealed_mean
from trainer.models import AB_NORM

LOSSES = Registry("loss")


@dataclass
class Targets:
    ab: torch.Tensor
    nn_idx: torch.Tensor
    nn_w: torch.Tensor
    w: torch.Tensor
    keep: torch.Tensor | None = None


GRAY_AB = 5.0        # a crop is gray when no target pixel has |a| or |b| above this (NonGrayMaskLayer's thresh)


def colourful_samples(ab: torch.Tensor) -> torch.Tensor:
    """(B,) float: 1 where some target pixel of the sample has |a| or |b| > GRAY_AB, else 0. Tensor ops only
    (no .item(), no branching on values), so it queues on the device like the rest of the step."""
    return (ab.abs() > GRAY_AB).flatten(1).any(1).float()


def pixel_mean(x: torch.Tensor, tg: Targets) -> torch.Tensor:
    """Mean of a per-pixel term x (B, ...) over every pixel of the batch, the samples with keep = 0 as zeros."""
    if tg.keep is None:
        return x.mean()
    return (x * tg.keep.view(-1, *[1] * (x.dim() - 1))).mean()


def _classes_last(logits: torch.Tensor, idx: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The dimension to reduce over the Q classes, with logits and indices viewed to match. On CUDA the network
    is channels-last, so a pixel's Q logits lie side by side: reducing over the last dim of a (B, t, t, Q) view
    is a contiguous reduction, where dim 1 of that layout is a strided one (2.8x slower fwd+bwd on an H100)."""
    if logits.dim() == 4 and not logits.is_contiguous() and logits.is_contiguous(memory_format=torch.channels_last):
        return -1, logits.permute(0, 2, 3, 1), idx.permute(0, 2, 3, 1)
    return 1, logits, idx


def soft_ce_pixels(logits: torch.Tensor, tg: Targets) -> torch.Tensor:
    """Per-pixel soft-target CE (B, t, t), in float32 even under autocast. Plain autograd: a hand-written
    backward (softmax rebuilt from the bf16 logits, minus w at the targets) measured 1.8x slower on an H100
    than log_softmax's own fused kernels."""
    return -(tg.nn_w * target_log_probs(logits, tg)).sum(1)


def target_log_probs(logits: torch.Tensor, tg: Targets) -> torch.Tensor:
    """Log-probabilities of each pixel's K target bins (B, K, t, t), float32, for losses that need them."""
    dim, x, idx = _classes_last(logits, tg.nn_idx)
    logp_k = F.log_softmax(x.float(), dim=dim).gather(dim, idx)
    return logp_k if dim == 1 else logp_k.permute(0, 3, 1, 2)


class Loss:
    head = "classes"                   # "classes": Q logits; "ab": 2 channels

    def __call__(self, out: torch.Tensor, tg: Targets) -> dict:
        raise NotImplementedError


@LOSSES.register
class ce(Loss):
    """Class-rebalanced CE: -w(nearest bin) * sum_k z_k log p_k, mean over pixels; plain CE is logged too."""

    def __call__(self, out, tg):
        pix = soft_ce_pixels(out, tg)
        return {"loss": pixel_mean(tg.w * pix, tg), "ce_unweighted": pixel_mean(pix, tg).detach()}


@LOSSES.register
class l2(Loss):
    """1/2 ||Y_hat - Y||^2 per pixel on ab / AB_NORM (the released model's output scale), mean over pixels."""
    head = "ab"

    def __call__(self, out, tg):
        return {"loss": pixel_mean(0.5 * (out.float() - tg.ab / AB_NORM).pow(2).sum(1), tg)}


@LOSSES.register
class focal(Loss):
    """Soft CE per pixel times mask(t) = 1 / (1 + alpha exp(-beta t)), t = pixel loss / max pixel loss in the
    global batch (the maximum is all-reduced under DDP, so 2 processes of batch B train as 1 of 2B; skipped gray
    crops take no part in it). The mask is a weight (no gradient through t) and replaces class rebalancing."""

    def __init__(self, alpha: float = 10.0, beta: float = 5.0):
        self.alpha, self.beta = alpha, beta

    def __call__(self, out, tg):
        pix = soft_ce_pixels(out, tg)
        kept = pix.detach() if tg.keep is None else pix.detach() * tg.keep.view(-1, 1, 1)    # pix >= 0
        t = (pix.detach() / global_max(kept.max()).clamp_min(1e-12))
        mask = 1.0 / (1.0 + self.alpha * torch.exp(-self.beta * t))
        return {"loss": pixel_mean(mask * pix, tg), "ce_unweighted": pixel_mean(pix, tg).detach()}


@LOSSES.register(name="focal-exact")
class focal_exact(Loss):
    """Lin et al. 2017 on the soft target: -sum_k z_k (1 - p_k)^gamma log p_k, mean over pixels."""

    def __init__(self, gamma: float = 2.0):
        self.gamma = gamma

    def __call__(self, out, tg):
        logp_k = target_log_probs(out, tg)
        focal_pix = -(tg.nn_w * (1 - logp_k.exp()).pow(self.gamma) * logp_k).sum(1)
        return {"loss": pixel_mean(focal_pix, tg), "ce_unweighted": pixel_mean(-(tg.nn_w * logp_k).sum(1), tg).detach()}


class WithBlock(Loss):
    """base + weight * 1/2 ||pool(ab_hat) - pool(ab)||^2 on size x size block averages (ab / AB_NORM), which
    pulls neighbouring pixels towards one colour. For class heads ab_hat is the T = 1 mean of the bins,
    the differentiable decode."""

    def __init__(self, base: Loss, weight: float, size: int, centers: torch.Tensor | None):
        self.base, self.weight, self.size, self.head = base, weight, size, base.head
        self.centers = None if centers is None else centers.float() / AB_NORM      # (Q, 2)

    def __call__(self, out, tg):
        res = self.base(out, tg)
        if self.head == "ab":
            ab_hat = out.float()
        else:
            ab_hat = annealed_mean(out, self.centers, temperature=1.0)         # centres already / AB_NORM
        k = self.size
        blk = pixel_mean(0.5 * (F.avg_pool2d(ab_hat, k, ceil_mode=True) -
                                F.avg_pool2d(tg.ab / AB_NORM, k, ceil_mode=True)).pow(2).sum(1), tg)
        res["block"] = blk.detach()
        res["loss"] = res["loss"] + self.weight * blk
        return res


class SkipGray(Loss):
    """base with tg.keep = colourful_samples(tg.ab): gray crops weigh 0 in every term (module docstring)."""

    def __init__(self, base: Loss):
        self.base, self.head = base, base.head

    def __call__(self, out, tg):
        return self.base(out, Targets(tg.ab, tg.nn_idx, tg.nn_w, tg.w, colourful_samples(tg.ab)))


class Guided(Loss):
    """SIGGRAPH17's two heads, out = (logits (B, Q, t, t), ab (B, 2, 4t, 4t) / AB_NORM):
    class_weight x the class loss on the logits (`classes`: ce, focal, focal-exact, with their rebalancing, from the
    stored soft targets; None for --loss l2) + reg_weight x the regression loss of the ab head's 4x4 block means
    against the stored ab (themselves 4x4 area means: the loss sees exactly what the shards hold).
    smooth-l1 is colorization-pytorch's HuberLoss(delta = 1/110) on ab / 110 (= torch's smooth L1 with beta 1/110),
    summed over a and b; l2 is 1/2 ||.||^2 as the l2 loss. Both are means over target pixels (pixel_mean)."""
    head = "guided"

    def __init__(self, classes: Loss | None, class_weight: float, reg_loss: str, reg_weight: float):
        if reg_loss not in REG_LOSSES:
            raise ValueError(f"reg_loss must be one of {REG_LOSSES}, got {reg_loss!r}")
        self.classes, self.class_weight, self.reg_loss, self.reg_weight = classes, class_weight, reg_loss, reg_weight

    def __call__(self, out, tg):
        logits, ab = out
        pred = F.avg_pool2d(ab.float(), ab.shape[-1] // tg.ab.shape[-1])         # (B, 2, t, t) block means
        target = tg.ab / AB_NORM
        if self.reg_loss == "smooth-l1":
            pix = F.smooth_l1_loss(pred, target, beta=1.0 / AB_NORM, reduction="none").sum(1)
        else:
            pix = 0.5 * (pred - target).pow(2).sum(1)
        reg = pixel_mean(pix, tg)
        if self.classes is None:
            # no class term; the 0 x keeps the class head in the graph, so DDP sees a gradient for every parameter
            res = {"loss": self.reg_weight * reg + 0.0 * logits.float().mean()}
        else:
            res = self.classes(logits, tg)
            res["class_loss"] = res["loss"].detach()
            res["loss"] = self.class_weight * res["loss"] + self.reg_weight * reg
        res["reg_loss"] = reg.detach()
        return res


GRAY_CROPS = ("skip", "train")      # skip: the reference's zero weight for gray crops; train: every crop counts
REG_LOSSES = ("smooth-l1", "l2")


def create_loss(name: str, *, alpha=10.0, beta=5.0, gamma=2.0, block=0.0, block_size=4, centers=None,
                gray_crops: str = "train", guided: dict | None = None) -> Loss:
    """The loss `name` with only the options it takes, plus the block term when block > 0, and gray crops given
    no weight when gray_crops is "skip". guided (a network with two heads, siggraph17): {"class_weight",
    "reg_weight", "reg_loss"}; `name` is then the class head's loss, l2 meaning none (Guided)."""
    if gray_crops not in GRAY_CROPS:
        raise ValueError(f"gray_crops must be one of {GRAY_CROPS}, got {gray_crops!r}")
    opts = {"focal": dict(alpha=alpha, beta=beta), "focal-exact": dict(gamma=gamma)}.get(name, {})
    loss = LOSSES.build(name, **opts)
    if guided is not None and loss.head == "ab":
        if block > 0:
            raise ValueError("the block term applies to a class head; with --loss l2 siggraph17 trains none")
        loss = None
    elif block > 0:
        if loss.head == "classes" and centers is None:
            raise ValueError("the block term of a class loss needs the bin centres")
        loss = WithBlock(loss, block, block_size, centers)
    if guided is not None:
        loss = Guided(loss, **guided)
    return SkipGray(loss) if gray_crops == "skip" else loss
