"""The reference recipe's loss scale and gray-crop rule: --loss-reduction gives the updates of the reference's
per-image-sum loss (decay against data as in caffe), --gray-crops skip gives a gray crop exactly zero gradient in
every loss without a host sync, and fit records both and refuses to change them on --resume."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch.utils._python_dispatch import TorchDispatchMode

from cli import cli
from trainer import checkpoint, loop
from trainer.config import FitConfig, FitError
from trainer.losses import LOSSES, Targets, colourful_samples, create_loss
from trainer.step import TrainStep
from trainer.dist import DistInfo

Q, K, T = 12, 4, 8


def _targets(B, seed, gray=(), Q=Q, K=K, T=T):
    """B samples of random targets (Q bins, K per pixel, T x T); the samples listed in `gray` get ab within +-4.9
    (a gray crop)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(Q, generator=g)[:K] for _ in range(B * T * T)])
    w = torch.rand(B, K, T, T, generator=g) + 0.05
    ab = torch.randn(B, 2, T, T, generator=g) * 40
    for i in gray:
        ab[i] = (torch.rand(2, T, T, generator=g) * 2 - 1) * 4.9
    return Targets(ab=ab, nn_idx=idx.reshape(B, T, T, K).permute(0, 3, 1, 2).contiguous(),
                   nn_w=w / w.sum(1, keepdim=True), w=torch.rand(B, T, T, generator=g) * 3)


def _pick(tg, i):
    return Targets(*(getattr(tg, k)[i:i + 1] for k in ("ab", "nn_idx", "nn_w", "w")))


LOSS_VARIANTS = [(name, block) for name in sorted(LOSSES) for block in (0.0, 0.7)]


def _loss(name, block, gray_crops, centers):
    return create_loss(name, block=block, block_size=4, centers=centers, gray_crops=gray_crops)


@pytest.mark.parametrize("name,block", LOSS_VARIANTS)
def test_a_gray_crop_gets_exactly_zero_gradient_and_the_colourful_one_is_unchanged(name, block):
    tg = _targets(2, seed=1, gray=(0,))
    g = torch.Generator().manual_seed(2)
    centers = torch.randn(Q, 2, generator=g) * 50
    C = 2 if LOSSES[name].head == "ab" else Q
    # the gray crop's logits are the sharper ones: its pixel losses hold the batch maximum that focal divides by
    out = (torch.randn(2, C, T, T, generator=g) * torch.tensor([8.0, 2.0]).view(2, 1, 1, 1)).requires_grad_(True)
    skip = _loss(name, block, "skip", centers)(out, tg)["loss"]
    (grad,) = torch.autograd.grad(skip, out)
    assert torch.count_nonzero(grad[0]) == 0                         # the gray crop: no gradient at all
    assert torch.count_nonzero(grad[1]) > 0
    # the colourful sample as if alone, with the batch (2) as the normaliser: loss and gradient unchanged
    alone = out[1:].detach().clone().requires_grad_(True)
    ref = _loss(name, block, "train", centers)(alone, _pick(tg, 1))["loss"] / 2
    (ref_grad,) = torch.autograd.grad(ref, alone)
    torch.testing.assert_close(skip, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad[1:], ref_grad, rtol=1e-5, atol=1e-9)
    # under "train" the same gray crop is trained at full weight
    (grad_train,) = torch.autograd.grad(_loss(name, block, "train", centers)(out, tg)["loss"], out)
    assert torch.count_nonzero(grad_train[0]) > 0


def test_gray_means_no_target_pixel_beyond_5_in_a_or_b():
    ab = torch.zeros(4, 2, T, T)
    ab[1, 0, 3, 3] = 5.0                 # exactly 5: still gray (the reference's test is > 5)
    ab[2, 1, 7, 0] = -5.01               # one pixel of b beyond -5: colourful
    ab[3, 0] = 4.0
    ab[3, 1] = -4.0
    assert colourful_samples(ab).tolist() == [0.0, 0.0, 1.0, 0.0]


class _Record(TorchDispatchMode):
    """Records the name of every aten op that runs, forward and backward."""

    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


HOST_SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal"}   # what .item(), if t, t.nonzero() run


