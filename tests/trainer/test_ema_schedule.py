"""The lr schedules (torch's LambdaLR over a closed-form factor) and the weights' EMA: their formulas, a resume at
any step, checkpoints from before the scheduler, and neither reads a value back from the device."""
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from trainer import checkpoint, loop, schedule
from trainer.config import FitConfig
from trainer.ema import EMA

HOST_SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "equal"}   # .item(), `if t`, t.nonzero()


def _cfg(shards, out, **kw):
    return FitConfig(**{**dict(data=str(shards), out=str(out), model="tiny", loss="ce", crop=48, batch_size=8,
                               steps=8, save_every=3, workers=0, lr=1e-3, seed=5, val_every=-1), **kw})


def _rows(path):
    return [{k: v for k, v in json.loads(ln).items() if k != "elapsed_s"} for ln in Path(path).read_text().splitlines()]


def _taken_lrs(opt, sched, steps):
    """The lr each of `steps` optimiser steps runs with, stepping the scheduler after each as fit does."""
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_schedules_at_chosen_steps():
    ref = 3.16e-5
    assert schedule.lr_at(0, ref, "step") == ref
    assert schedule.lr_at(214_999, ref, "step") == ref                     # 215k iterations of batch 40
    assert schedule.lr_at(215_000, ref, "step") == pytest.approx(ref * 0.316)
    assert schedule.lr_at(430_000, ref, "step") == pytest.approx(ref * 0.316 ** 2)
    assert schedule.lr_at(107_500, ref, "step", global_batch=80) == pytest.approx(ref * 0.316)   # same samples
    assert schedule.lr_at(99, 1.0, "step", step_size=50, gamma=0.5) == 0.5
    assert schedule.lr_at(0, 1.0, "constant", warmup=4) == 0.25 and schedule.lr_at(3, 1.0, warmup=4) == 1.0
    assert schedule.lr_at(4, 1.0, "cosine", total=104, warmup=4) == 1.0
    assert schedule.lr_at(54, 1.0, "cosine", total=104, warmup=4) == pytest.approx(0.5)
    assert schedule.lr_at(103, 1.0, "cosine", total=104, warmup=4) == pytest.approx(0.0, abs=1e-3)


