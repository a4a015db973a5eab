"""fit --model siggraph17: the two-head loss against colorization-pytorch's terms, gray crops and the device-only
step with simulated hints, a run that logs both heads, validates by number of hints, resumes exactly and plots
the PSNR-vs-hints curve, and one-line errors for its options."""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from cli import cli
from test_recipe import HOST_SYNC_OPS, _Record
from trainer import curves, loop
from trainer.config import FitConfig
from trainer.hint_sampling import HintSampler
from test_recipe import _targets as recipe_targets
from trainer.losses import create_loss
from trainer.models import create_model
from trainer.step import forward_loss

Q, K, T = 12, 3, 4
GUIDED = dict(class_weight=0.5, reg_weight=10.0, reg_loss="smooth-l1")


def _targets(B, seed, gray=()):
    return recipe_targets(B, seed, gray, Q=Q, K=K, T=T)


def _outputs(B, seed):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, Q, T, T, generator=g) * 2).requires_grad_(True)
    ab = (torch.tanh(torch.randn(B, 2, 4 * T, 4 * T, generator=g))).requires_grad_(True)      # ab / 110
    return logits, ab


def _reference_huber(in0, in1, delta):
    """colorization-pytorch models/networks.py HuberLoss.__call__."""
    mask = torch.zeros_like(in0)
    mann = torch.abs(in0 - in1)
    eucl = .5 * (mann ** 2)
    mask[...] = mann < delta
    loss = eucl * mask / delta + (mann - .5 * delta) * (1 - mask)
    return torch.sum(loss, dim=1, keepdim=True)


@pytest.mark.parametrize("reg_loss", ["smooth-l1", "l2"])
def test_the_loss_is_the_class_loss_plus_the_weighted_regression_of_block_means(reg_loss):
    tg = _targets(3, seed=1)
    logits, ab = _outputs(3, seed=2)
    res = create_loss("ce", guided={**GUIDED, "reg_loss": reg_loss})((logits, ab), tg)
    blocks = F.avg_pool2d(ab, 4)                                            # the head's 4x4 block means
    if reg_loss == "smooth-l1":                                              # the reference's delta: 1 ab unit
        reg = _reference_huber(blocks, tg.ab / 110, 1 / 110).mean()
    else:
        reg = (0.5 * (blocks - tg.ab / 110).pow(2).sum(1)).mean()
    ce = create_loss("ce")(logits, tg)["loss"]
    torch.testing.assert_close(res["reg_loss"], reg.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res["class_loss"], ce.detach())
    torch.testing.assert_close(res["loss"], 0.5 * ce + 10 * reg, rtol=1e-5, atol=1e-6)
    assert "ce_unweighted" in res


def test_loss_l2_trains_the_regression_head_alone():
    tg = _targets(2, seed=3)
    logits, ab = _outputs(2, seed=4)
    res = create_loss("l2", guided=GUIDED)((logits, ab), tg)
    torch.testing.assert_close(res["loss"], 10 * res["reg_loss"])
    g_logits, g_ab = torch.autograd.grad(res["loss"], (logits, ab))
    assert torch.count_nonzero(g_logits) == 0 and torch.count_nonzero(g_ab) > 0   # a gradient, of zeros (DDP)


@pytest.mark.parametrize("name", ["ce", "focal", "focal-exact", "l2"])
def test_a_gray_crop_gives_neither_head_a_gradient(name):
    tg = _targets(2, seed=5, gray=(0,))
    logits, ab = _outputs(2, seed=6)
    loss = create_loss(name, guided=GUIDED, gray_crops="skip")((logits, ab), tg)["loss"]
    g_logits, g_ab = torch.autograd.grad(loss, (logits, ab))
    assert torch.count_nonzero(g_logits[0]) == 0 and torch.count_nonzero(g_ab[0]) == 0
    assert torch.count_nonzero(g_ab[1]) > 0
    (g_train,) = torch.autograd.grad(create_loss(name, guided=GUIDED)((logits, ab), tg)["loss"], ab)
    assert torch.count_nonzero(g_train[0]) > 0


