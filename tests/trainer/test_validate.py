"""Validation inside fit: equal to `evaluate --data`, to a one-process run under 2-process gloo, and kept
across --resume together with the lr schedule, the EMA and best.pt; grids, --select, TensorBoard."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import cli
from trainer import loop, schedule, tb
from trainer.config import FitConfig, FitError
from trainer.validate import DIRECTION

ROOT = Path(__file__).resolve().parents[2]
FIGURES = [k for k in DIRECTION] + ["gt_colourfulness", "gt_chroma", "images"]


def _cfg(shards, out, **kw):
    return FitConfig(**{**dict(data=str(shards), out=str(out), model="tiny", loss="ce", crop=48, batch_size=8,
                               steps=6, save_every=3, workers=0, lr=1e-3, seed=5, val_every=2), **kw})


def _rows(path):
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def _close(a: dict, b: dict, keys, tol=1e-4):
    for k in keys:
        if a[k] is None or b[k] is None:
            assert a[k] is None and b[k] is None, k
        else:
            assert a[k] == pytest.approx(b[k], abs=tol), k


def test_validation_row_equals_evaluate_on_the_same_samples_and_checkpoint(shards, tmp_path):
    run = loop.fit(_cfg(shards, tmp_path / "run", ema=0.9, val_limit=5, steps=4, val_every=0))
    rows = _rows(run / "val.jsonl")
    last = [r for r in rows if r["step"] == 4 and "baseline" not in r][0]
    gray = [r for r in rows if r.get("baseline") == "gray"]
    assert last["weights"] == "ema" and last["images"] == 5 and len(gray) == 1     # baseline once per folder
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", str(run / "last.pt"), "--data", str(shards),
                                   "--crop", "48", "--limit", "5", "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "EMA weights" in res.output
    ev = json.loads((tmp_path / "ev" / "metrics.json").read_text())["models"]
    assert ev["run"]["weights"] == "ema"
    _close(last, ev["run"]["summary"], FIGURES)
    _close(gray[0], ev["gray (ab = 0)"]["summary"], FIGURES)
    assert last["ce"] > 0 and last["ce_rebalanced"] > 0 and last["l2"] > 0
    photo = tmp_path / "p.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(photo)
    for cmd in (["colorize", str(photo), "--out", str(tmp_path / "col")],
                ["compare", "--images", str(tmp_path), "--out", str(tmp_path / "cmp")]):
        flag = "--checkpoint"
        res = CliRunner().invoke(cli, [*cmd, flag, str(run / "last.pt"), "--size", "32", "--device", "cpu"])
        assert res.exit_code == 0 and "using its EMA weights" in res.output, res.output


def test_two_process_gloo_validation_equals_one_process(shards, tmp_path):
    ck = loop.fit(_cfg(shards, tmp_path / "run", steps=2, val_every=-1)) / "last.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    helper = str(ROOT / "tests" / "trainer" / "ddp_validate.py")
    one = subprocess.run([sys.executable, helper, str(ck), str(tmp_path / "one"), "7"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          helper, str(ck), str(tmp_path / "two"), "7"], env=env, capture_output=True, text=True,
                         timeout=150)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = _rows(tmp_path / "one" / "val.jsonl"), _rows(tmp_path / "two" / "val.jsonl")
    assert len(a) == len(b) == 2                       # the model and the gray baseline, written once (rank 0)
    for ra, rb in zip(a, b):
        assert ra["images"] == rb["images"] == 7       # 7 samples: 4 on rank 0, 3 on rank 1
        _close(ra, rb, FIGURES, tol=1e-9)


def test_resume_writes_the_same_logs_and_best_checkpoint(shards, tmp_path, monkeypatch):
    kw = dict(steps=8, ema=0.8, lr_schedule="cosine", warmup=2, grad_clip=5.0, val_every=2, select="l2")
    whole = loop.fit(_cfg(shards, tmp_path / "whole", **kw))
    part = _cfg(shards, tmp_path / "part", **kw)
    real_save = loop.checkpoint.save

    def save_then_crash(path, payload):             # killed right after last.pt of step 6 (best.pt may follow)
        real_save(path, payload)
        if payload["step"] == 6 and Path(path).name == "last.pt":
            raise KeyboardInterrupt("simulated crash")
    monkeypatch.setattr(loop.checkpoint, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(part)
    monkeypatch.undo()
    loop.fit(replace(part, resume=True))
    drop = lambda rows, k: [{x: v for x, v in r.items() if x != k} for r in rows]   # noqa: E731
    assert drop(_rows(whole / "log.jsonl"), "elapsed_s") == drop(_rows(Path(part.out) / "log.jsonl"), "elapsed_s")
    vw, vp = drop(_rows(whole / "val.jsonl"), "seconds"), drop(_rows(Path(part.out) / "val.jsonl"), "seconds")
    assert vw == vp and [r["step"] for r in vw if "baseline" not in r] == [2, 4, 6, 8]
    bw, bp = (torch.load(p / "best.pt", weights_only=True) for p in (whole, Path(part.out)))
    assert bw["step"] == bp["step"] and bw["best"] == bp["best"]
    for k in ("model", "ema"):
        assert all(torch.equal(bw[k][n], bp[k][n]) for n in bw[k]), k
    # the lr logged per step follows the schedule (warm-up, then cosine over the 8 steps)
    lrs = [r["lr"] for r in _rows(whole / "log.jsonl")]
    assert lrs == [schedule.lr_at(s, 1e-3, "cosine", 8, 2) for s in range(8)]
    assert lrs[0] == pytest.approx(5e-4) and lrs[2] == pytest.approx(1e-3)
    with pytest.raises(FitError, match="cosine"):
        loop.fit(replace(part, resume=True, steps=10))
    with pytest.raises(FitError, match="ema"):
        loop.fit(replace(part, resume=True, ema=0.5))


def test_best_checkpoint_follows_select_and_grids_show_every_validation(shards, tmp_path):
    run = loop.fit(_cfg(shards, tmp_path / "run", steps=6, val_every=2, select="l2"))
    rows = [r for r in _rows(run / "val.jsonl") if "baseline" not in r]
    best = min(rows, key=lambda r: r["l2"])
    ck = torch.load(run / "best.pt", weights_only=True)
    assert ck["step"] == best["step"] and ck["best"]["value"] == pytest.approx(best["l2"])
    assert ck["best"]["metric"] == "l2" and torch.load(run / "last.pt", weights_only=True)["step"] == 6
    grids = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert grids == ["step_0000002.png", "step_0000004.png", "step_0000006.png"]
    img = np.asarray(Image.open(run / "samples" / grids[-1]))
    assert img.shape[0] > 8 * 144 and img.shape[1] >= 3 * 144            # 8 rows of gray | prediction | truth
    with pytest.raises(FitError, match="unknown figure"):
        loop.fit(_cfg(shards, tmp_path / "bad", select="sharpness"))
    with pytest.raises(FitError, match="no CE"):
        loop.fit(_cfg(shards, tmp_path / "bad2", loss="l2", select="ce"))


def test_several_validation_folders_are_reported_under_their_names(shards, tmp_path):
    import shutil
    other = Path(shutil.copytree(shards, tmp_path / "scenes"))
    res = CliRunner().invoke(cli, ["fit", "--data", str(shards), "--out", str(tmp_path / "run"), "--model", "tiny",
                                   "--crop", "48", "--batch-size", "8", "--steps", "3", "--workers", "0",
                                   "--val-data", str(shards), "--val-data", str(other), "--val-limit", "3",
                                   "--select", "scenes:auc", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = _rows(tmp_path / "run" / "val.jsonl")
    assert {(r["folder"], r.get("baseline")) for r in rows} == {(shards.name, None), ("scenes", None),
                                                                (shards.name, "gray"), ("scenes", "gray")}
    assert "val step 3 scenes" in res.output
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["best"]["folder"] == "scenes"


def test_grad_clip_bounds_the_applied_gradient_and_logs_the_norm(shards, tmp_path):
    from trainer.step import clip_gradients
    net = torch.nn.Linear(3, 1)
    (net(torch.full((4, 3), 100.0)) ** 2).mean().backward()
    norm = clip_gradients(list(net.parameters()), clip=0.5)
    total = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters()))
    assert norm.item() > 10 and total.item() == pytest.approx(0.5, rel=1e-4)
    rows = _rows(loop.fit(_cfg(shards, tmp_path / "run", steps=2, val_every=-1, grad_clip=1e-3)) / "log.jsonl")
    assert all(r["grad_norm"] > 1e-3 for r in rows)              # the norm before clipping is logged


def test_tensorboard_present_gets_scalars_and_grids(shards, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = loop.fit(_cfg(shards, tmp_path / "run", steps=4, val_every=2))
    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", f"val/{shards.name}/auc_rebalanced"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert "samples" in tags["images"]


def test_tensorboard_absent_changes_nothing_but_one_line(shards, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)          # `import tensorboard` now fails
    assert not tb.available()
    run = loop.fit(_cfg(shards, tmp_path / "run", steps=2, val_every=2))
    out = capsys.readouterr().out
    assert out.count("tensorboard is not installed") == 1
    assert not (run / "tb").exists() and (run / "val.jsonl").exists() and len(_rows(run / "log.jsonl")) == 2