@pytest.mark.parametrize("name,block", LOSS_VARIANTS)
def test_the_gray_rule_reads_nothing_back_to_the_host(name, block):
    """Every op of the loss with --gray-crops skip, forward and backward, stays a tensor op: no .item(), no Python
    branch on a tensor value, no nonzero (each of those runs _local_scalar_dense or nonzero, a sync on CUDA)."""
    tg = _targets(2, seed=3, gray=(1,))
    C = 2 if LOSSES[name].head == "ab" else Q
    out = torch.randn(2, C, T, T).requires_grad_(True)
    loss_fn = _loss(name, block, "skip", torch.randn(Q, 2) * 50)
    with _Record() as rec:
        loss_fn(out, tg)["loss"].backward()
    assert "any" in rec.ops or "max" in rec.ops                     # the recorder saw the mask being computed
    assert not rec.ops & HOST_SYNC_OPS, rec.ops & HOST_SYNC_OPS


class _Linear(torch.nn.Module):
    """A 1x1 classifier over 3 input channels: model8's last layer in miniature, with a bias."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, Q, 1)

    def forward(self, x):
        return self.conv(x)


def _train(opt_of, loss_scale, steps=4, crop=4 * T):
    model = _Linear()
    opt = opt_of(model)
    g = torch.Generator().manual_seed(7)
    for s in range(steps):
        x = torch.randn(3, 3, T, T, generator=g)
        tg = _targets(3, seed=10 + s)
        loss = create_loss("ce")(model(x), tg)["loss"] * loss_scale     # our loss: a mean over target pixels
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("decay", [1e-3, 0.3])
def test_reference_reduction_updates_like_the_reference_sum_over_pixels(decay):
    """The reference's caffe layer sums the loss over a crop's target pixels and divides by the batch, and caffe
    adds weight_decay * w to that gradient before Adam. --loss-reduction reference must give those updates with
    our per-pixel-mean loss; --loss-reduction mean gives plain torch Adam on the mean."""
    crop = 4 * T
    cfg = FitConfig(crop=crop, lr=1e-2, weight_decay=decay)
    pixels = T * T
    reference = _train(lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=decay,
                                                  eps=1e-8), loss_scale=pixels)
    plain = _train(lambda m: torch.optim.Adam(m.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=decay,
                                              eps=1e-8), loss_scale=1.0)
    ours_ref = _train(lambda m: loop.create_optimizer(m, cfg), loss_scale=1.0)
    ours_mean = _train(lambda m: loop.create_optimizer(m, replace(cfg, loss_reduction="mean")), loss_scale=1.0)
    torch.testing.assert_close(ours_ref, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_mean, plain, rtol=1e-5, atol=1e-6)
    if decay > 0.1:                                                  # a decay strong enough to tell them apart
        assert (ours_ref - ours_mean).abs().max() > 1e-3


def test_reference_reduction_divides_decay_by_the_target_pixels_of_a_crop():
    model = _Linear()
    ref = loop.create_optimizer(model, FitConfig(crop=176)).param_groups[0]
    mean = loop.create_optimizer(model, FitConfig(crop=176, loss_reduction="mean")).param_groups[0]
    assert mean["weight_decay"] / ref["weight_decay"] == pytest.approx(44 * 44)     # the issue's ~1,936x
    assert mean["eps"] / ref["eps"] == pytest.approx(44 * 44)
    assert mean["weight_decay"] == 1e-3 and mean["eps"] == 1e-8


def _cfg(shards, out, **kw):
    return FitConfig(**{**dict(data=str(shards), out=str(out), model="tiny", loss="ce", crop=48, batch_size=8,
                               steps=2, save_every=100, workers=0, lr=1e-3, seed=5, val_every=-1), **kw})


def test_fit_records_both_fields_from_the_cli_and_refuses_to_change_them_on_resume(shards, tmp_path):
    run = tmp_path / "run"
    res = CliRunner().invoke(cli, ["fit", "--data", str(shards), "--out", str(run), "--model", "tiny", "--crop", "48",
                                   "--batch-size", "8", "--steps", "1", "--workers", "0", "--device", "cpu",
                                   "--lr", "1e-3", "--seed", "5",
                                   "--val-every", "-1", "--loss-reduction", "mean", "--gray-crops", "train"])
    assert res.exit_code == 0, res.output
    saved = json.loads((run / "config.json").read_text())
    assert (saved["loss_reduction"], saved["gray_crops"]) == ("mean", "train")
    assert torch.load(run / "last.pt", weights_only=True)["config"]["loss_reduction"] == "mean"
    cfg = _cfg(shards, run, steps=2, resume=True, loss_reduction="mean", gray_crops="train")
    for change in (dict(loss_reduction="reference"), dict(gray_crops="skip")):
        (field, value), = change.items()
        with pytest.raises(FitError, match=f"options differ.*{field}: '.*' -> '{value}'"):
            loop.fit(replace(cfg, **change))
    loop.fit(cfg)                                                   # unchanged: it continues
    res = CliRunner().invoke(cli, ["fit", "--data", str(shards), "--out", str(tmp_path / "x"),
                                   "--loss-reduction", "sum"])
    assert res.exit_code == 2 and "'--loss-reduction'" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("gray_crops", ["skip", "train"])
def test_fit_trains_an_all_gray_batch_only_under_train(shards, tmp_path, monkeypatch, gray_crops):
    """fit honours --gray-crops: with every crop's target ab made gray, the logged loss is exactly 0 under skip."""
    class GrayBatches(loop.TrainStep):
        def __call__(self, batch):
            return super().__call__({**batch, "ab": torch.zeros_like(batch["ab"])})
    monkeypatch.setattr(loop, "TrainStep", GrayBatches)
    run = loop.fit(_cfg(shards, tmp_path / "run", steps=2, gray_crops=gray_crops))
    losses = [json.loads(ln)["loss"] for ln in (run / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all((x == 0.0) == (gray_crops == "skip") for x in losses), losses


def test_a_run_from_before_these_options_resumes_only_as_it_ran(shards, tmp_path):
    """A checkpoint whose config lacks both fields trained with the mean and every crop: resuming it with the new
    defaults is refused by name, and with --loss-reduction mean --gray-crops train it continues."""
    run = tmp_path / "old"
    loop.fit(_cfg(shards, run, steps=1, loss_reduction="mean", gray_crops="train"))
    ck = torch.load(run / "last.pt", weights_only=True)
    for field in ("loss_reduction", "gray_crops"):
        del ck["config"][field]
    checkpoint.save(run / "last.pt", ck)          # re-saved with its checksum, as an older version wrote it
    with pytest.raises(FitError, match="loss_reduction: 'mean' -> 'reference'; gray_crops: 'train' -> 'skip'"):
        loop.fit(_cfg(shards, run, steps=2, resume=True))
    loop.fit(_cfg(shards, run, steps=2, resume=True, loss_reduction="mean", gray_crops="train"))


@pytest.mark.parametrize("model", ["tiny", "siggraph17-tiny"])
def test_a_whole_training_step_with_the_gray_rule_never_syncs(shards, model):
    """The full step (forward, loss with --gray-crops skip, backward, clip, fused Adam with found_inf) on a real
    batch: no op that reads a value back to the host. siggraph17: with its simulated hints and both heads' losses."""
    from trainer.data import ShardDataset
    from pipeline import contract
    cfg = _cfg(shards, "unused", model=model)
    prior = contract.Prior.load(Path(shards) / contract.PRIOR)
    ds = ShardDataset(cfg.data, "train", cfg.crop, cfg.flip, cfg.seed)
    batch = ds.__getitems__(list(range(4)))                          # as the loader gives it
    batch["ab"][0] = 0.0                                            # one gray crop in the batch
    model = loop.build_model(cfg, prior)
    loss_fn = create_loss("ce", gray_crops="skip", guided=loop.guided_terms(cfg))
    step = TrainStep(model, loss_fn, loop.create_optimizer(model, cfg), torch.device("cpu"),
                     torch.as_tensor(prior.weights, dtype=torch.float32), None, DistInfo(),
                     hints=loop.hint_sampler(cfg, DistInfo()))
    with _Record() as rec:
        res = step(batch)
    assert "any" in rec.ops and {"_fused_adam", "_fused_adam_"} & rec.ops, sorted(rec.ops)
    assert ("cumprod" in rec.ops) == cfg.guided                     # the hints were drawn inside the step
    assert not rec.ops & HOST_SYNC_OPS, rec.ops & HOST_SYNC_OPS
    assert torch.isfinite(res["loss"])