def _batch(B, crop, seed):
    g = torch.Generator().manual_seed(seed)
    t = crop // 4
    tg = _targets(B, seed)
    tg_ab = F.interpolate(tg.ab, size=(t, t)) if t != T else tg.ab
    idx = F.interpolate(tg.nn_idx.float(), size=(t, t)).long()
    return {"L": (torch.rand(B, crop, crop, generator=g) * 255).to(torch.uint8), "ab": tg_ab.half(),
            "nn_idx": idx.to(torch.int16), "nn_w": torch.full((B, K, t, t), 1 / K).half()}


def test_a_siggraph17_step_with_hints_reads_nothing_back_to_the_host():
    """Hints, network, both losses (gray crops skipped) and backward: tensor ops only, as the ECCV16 step."""
    torch.manual_seed(0)
    net = create_model("siggraph17-tiny", Q, torch.randn(Q, 2) * 50)
    loss_fn = create_loss("ce", guided=GUIDED, gray_crops="skip")
    batch, rebal = _batch(2, 32, seed=7), torch.rand(Q) + 0.5
    with _Record() as rec:
        res = forward_loss(net, loss_fn, batch, torch.device("cpu"), rebal, None, HintSampler(seed=1), step=4)
        res["loss"].backward()
    assert {"randn", "cumprod", "convolution", "smooth_l1_loss"} <= rec.ops    # hints, network and losses were seen
    assert not rec.ops & HOST_SYNC_OPS, rec.ops & HOST_SYNC_OPS
    # the hints reach the network: the same batch without them gives another loss
    with torch.no_grad():
        hinted = forward_loss(net, loss_fn, batch, torch.device("cpu"), rebal, None, HintSampler(p=0.05, seed=1), 4)
        bare = forward_loss(net, loss_fn, batch, torch.device("cpu"), rebal, None, None, 4)
    assert hinted["reg_loss"] != bare["reg_loss"]


def _cfg(shards, out, **kw):
    return FitConfig(**{**dict(data=str(shards), out=str(out), model="siggraph17-tiny", loss="ce", crop=32,
                               batch_size=4, steps=6, save_every=3, workers=0, lr=1e-3, seed=3, val_every=-1,
                               log_every=1), **kw})


def _log(run):
    return [json.loads(ln) for ln in (Path(run) / "log.jsonl").read_text().splitlines()]


def test_fit_logs_both_heads_resumes_exactly_validates_by_hints_and_plots_the_curve(shards, tmp_path):
    whole = loop.fit(_cfg(shards, tmp_path / "whole", val_every=3, val_limit=4))
    part = _cfg(shards, tmp_path / "part")
    loop.fit(replace(part, steps=3))
    loop.fit(replace(part, resume=True))                 # steps 4..6: the same hints, so the same losses
    rows, again = _log(whole), _log(part.out)
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert all(np.isfinite(r["class_loss"]) and np.isfinite(r["reg_loss"]) for r in rows)
    for key in ("loss", "class_loss", "reg_loss"):
        assert [r[key] for r in again] == [r[key] for r in rows], key
    cfg = json.loads((whole / "config.json").read_text())
    assert (cfg["class_weight"], cfg["reg_weight"], cfg["reg_loss"], cfg["hint_p"]) == (1.0, 10.0, "smooth-l1", 0.125)
    assert cfg["data_init"] == "off"                     # LSUV is for ColorNet's sequential blocks

    val = [json.loads(ln) for ln in (whole / "val.jsonl").read_text().splitlines()]
    model_rows = [r for r in val if "baseline" not in r]
    assert [r["step"] for r in model_rows] == [3, 6]
    for r in model_rows:
        assert list(r["by_hints"]) == ["0", "1", "2", "5", "10", "20"]
        assert r["by_hints"]["0"]["psnr"] == r["psnr"] and r["ce"] is None
        assert len({v["psnr"] for v in r["by_hints"].values()}) > 1        # hints change the prediction
    # the no-hints row is what `evaluate` measures on the checkpoint (colorfast's Colorizer: the regression head)
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(whole / "last.pt"), "--data", str(shards),
                                   "--crop", "32", "--limit", "4", "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())["models"]["whole"]["summary"]
    for key in ("auc", "auc_rebalanced", "psnr", "l2", "colourfulness", "chroma"):
        assert model_rows[-1][key] == pytest.approx(ev[key], rel=1e-4, abs=1e-6), key
    res = CliRunner().invoke(cli, ["plot", str(whole), "--out", str(tmp_path / "curves.png")])
    assert res.exit_code == 0, res.output
    (curve,) = curves.hint_curves([curves.load_run(whole)])
    assert curve["step"] == 6 and curve["hints"] == [0, 1, 2, 5, 10, 20]
    assert curve["psnr"] == [model_rows[-1]["by_hints"][str(n)]["psnr"] for n in curve["hints"]]
    img = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    assert img.std() > 10
    assert curves.hint_curves([curves.load_run(tmp_path / "part")]) == []       # no validation, no curve


