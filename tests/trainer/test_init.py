"""The data-dependent init (trainer/init.py) on real photos: every conv leaves it with unit output variance layer
by layer, the classifier near-uniform, deterministic for a seed, applied by `fit` from scratch only."""
import json

import numpy as np
import pytest
import torch

from pipeline import contract
from trainer import init as data_init
from trainer.config import FitConfig
from trainer.data import ShardDataset
from trainer.loop import build_model, fit
from trainer.scoring import shard_samples

CROP = 48


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """scikit-image's colour photos preprocessed at 64 px: real L, 10 train + 1 test samples."""
    from pipeline.config import PrepConfig
    from pipeline.preprocess import run as preprocess
    out = tmp_path_factory.mktemp("photos") / "shards"
    preprocess(PrepConfig(dataset="sample", out_dir=str(out), size=64, jobs=1))
    return out


def conv_stds(model, L):
    """Output std of every conv (before its ReLU / BatchNorm) in one ordinary forward, train-mode BatchNorm."""
    stds, hooks = {}, []
    for name, m in data_init.convs_in_order(model):
        hooks.append(m.register_forward_hook(lambda mod, inp, out, name=name: stds.__setitem__(name, float(out.std()))))
    model.train()
    with torch.no_grad():
        model(L)
    for h in hooks:
        h.remove()
    return stds


def model_for(photos, name="tiny", data_init_mode="lsuv"):
    cfg = FitConfig(data=str(photos), model=name, crop=CROP, data_init=data_init_mode)
    return cfg, build_model(cfg, contract.Prior.load(photos / contract.PRIOR))


@pytest.mark.parametrize("name", ["tiny", "eccv16"])
def test_every_conv_has_unit_output_variance_after_the_init(photos, name):
    cfg, model = model_for(photos, name)
    dataset = ShardDataset(photos, "train", CROP, True, cfg.seed)
    L = data_init.init_crops(dataset, 8, cfg.seed)
    default = conv_stds(model, L)
    bn_before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    data_init.apply("lsuv", model, dataset, 8, cfg.seed, echo=None)
    bn_after = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    after = conv_stds(model, L)
    *trunk, head = after
    # on the crops it measured: unit std at every conv (tolerance 1 %: float rounding only), head at HEAD_STD
    assert all(abs(after[k] - 1) < 0.01 for k in trunk), after
    assert abs(after[head] - data_init.HEAD_STD) < 0.01 * data_init.HEAD_STD
    # torch's default shrinks the signal after the last BatchNorm (model8): what the init is for
    assert default["model8.4"] < 0.3 and default[head] < 0.3, default
    # on other real crops (the held-out photo, whole 64 px squares): still ~unit, layer by layer (within 2x)
    held = torch.from_numpy(np.stack([s.L for s in shard_samples(photos, None, 4)]))[:, None]
    other = conv_stds(model, held)
    assert all(0.5 < other[k] < 2 for k in trunk), other
    assert 0.3 * data_init.HEAD_STD < other[head] < 3 * data_init.HEAD_STD
    # only conv weights changed: the BatchNorm running statistics are as they were
    assert all(torch.equal(v, bn_after[k]) for k, v in bn_before.items())


