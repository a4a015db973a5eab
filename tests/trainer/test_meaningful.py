"""Tests that make training mean what the paper means: class rebalancing by the nearest bin, targets mapped
onto the right bins of a model with other bins, the released layer layout conv by conv, and evaluation
that rewards the truth. Each fails when its feature is broken (all weights 1, farthest bin, no dilation)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from live_networks import calibrate_batchnorm, responds_to_l
from pipeline import contract
from trainer import loop, metrics, scoring
from trainer.losses import create_loss
from trainer.models import create_model
from trainer.step import forward_loss
from trainer.synthetic import gamut_centers, make_prior, soft_encode

# The generator of richzhang/colorization colorizers/eccv16.py, written out: every conv in order as
# (block, in, out, kernel, stride, padding, dilation); model8's first layer is the transposed conv.
RELEASED_LAYOUT = (
    [("model1", 1, 64, 3, 1, 1, 1), ("model1", 64, 64, 3, 2, 1, 1),
     ("model2", 64, 128, 3, 1, 1, 1), ("model2", 128, 128, 3, 2, 1, 1),
     ("model3", 128, 256, 3, 1, 1, 1), ("model3", 256, 256, 3, 1, 1, 1), ("model3", 256, 256, 3, 2, 1, 1)]
    + [("model4", 256 if i == 0 else 512, 512, 3, 1, 1, 1) for i in range(3)]
    + [("model5", 512, 512, 3, 1, 2, 2)] * 3 + [("model6", 512, 512, 3, 1, 2, 2)] * 3
    + [("model7", 512, 512, 3, 1, 1, 1)] * 3
    + [("model8", 512, 256, 4, 2, 1, 1), ("model8", 256, 256, 3, 1, 1, 1), ("model8", 256, 256, 3, 1, 1, 1),
       ("model8", 256, 313, 1, 1, 0, 1)])


def test_eccv16_matches_the_released_layout_conv_by_conv():
    net = create_model("eccv16", 313)
    got = []
    for b in range(1, 9):
        for layer in getattr(net, f"model{b}"):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                got.append((f"model{b}", layer.in_channels, layer.out_channels, layer.kernel_size[0],
                            layer.stride[0], layer.padding[0], layer.dilation[0]))
                assert layer.kernel_size[0] == layer.kernel_size[1] and layer.dilation[0] == layer.dilation[1]
    assert got == RELEASED_LAYOUT
    # tiny keeps the same kernels, strides, paddings and dilations at 1/8 of the width
    tiny = create_model("tiny", 313)
    t = [(f"model{b}", la.kernel_size[0], la.stride[0], la.padding[0], la.dilation[0])
         for b in range(1, 9) for la in getattr(tiny, f"model{b}") if isinstance(la, (nn.Conv2d, nn.ConvTranspose2d))]
    assert t == [(r[0], r[3], r[4], r[5], r[6]) for r in RELEASED_LAYOUT]


def _batch(shard_centers, prior, n=3, t=8, k=4, seed=0):
    """A loader-like batch at target resolution t (L at 4t): ab, its k nearest shard bins and soft weights."""
    rng = np.random.default_rng(seed)
    ab = rng.uniform(-60, 60, (n, 2, t, t)).astype(np.float32)
    idx, w = soft_encode(ab.transpose(0, 2, 3, 1).reshape(-1, 2), shard_centers, k)
    to_map = lambda a: torch.from_numpy(np.ascontiguousarray(a.reshape(n, t, t, k).transpose(0, 3, 1, 2)))  # noqa
    return {"L": torch.from_numpy(rng.integers(0, 256, (n, 4 * t, 4 * t), dtype=np.uint8)),
            "ab": torch.from_numpy(ab).half(), "nn_idx": to_map(idx.astype(np.int64)).short(),
            "nn_w": to_map(w).half()}, ab


def test_forward_loss_equals_a_dense_reference_with_remapped_bins_and_rebalancing():
    shard_centers = gamut_centers()                                     # (Q_s, 2), about 262 bins
    # the model's bins: the shard bins in another order plus extra ones (as the released 313 are a superset)
    rng = np.random.default_rng(1)
    extra = np.array([[200.0 + 10 * i, -200.0] for i in range(9)], np.float32)
    model_centers = np.concatenate([shard_centers, extra])[rng.permutation(len(shard_centers) + 9)]
    nearest = rng.integers(0, len(shard_centers), 5000)                 # a lopsided prior: weights far from 1
    nearest[:3000] = 7
    prior = make_prior(nearest, shard_centers)
    assert prior.weights.std() > 0.1
    torch.manual_seed(0)
    model = calibrate_batchnorm(create_model("tiny", len(model_centers), torch.from_numpy(model_centers)))
    assert responds_to_l(model)                                         # so the L the step feeds it matters
    remap = loop.bin_remap(model, prior)
    torch.testing.assert_close(model.centers[remap], torch.from_numpy(shard_centers))     # each bin to itself
    batch, ab = _batch(shard_centers, prior)
    rebal = torch.as_tensor(prior.weights, dtype=torch.float32)
    got = forward_loss(model, create_loss("ce"), batch, torch.device("cpu"), rebal, remap)["loss"]
    # dense reference: the Q_model-wide soft target, each pixel weighted by its nearest shard bin's weight
    with torch.no_grad():
        logits = model(batch["L"].unsqueeze(1).float() * contract.L_SCALE)
    n, K, t, _ = batch["nn_idx"].shape
    z = torch.zeros(n, len(model_centers), t, t)
    dense_idx = torch.from_numpy(np.abs(shard_centers[:, None] - model_centers[None]).max(-1).argmin(1))
    z.scatter_add_(1, dense_idx[batch["nn_idx"].long()], batch["nn_w"].float())
    ab_px = ab.transpose(0, 2, 3, 1).reshape(-1, 2)                    # the float32 ab the targets came from
    d = ((ab_px[:, None] - shard_centers[None]) ** 2).sum(-1)
    w = torch.from_numpy(prior.weights[d.argmin(1)].astype(np.float32)).reshape(n, t, t)
    ref = (w * -(z * F.log_softmax(logits, 1)).sum(1)).mean()
    torch.testing.assert_close(got.detach(), ref, rtol=1e-5, atol=1e-5)
    # ... and the weights matter: without them (all 1) the loss is a different number
    ones = (-(z * F.log_softmax(logits, 1)).sum(1)).mean()
    assert abs(float(ref - ones)) > 1e-3 * float(ones)


def _truth_colorizer(samples, mirror=False):
    """A 'colorizer' that looks up each input's true ab (an l2 head: ab / 110), or its left-right mirror."""
    truth = {s.L.tobytes(): (s.gt_ab[:, :, ::-1] if mirror else s.gt_ab) for s in samples}

    class Truth:
        centers, prior, loss, weights = None, None, "l2", "raw"

        def predict_raw(self, L):
            return torch.from_numpy(np.stack([truth[x[0].numpy().tobytes()] for x in L]).copy()) / 110.0
    return Truth()


