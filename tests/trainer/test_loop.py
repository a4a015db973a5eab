"""fit(): logs, checkpoints, exact resume, the non-finite guard, data verification, a 2-process gloo run, a stop
on SIGINT/SIGTERM that resumes exactly, and option validation."""
import json
import os
import shlex
import signal
import time
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from pipeline import contract
from trainer import loop, schedule
from trainer.config import FitConfig, FitError
from colorfast.loader import load_colorizer
from trainer.synthetic import write_synthetic_shards

ROOT = Path(__file__).resolve().parents[2]


def _cfg(shards, out, **kw):
    return FitConfig(**{**dict(data=str(shards), out=str(out), model="tiny", loss="ce", crop=48, batch_size=8,
                               steps=8, save_every=3, workers=0, lr=1e-3, seed=5), **kw})


def _log(run):
    return [json.loads(ln) for ln in (Path(run) / "log.jsonl").read_text().splitlines()]


def test_log_checkpoint_and_colorizer(shards, tmp_path):
    run = loop.fit(_cfg(shards, tmp_path / "run", steps=7, block=0.5))
    rows = _log(run)
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert all(np.isfinite(r["loss"]) and "ce_unweighted" in r and "block" in r for r in rows)
    assert rows[-1]["epoch"] == 1                       # 48 samples / 8 = 6 steps per epoch
    col = load_colorizer(run / "last.pt")
    assert col.loss == "ce" and col.prior["prob"].shape == (len(col.centers),)
    assert json.loads((run / "config.json").read_text())["block"] == 0.5
    with pytest.raises(FitError, match="already holds a run"):
        loop.fit(_cfg(shards, tmp_path / "run"))