def test_the_init_is_deterministic_for_a_seed(photos):
    states = []
    for seed in (0, 0, 1):
        cfg, model = model_for(photos)
        torch.manual_seed(123 + len(states))                # the global RNG does not matter, the seed does
        data_init.apply("lsuv", model, ShardDataset(photos, "train", CROP, True, seed), 8, seed, echo=None)
        states.append(model.state_dict())
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())
    assert not torch.equal(states[0]["model1.0.weight"], states[2]["model1.0.weight"])


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_fit_applies_it_from_scratch_only_and_records_it(photos, tmp_path):
    base = dict(data=str(photos), model="tiny", loss="ce", steps=1, batch_size=4, crop=CROP, workers=0,
                device="cpu", val_every=-1, lr=1e-9, weight_decay=0)          # lr ~0: last.pt ~ the initial weights
    run = fit(FitConfig(out=str(tmp_path / "scratch"), **base))
    assert json.loads((run / "config.json").read_text())["data_init"] == "lsuv"
    cfg, expected = model_for(photos)
    data_init.apply("lsuv", expected, ShardDataset(photos, "train", CROP, True, 0), cfg.data_init_samples, 0,
                    echo=None)
    got = _weights(run / "last.pt")
    for name, m in data_init.convs_in_order(expected):
        assert torch.allclose(got[f"{name}.weight"], m.weight, atol=1e-6), name
    off = fit(FitConfig(out=str(tmp_path / "off"), data_init="off", **base))
    assert json.loads((off / "config.json").read_text())["data_init"] == "off"
    assert not torch.allclose(_weights(off / "last.pt")["model8.6.weight"], got["model8.6.weight"], atol=1e-3)
    # --init: the weights come from the file, the data init is not applied and is recorded as off
    warm = fit(FitConfig(out=str(tmp_path / "warm"), init=str(off / "last.pt"), **base))
    assert json.loads((warm / "config.json").read_text())["data_init"] == "off"
    assert torch.allclose(_weights(warm / "last.pt")["model8.6.weight"], _weights(off / "last.pt")["model8.6.weight"],
                          atol=1e-6)


def test_resume_does_not_initialise_again(photos, tmp_path):
    base = dict(data=str(photos), model="tiny", loss="ce", batch_size=4, crop=CROP, workers=0, device="cpu",
                val_every=-1, lr=1e-3, log_every=1)
    whole = fit(FitConfig(out=str(tmp_path / "whole"), steps=3, **base))
    fit(FitConfig(out=str(tmp_path / "split"), steps=1, **base))
    split = fit(FitConfig(out=str(tmp_path / "split"), steps=3, resume=True, **base))
    rows = lambda run: [json.loads(x)["loss"] for x in (run / "log.jsonl").read_text().splitlines()]   # noqa: E731
    assert rows(split) == rows(whole)
    # and the option is part of what a resumed run must keep
    with pytest.raises(ValueError, match="data_init"):
        fit(FitConfig(out=str(tmp_path / "split"), steps=4, resume=True, data_init="off", **base))


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="--data-init must be lsuv or off"):
        FitConfig(data_init="kmeans")
    with pytest.raises(ValueError, match="--data-init-samples must be >= 1"):
        FitConfig(data_init_samples=0)


def test_under_torchrun_the_init_is_that_of_one_process(photos, tmp_path):
    """Both ranks draw the same crops from the seed, and DDP starts from rank 0's weights: the run starts from
    the weights a single process computes (lr ~0, so last.pt is the initial weights)."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    opts = ["--data", str(photos), "--model", "tiny", "--crop", str(CROP), "--batch-size", "2", "--steps", "1",
            "--workers", "0", "--device", "cpu", "--val-every", "-1", "--lr", "1e-9", "--weight-decay", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "cli.py", "fit", "--out", str(tmp_path / "ddp"), *opts], cwd=root, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("data init: LSUV") == 1                  # announced by rank 0 only
    one = fit(FitConfig(out=str(tmp_path / "one"), data=str(photos), model="tiny", crop=CROP, batch_size=2, steps=1,
                        workers=0, device="cpu", val_every=-1, lr=1e-9, weight_decay=0))
    a, b = _weights(tmp_path / "ddp" / "last.pt"), _weights(one / "last.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a if k.endswith("weight")), "ranks started elsewhere"


def test_crops_of_one_lightness_are_a_clear_error(photos):
    _, model = model_for(photos)
    with pytest.raises(ValueError, match="outputs a constant on the 2 init crops .* pass --data-init off"):
        data_init.lsuv(model, torch.full((2, 1, CROP, CROP), 50.0), seed=0)