@pytest.mark.parametrize("args,message", [
    (["--hint-sizes", "0,2"], "--hint-sizes"),
    (["--hint-sizes", "a"], "--hint-sizes"),
    (["--hint-p", "0"], "--hint-p"),
    (["--reg-weight", "nan"], "--reg-weight"),
    (["--init", "{tmp}/x.pt"], "trains from scratch"),
    (["--loss", "l2", "--block", "1"], "--block"),
])
def test_bad_siggraph17_options_are_one_line_errors(shards, tmp_path, args, message):
    (tmp_path / "x.pt").write_bytes(b"")
    args = [a.format(tmp=tmp_path) for a in args]
    res = CliRunner().invoke(cli, ["fit", "--data", str(shards), "--out", str(tmp_path / "r"), "--model",
                                   "siggraph17-tiny", "--crop", "32", "--steps", "1", *args],
                             catch_exceptions=False)
    assert res.exit_code in (1, 2), res.output
    assert message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "r").exists()


def test_bench_step_times_siggraph17_ce_against_per_batch_encoding():
    """bench step --model siggraph17: the same three variants as for eccv16 (ce from shards, l2, ce with targets
    encoded per batch), each with simulated hints, and knn_over_ce, the figure docs/benchmarks.md quotes."""
    from trainer import flops
    res = CliRunner().invoke(cli, ["bench", "step", "--model", "siggraph17-tiny", "--crop", "32", "--batch-size", "2",
                                   "--steps", "1", "--warmup", "0"])
    assert res.exit_code == 0, res.output
    fig = json.loads(res.output.strip().splitlines()[-1])
    assert fig["model"] == "siggraph17-tiny" and fig["params"] == sum(
        p.numel() for p in create_model("siggraph17-tiny", fig["classes"], torch.zeros(fig["classes"], 2)).parameters())
    for key in ("ce_step_s", "l2_step_s", "knn_baseline_step_s", "knn_encode_s"):
        assert fig[key] > 0, key
    assert fig["knn_over_ce"] == pytest.approx(fig["knn_baseline_step_s"] / fig["ce_step_s"], rel=0.01)  # rounded
    # both heads' FLOPs: the U-Net's class head and full-resolution regression head
    ce_flops = flops.step_flops("siggraph17-tiny", "ce", 2, 32, classes=fig["classes"])
    assert fig["ce_gflop_per_step"] == round(ce_flops / 1e9, 2)
    assert flops.step_flops("siggraph17", "ce", 1, 176, classes=529) > flops.step_flops("eccv16", "ce", 1, 176)