def test_ema_update_by_hand():
    """d = min(decay, (1 + n) / (10 + n)); BatchNorm's running statistics are averaged like the weights, its
    integer step counter copied; a loaded average continues at its count."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    ema = EMA(net, decay=0.99)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].running_mean.fill_(2.0)                  # the shadow's is still 0
    net[1].num_batches_tracked += 7
    ema.update(net)                                  # d = min(0.99, 1/10) = 0.1
    assert torch.allclose(ema.model[0].weight, 0.1 * w0 + 0.9 * (w0 + 1))
    assert ema.model[1].running_mean.item() == pytest.approx(0.9 * 2.0)
    assert ema.model[1].num_batches_tracked.item() == 7
    with torch.no_grad():
        net[0].weight.add_(1.0)
    prev = ema.model[0].weight.clone()
    ema.update(net)                                  # d = 2/11
    assert torch.allclose(ema.model[0].weight, 2 / 11 * prev + 9 / 11 * (w0 + 2))
    assert ema.state_dict().keys() == net.state_dict().keys()      # what checkpoints store as "ema"
    ema.load(ema.state_dict(), updates=5)
    prev = ema.model[0].weight.clone()
    ema.update(net)                                  # d = 6/15
    assert torch.allclose(ema.model[0].weight, 6 / 15 * prev + 9 / 15 * (w0 + 2))
    ema.updates = 10_000
    assert ema.current_decay() == 0.99


def test_the_scheduler_gives_every_step_its_lr_from_scratch_and_from_a_resumed_step():
    kw = dict(schedule="cosine", total=10, warmup=3)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.3)
    whole = _taken_lrs(opt, schedule.create(opt, 0.3, 0, **kw), 10)
    assert whole == [schedule.lr_at(s, 0.3, **kw) for s in range(10)]
    assert whole[:4] == pytest.approx([0.1, 0.2, 0.3, 0.3])                          # warm-up, then the peak
    assert whole[5] == pytest.approx(0.15 * (1 + math.cos(math.pi * 2 / 7)))         # cosine over the 7 steps after it
    # resumed at step 4: an optimiser as a checkpoint restores it (the lr of the last step taken, no initial_lr)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=whole[3])
    assert _taken_lrs(opt, schedule.create(opt, 0.3, 4, **kw), 6) == whole[4:]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    assert _taken_lrs(opt, schedule.create(opt, 1.0, 0, "step", step_size=2, gamma=0.5), 5) == [1, 1, .5, .5, .25]


def test_fit_steps_with_the_scheduled_lr_that_its_log_shows(shards, tmp_path, monkeypatch):
    taken, real_step = [], loop.TrainStep.__call__

    def record(self, batch):
        taken.append(self.opt.param_groups[0]["lr"])          # what Adam runs this step with
        return real_step(self, batch)
    monkeypatch.setattr(loop.TrainStep, "__call__", record)
    run = loop.fit(_cfg(shards, tmp_path / "run", steps=5, lr_schedule="cosine", warmup=2))
    assert taken == [r["lr"] for r in _rows(run / "log.jsonl")] == [schedule.lr_at(s, 1e-3, "cosine", 5, 2)
                                                                     for s in range(5)]


def test_a_checkpoint_from_before_the_torch_scheduler_resumes_to_the_uninterrupted_run(shards, tmp_path, monkeypatch):
    """Checkpoints of the hand-written schedule have no initial_lr in their optimiser groups; one stopped inside the
    warm-up continues to the same log rows (lr included), weights and EMA as the run that never stopped."""
    kw = dict(ema=0.8, lr_schedule="cosine", warmup=5, lr=3e-4)
    whole = loop.fit(_cfg(shards, tmp_path / "whole", **kw))
    part = _cfg(shards, tmp_path / "part", **kw)
    real_save = loop.checkpoint.save

    def save_then_crash(path, payload):
        real_save(path, payload)
        if payload["step"] == 3:
            raise KeyboardInterrupt("simulated crash")
    monkeypatch.setattr(loop.checkpoint, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(part)
    monkeypatch.undo()
    last = Path(part.out) / "last.pt"
    ck = torch.load(last, weights_only=True)
    for g in ck["optimizer"]["param_groups"]:
        del g["initial_lr"]                           # as the hand-written schedule's checkpoints were
    checkpoint.save(last, ck)
    loop.fit(replace(part, resume=True))
    assert _rows(whole / "log.jsonl") == _rows(Path(part.out) / "log.jsonl")
    a, b = (torch.load(p / "last.pt", weights_only=True) for p in (whole, Path(part.out)))
    assert a["ema_updates"] == b["ema_updates"] == 8
    for k in ("model", "ema"):
        assert all(torch.equal(a[k][n], b[k][n]) for n in a[k]), k


class _RecordDevices(TorchDispatchMode):
    """Records every aten op with the devices of its tensor arguments and the device it is sent to."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        leaves = torch.utils._pytree.tree_leaves((args, kwargs))
        devices = {t.device.type for t in leaves if isinstance(t, torch.Tensor)}
        target = (kwargs or {}).get("device")
        self.ops.append((func.overloadpacket.__name__, devices | ({torch.device(target).type} if target else set())))
        return func(*args, **(kwargs or {}))


def test_the_ema_update_and_the_scheduler_step_read_nothing_back_from_the_device():
    """fit runs both after every step: neither may wait for the GPU. The model lives on the meta device, which
    stands in for CUDA: no read of a value (`.item()`, `if t`) and no blocking copy between it and the host
    (torch.optim.swa_utils.AveragedModel fails this: it moves its CPU step counter to the device every update)."""
    with torch.device("meta"):
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    ema = EMA(net, decay=0.999)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = schedule.create(opt, 0.1, 0, "cosine", total=10, warmup=3)
    with _RecordDevices() as rec:
        for _ in range(3):
            opt.step()
            sched.step()
            ema.update(net)
    on_device = [(name, where) for name, where in rec.ops if "meta" in where]
    assert "_foreach_lerp_" in {name for name, _ in on_device}                # the recorder saw the averaging
    assert not {name for name, _ in on_device} & HOST_SYNC_OPS
    crossing = [name for name, where in on_device if "cpu" in where]
    assert not crossing, crossing                                             # no copy host <-> device
    assert ema.updates == 3 and opt.param_groups[0]["lr"] == pytest.approx(0.1)   # the warm-up's third step next
