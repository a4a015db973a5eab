"""Each loss against a straightforward dense reference: the Q-wide soft target built from nn_idx / nn_w."""
import pytest
import torch
import torch.nn.functional as F

from trainer.losses import LOSSES, Targets, create_loss
from trainer.models import AB_NORM

B, Q, K, T = 2, 12, 4, 8


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    idx = torch.stack([torch.randperm(Q, generator=g)[:K] for _ in range(B * T * T)])     # distinct bins per pixel
    nn_idx = idx.reshape(B, T, T, K).permute(0, 3, 1, 2).contiguous()
    w = torch.rand(B, K, T, T, generator=g) + 0.05
    tg = Targets(ab=torch.randn(B, 2, T, T, generator=g) * 40, nn_idx=nn_idx, nn_w=w / w.sum(1, keepdim=True),
                 w=torch.rand(B, T, T, generator=g) * 3)
    centers = torch.randn(Q, 2, generator=g) * 50
    return tg, centers, g


def _dense_target(tg):
    z = torch.zeros(B, Q, T, T)
    return z.scatter_add_(1, tg.nn_idx, tg.nn_w)                     # (B, Q, T, T), sums to 1 over Q


def _reference(name, out, tg, centers):
    """Straightforward dense versions, written independently of trainer.losses."""
    if name == "l2":
        return 0.5 * ((out - tg.ab / AB_NORM) ** 2).sum(1).mean()
    z, logp = _dense_target(tg), F.log_softmax(out, 1)
    pix = -(z * logp).sum(1)                                          # (B, T, T)
    if name == "ce":
        return (tg.w * pix).mean()
    if name == "focal":
        t = pix.detach() / pix.detach().max()
        return (pix / (1 + 10.0 * torch.exp(-5.0 * t))).mean()
    if name == "focal-exact":
        return -(z * (1 - logp.exp()) ** 2 * logp).sum(1).mean()
    raise AssertionError(f"no dense reference for loss {name!r}: add one")


def _block_reference(name, out, tg, centers, size=4):
    ab_hat = out if name == "l2" else torch.einsum("bqhw,qc->bchw", out.softmax(1), centers / AB_NORM)
    pool = lambda x: x.reshape(B, 2, T // size, size, T // size, size).mean((3, 5))
    return 0.5 * ((pool(ab_hat) - pool(tg.ab / AB_NORM)) ** 2).sum(1).mean()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])   # channels-last: CUDA's
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_and_gradient_match_dense_reference(name, layout):
    tg, centers, g = _inputs()
    C = 2 if LOSSES[name].head == "ab" else Q
    out = torch.randn(B, C, T, T, generator=g).contiguous(memory_format=layout).requires_grad_(True)
    got = create_loss(name)(out, tg)["loss"]
    (grad,) = torch.autograd.grad(got, out)
    ref_out = out.detach().clone().requires_grad_(True)
    ref = _reference(name, ref_out, tg, centers)
    (ref_grad,) = torch.autograd.grad(ref, ref_out)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_block_term_adds_weighted_block_loss(name, size):
    tg, centers, g = _inputs(1)
    C = 2 if LOSSES[name].head == "ab" else Q
    out = torch.randn(B, C, T, T, generator=g)
    base = create_loss(name)(out, tg)
    res = create_loss(name, block=0.7, block_size=size, centers=centers)(out, tg)
    blk = _block_reference(name, out, tg, centers, size)
    torch.testing.assert_close(res["block"], blk, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res["loss"], base["loss"] + 0.7 * blk, rtol=1e-5, atol=1e-6)


def test_ce_logs_unweighted_ce_and_rebalancing_changes_the_loss():
    tg, centers, g = _inputs(2)
    out = torch.randn(B, Q, T, T, generator=g)
    res = create_loss("ce")(out, tg)
    plain = -(_dense_target(tg) * F.log_softmax(out, 1)).sum(1).mean()
    torch.testing.assert_close(res["ce_unweighted"], plain)
    tg.w = torch.ones_like(tg.w)
    torch.testing.assert_close(create_loss("ce")(out, tg)["loss"], plain)


def test_focal_options_reach_the_loss_and_unknown_names_are_refused():
    tg, centers, g = _inputs(3)
    out = torch.randn(B, Q, T, T, generator=g)
    assert create_loss("focal", alpha=0.0)(out, tg)["loss"] == pytest.approx(float(create_loss("focal", alpha=0.0)(out, tg)["ce_unweighted"]))
    a, b = create_loss("focal-exact", gamma=0.0)(out, tg), create_loss("focal-exact", gamma=2.0)(out, tg)
    torch.testing.assert_close(a["loss"], a["ce_unweighted"])         # gamma 0 is plain soft CE
    assert b["loss"] < a["loss"]
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        create_loss("hinge")


@pytest.mark.parametrize("name", ["ce", "focal", "focal-exact"])
def test_bf16_channels_last_logits_as_on_cuda(name):
    """Under CUDA autocast the head's logits are bf16 and channels-last: the loss is float32, equal to the
    reference on the same (rounded) logits, and the gradient comes back in the logits' dtype and layout."""
    tg, centers, g = _inputs()
    out = torch.randn(B, Q, T, T, generator=g).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    out.requires_grad_(True)
    got = create_loss(name)(out, tg)["loss"]
    (grad,) = torch.autograd.grad(got, out)
    ref_out = out.detach().float().requires_grad_(True)
    ref = _reference(name, ref_out, tg, centers)
    (ref_grad,) = torch.autograd.grad(ref, ref_out)
    assert got.dtype == torch.float32 and grad.dtype == torch.bfloat16
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad.float(), ref_grad, rtol=1e-2, atol=1e-5)


def _focal_rank(rank, world, rdv, out):
    """One of two gloo processes: focal loss and its gradient on this rank's half of a batch of 2B."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    try:
        tg, logits = _two_batches()
        half = slice(rank * B, (rank + 1) * B)
        mine = Targets(ab=tg.ab[half], nn_idx=tg.nn_idx[half], nn_w=tg.nn_w[half], w=tg.w[half])
        x = logits[half].clone().requires_grad_(True)
        loss = create_loss("focal")(x, mine)["loss"]
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": x.grad}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _two_batches():
    """A batch of 2B whose halves have different maximum pixel losses (the second half is sharper)."""
    tg1, _, g = _inputs(4)
    tg2, _, _ = _inputs(5)
    tg = Targets(*(torch.cat([getattr(tg1, k), getattr(tg2, k)]) for k in ("ab", "nn_idx", "nn_w", "w")))
    logits = torch.randn(2 * B, Q, T, T, generator=g) * torch.tensor([1.0] * B + [3.0] * B).view(-1, 1, 1, 1)
    return tg, logits


def test_focal_under_ddp_equals_one_process_of_the_whole_batch(tmp_path):
    """2 processes of batch B train as 1 of 2B: DDP averages the ranks' gradients, so each rank's loss is half
    the whole batch's contribution; the mask's t uses the maximum over both ranks."""
    import torch.multiprocessing as mp
    mp.spawn(_focal_rank, args=(2, str(tmp_path / "rdv"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    tg, logits = _two_batches()
    x = logits.clone().requires_grad_(True)
    whole = create_loss("focal")(x, tg)["loss"]
    whole.backward()
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, whole.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.cat([r["grad"] for r in ranks]) / 2, x.grad, rtol=1e-5, atol=1e-8)