def test_evaluate_gives_the_truth_auc_100_and_a_mirrored_prediction_less(shards):
    from colorfast.evaluate import EvalConfig, Model, evaluate
    data = shards
    samples = list(scoring.shard_samples(data, "test"))
    p = contract.Prior.load(data / contract.PRIOR)
    models = [Model("truth", "", _truth_colorizer(samples)), Model("mirrored", "", _truth_colorizer(samples, True))]
    rep = evaluate(models, iter(samples), EvalConfig(data=str(data)),
                   evaluated_prior=((p.centers, p.prob, p.weights), "x"))
    truth, mirrored = rep["models"]["truth"]["summary"], rep["models"]["mirrored"]["summary"]
    assert truth["auc"] == pytest.approx(100.0, abs=1e-6) and truth["auc_rebalanced"] == pytest.approx(100.0, abs=1e-6)
    assert truth["l2"] == pytest.approx(0.0, abs=1e-9) and truth["colourfulness_gap"] == pytest.approx(0.0, abs=0.5)
    assert mirrored["auc"] < truth["auc"] - 5 and mirrored["auc_rebalanced"] < truth["auc_rebalanced"] - 5
    assert mirrored["l2"] > 0.01


def test_rebalancer_uses_the_nearest_bin():
    centers = np.array([[0.0, 0.0], [50.0, 0.0]])
    r = metrics.Rebalancer(centers, np.array([0.9, 0.1]))
    gt = np.array([[[10.0, 45.0]], [[0.0, 0.0]]])                       # pixels at ab (10, 0) and (45, 0)
    np.testing.assert_allclose(r.weights(gt), [[1 / 0.9, 1 / 0.1]])