def test_stopped_and_crashed_runs_resume_to_the_same_losses(shards, tmp_path, monkeypatch):
    whole = [r["loss"] for r in _log(loop.fit(_cfg(shards, tmp_path / "whole")))]
    part = _cfg(shards, tmp_path / "part")
    loop.fit(replace(part, steps=4))                    # stopped mid-epoch after step 4 (checkpoint at 4)
    # continue, but crash after step 7 has been logged: the last checkpoint is step 6 (save_every 3)
    real_save = loop.checkpoint.save

    def save_then_crash(path, payload):
        real_save(path, payload)
        if payload["step"] == 6:
            monkeypatch.setattr(loop.json, "dumps", crash_at_step_8)

    def crash_at_step_8(obj, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == 8:
            raise KeyboardInterrupt("simulated crash")
        return json.JSONEncoder().encode(obj)
    monkeypatch.setattr(loop.checkpoint, "save", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(replace(part, resume=True))
    monkeypatch.undo()
    assert [r["step"] for r in _log(part.out)] == [1, 2, 3, 4, 5, 6, 7]
    assert torch.load(Path(part.out) / "last.pt", weights_only=True)["step"] == 6
    loop.fit(replace(part, resume=True))                # loses only step 7, recomputed
    rows = _log(part.out)
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert [r["loss"] for r in rows] == whole
    with pytest.raises(FitError, match="options differ from the stopped run.*lr"):
        loop.fit(replace(part, resume=True, lr=1e-2, steps=10))


def test_non_finite_loss_stops_naming_the_batch(tmp_path):
    data = write_synthetic_shards(tmp_path / "nan", n=8, size=32, per_shard=8)
    with contract.open_shard(data / "train-00000.h5") as sh:
        arr = {k: v for k, v in sh.read(slice(None)).items()}
        keys = sh.keys()
    arr["nn_w"][5, :, 2, 3] = np.nan                     # one corrupt pixel of one sample
    contract.write_shard(data / "train-00000.h5", **arr, keys=keys)
    res = CliRunner().invoke(cli, ["fit", "--data", str(data), "--out", str(tmp_path / "run"), "--model", "tiny",
                                   "--crop", "32", "--batch-size", "8", "--steps", "2", "--workers", "0",
                                   "--verify", "off"])
    assert res.exit_code == 1, res.output
    assert "non-finite loss" in res.output and keys[5] in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_fit_refuses_a_folder_that_fails_verification(shards, tmp_path):
    import shutil
    bad = Path(shutil.copytree(shards, tmp_path / "bad"))
    (bad / "train-00001.h5").unlink()
    res = CliRunner().invoke(cli, ["fit", "--data", str(bad), "--out", str(tmp_path / "run"), "--model", "tiny"])
    assert res.exit_code == 1 and "failed verification" in res.output and "train-00001.h5" in res.output


def test_two_process_gloo_run_logs_once_and_saves(shards, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "cli.py", "fit",
           "--data", str(shards), "--out", str(out), "--model", "tiny", "--crop", "32", "--batch-size", "4",
           "--steps", "3", "--workers", "0", "--device", "cpu", "--lr", "1e-3", "--lr-schedule", "cosine",
           "--warmup", "1", "--ema", "0.9"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["samples"] == 3 * 4 * 2
    assert [r["lr"] for r in rows] == [schedule.lr_at(s, 1e-3, "cosine", 3, 1) for s in range(3)]
    assert torch.load(out / "last.pt", weights_only=True)["ema_updates"] == 3
    assert load_colorizer(out / "last.pt").model.out_channels > 2
    assert res.stdout.count("run: ") == 1, res.stdout                # printed by rank 0 only


def test_a_nan_in_rank_1s_batch_is_named_with_its_rank_and_keys_by_every_rank(shards, tmp_path):
    """Under torchrun the skipped step's report is gathered from every rank, so rank 0 (and the log a user
    reads first) names rank 1's batch and the sample in it, not "another rank's batch"."""
    import shutil

    import h5py
    from trainer.data import EpochSampler, ShardDataset
    data = Path(shutil.copytree(shards, tmp_path / "data"))
    ds = ShardDataset(data, "train", crop=32, flip=True, seed=5)
    first = int(EpochSampler(ds, num_replicas=2, rank=1, seed=5).order(0)[0])     # rank 1's first sample
    shard = int(np.searchsorted(ds.starts, first, side="right") - 1)
    path, row = ds.paths[shard], first - int(ds.starts[shard])
    ds.close()
    with h5py.File(path, "r+") as h:
        nn_w = h["nn_w"][row]
        h["nn_w"][row] = np.full_like(nn_w, np.nan)
        key = h["key"][row].decode()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "cli.py", "fit",
           "--data", str(data), "--out", str(tmp_path / "run"), "--model", "tiny", "--crop", "32", "--batch-size",
           "2", "--steps", "3", "--workers", "0", "--device", "cpu", "--seed", "5", "--verify", "off"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert res.returncode != 0
    reports = [ln for ln in (res.stdout + res.stderr).splitlines() if "non-finite loss (nan) at step 1" in ln]
    assert reports and all(f"rank 1's batch, keys [" in ln and repr(key) in ln for ln in reports), res.stderr[-3000:]
    assert "another rank" not in res.stdout + res.stderr


@pytest.mark.parametrize("args", [["fit"], ["bench", "step"], ["bench", "loader"], ["bench", "epoch"]])
def test_help(args):
    res = CliRunner().invoke(cli, [*args, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_resume_refuses_shards_whose_bins_changed(shards, tmp_path):
    import shutil
    data = Path(shutil.copytree(shards, tmp_path / "data"))
    cfg = _cfg(data, tmp_path / "run", steps=1)
    loop.fit(cfg)
    p = contract.Prior.load(data / contract.PRIOR)
    centers = p.centers.copy()
    centers[0] += 10
    replace(p, centers=centers).save(data / contract.PRIOR)
    with pytest.raises(FitError, match="ab bins changed"):
        loop.fit(replace(cfg, resume=True, steps=2, verify="off"))


def _fit_cmd(shards, out, *extra):
    return [sys.executable, "cli.py", "fit", "--data", str(shards), "--out", str(out), "--model", "tiny",
            "--crop", "32", "--batch-size", "4", "--lr", "1e-3", "--seed", "5", "--save-every", "1000",
            "--device", "cpu", "--log-every", "1", *extra]


def _signal_after_first_step(cmd, sig, out, timeout=120):
    """Start cmd in its own session, send sig once log.jsonl has a row (cmd logs every step: --log-every 1) to
    the whole process group, as a terminal's Ctrl-C does (DataLoader workers get it too); return the finished
    process's (rc, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not ((out / "log.jsonl").exists() and (out / "log.jsonl").read_text().strip()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stdout, stderr


def test_ctrl_c_saves_the_step_and_its_resume_command_continues_exactly(shards, tmp_path):
    # the reference runs as a subprocess too: the same environment, so the same thread count (the float sums
    # of a CPU step depend on it, and an earlier test may have set OMP_NUM_THREADS in this process's environ)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ref = subprocess.run(_fit_cmd(shards, tmp_path / "whole", "--steps", "40", "--workers", "1"), cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ref.returncode == 0, ref.stderr[-2000:]
    whole = [r["loss"] for r in _log(tmp_path / "whole")]
    out = tmp_path / "run"
    rc, _, err = _signal_after_first_step(_fit_cmd(shards, out, "--steps", "40", "--workers", "1"),
                                          signal.SIGINT, out)
    assert rc == 128 + signal.SIGINT, err[-2000:]
    assert "Traceback" not in err and "Aborted" not in err
    stopped = _log(out)[-1]["step"]
    assert 1 <= stopped < 40 and [r["step"] for r in _log(out)] == list(range(1, stopped + 1))
    assert torch.load(out / "last.pt", weights_only=True)["step"] == stopped      # every logged step is saved
    assert f"stopped by SIGINT after step {stopped} of 40" in err
    resume = shlex.split(err.split("resume with: ")[1].splitlines()[0])
    assert resume[-1] == "--resume"
    res = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["loss"] for r in _log(out)] == whole


def test_sigterm_stops_after_the_step_with_a_checkpoint(shards, tmp_path):
    out = tmp_path / "run"
    # to the process group, as torchrun and batch schedulers send it: the loader worker must not die of it
    rc, _, err = _signal_after_first_step(_fit_cmd(shards, out, "--steps", "200", "--workers", "1"),
                                          signal.SIGTERM, out)
    assert rc == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert torch.load(out / "last.pt", weights_only=True)["step"] == _log(out)[-1]["step"] < 200


def test_a_second_signal_stops_at_once():
    from trainer.stop import GracefulStop
    seen = []
    # the suite may run with SIGINT ignored (started in the background by a non-interactive shell): start from
    # Python's own handler, and check that the stopper puts back whatever it found
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with GracefulStop(announce=seen.append) as stopper:
            os.kill(os.getpid(), signal.SIGINT)
            assert stopper.requested and "finishing the current step" in seen[0]
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)                                # the handler runs before this ends
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_two_process_run_stops_together_on_ctrl_c(shards, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "cli.py", "fit",
           "--data", str(shards), "--out", str(out), "--model", "tiny", "--crop", "32", "--batch-size", "4",
           "--steps", "500", "--save-every", "1000", "--workers", "1", "--device", "cpu", "--log-every", "1"]
    # torchrun runs each rank in a session of its own and forwards the signal to it (and its loader workers)
    rc, stdout, err = _signal_after_first_step(cmd, signal.SIGINT, out)
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == _log(out)[-1]["step"] < 500 and ck["world_size"] == 2
    assert err.count("resume with: torchrun --nproc-per-node=2 cli.py fit") == 1, err[-3000:]
    assert "exited unexpectedly" not in err and "run: " not in stdout


@pytest.mark.parametrize("args,message", [
    (["--lr", "-1"], "'--lr': -1.0 is not in the range x>0"),
    (["--lr", "nan"], "'--lr': nan is not a finite number"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (["--steps", "-5"], "'--steps': -5 is not in the range x>=0"),
    (["--crop", "100"], "'--crop': 100: must be a positive multiple of 8"),
    (["--weight-decay", "-0.1"], "'--weight-decay': -0.1 is not in the range x>=0"),
    (["--workers", "-1"], "'--workers': -1 is not in the range x>=0"),
    (["--alpha", "-2"], "'--alpha': -2.0 is not in the range x>=0"),
    (["--gamma", "inf"], "'--gamma': inf is not a finite number"),
    (["--save-every", "0"], "'--save-every': 0 is not in the range x>=1"),
])
def test_invalid_numbers_are_one_line_errors(shards, tmp_path, args, message):
    res = CliRunner().invoke(cli, ["fit", "--data", str(shards), "--out", str(tmp_path / "run"), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field,value", [("lr", -1.0), ("lr", 0.0), ("lr", float("nan")), ("weight_decay", -1e-3),
                                         ("beta", -1.0), ("gamma", float("inf")), ("block", -0.5), ("epochs", -1),
                                         ("workers", -2), ("crop", 20), ("batch_size", 0)])
def test_fit_config_refuses_invalid_numbers_from_python(field, value):
    with pytest.raises(FitError, match=f"--{field.replace('_', '-')}"):
        FitConfig(**{field: value})


def test_a_nan_at_a_chosen_step_is_caught_at_the_next_read_and_never_applied(shards, tmp_path, monkeypatch):
    """The step does not sync: the NaN of step 3 is found at the read-back of step 4 (log_every 2), its update
    was skipped on the device (weights and Adam's step count as before it), and the error names its batch."""
    seen = {}

    class NaNAtStep3(loop.TrainStep):
        calls = 0

        def __call__(self, batch):
            NaNAtStep3.calls += 1
            model = self.net
            before = [p.detach().clone() for p in model.parameters()]
            if NaNAtStep3.calls == 3:
                batch = {**batch, "nn_w": torch.full_like(batch["nn_w"], float("nan"))}
                seen["keys"] = batch["key"]
            res = super().__call__(batch)
            after = list(model.parameters())
            seen[NaNAtStep3.calls] = (all(torch.equal(a, b) for a, b in zip(before, after)),
                                      int(next(iter(self.opt.state.values()))["step"]))
            return res
    monkeypatch.setattr(loop, "TrainStep", NaNAtStep3)
    with pytest.raises(loop.NonFiniteLoss, match=r"non-finite loss \(nan\) at step 3, batch keys") as e:
        loop.fit(_cfg(shards, tmp_path / "run", steps=8, log_every=2, save_every=100))
    assert str(seen["keys"]) in str(e.value)
    assert seen[3] == (True, 2)                         # step 3: nothing changed, Adam still at step 2
    assert seen[2] == (False, 2) and seen[4] == (False, 3)    # the others update (step 4 ran before the read)
    assert [r["step"] for r in _log(tmp_path / "run")] == [1, 2]
    assert not (tmp_path / "run" / "last.pt").exists()


def test_compile_trains_like_eager_and_resumes_across_both(shards, tmp_path):
    """fit --compile (torch.compile of network and loss, inductor on the CPU) gives eager's losses to a
    tolerance; a run resumes from compiled to eager and from eager to compiled (inside the lr warm-up, with the
    EMA); checkpoint keys stay clean."""
    cfg = lambda out, **kw: _cfg(shards, tmp_path / out, steps=2, crop=32, batch_size=4, warmup=3, ema=0.9, **kw)
    import shutil
    loop.fit(cfg("eager"))
    shutil.copytree(tmp_path / "eager", tmp_path / "eager_then_compiled")
    loop.fit(replace(cfg("eager"), steps=4, resume=True))
    ref = [r["loss"] for r in _log(tmp_path / "eager")]
    from torch._dynamo.utils import counters
    graphs = counters["stats"]["unique_graphs"]
    loop.fit(cfg("compiled", compile=True))
    assert counters["stats"]["unique_graphs"] > graphs                             # it really was compiled
    keys = torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["model"].keys()
    assert keys == dict(load_colorizer(tmp_path / "eager" / "last.pt").model.state_dict()).keys()
    assert not any("_orig_mod" in k or "module." in k for k in keys)
    loop.fit(replace(cfg("compiled"), steps=4, resume=True))                       # compiled -> eager
    loop.fit(replace(cfg("eager_then_compiled", compile=True), steps=4, resume=True))  # eager -> compiled
    for run in ("compiled", "eager_then_compiled"):
        got = [r["loss"] for r in _log(tmp_path / run)]
        # inductor reorders float sums: after 3 Adam steps the drift depends on the batches (1.05e-4 at step 4 with
        # the shard-aware sampler's order, under 1e-4 with the previous one; 4.2e-4 since the reference loss
        # reduction divides Adam's eps by (crop/4)^2, so parameters with tiny gradients take near-sign steps that
        # carry the reordering further), so the bound leaves room for that
        assert got == pytest.approx(ref, rel=1e-3), run
