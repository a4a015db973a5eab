"""The bench commands run end to end on tiny settings and end with the JSON the docs quote (no timings asserted);
the FLOP count and the peak table behind their TFLOP/s and MFU."""
import json

import pytest
from click.testing import CliRunner

from cli import cli
from trainer import flops


def _last_json(res):
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def test_bench_step_reports_ce_l2_and_the_knn_baseline():
    fig = _last_json(CliRunner().invoke(cli, ["bench", "step", "--model", "tiny", "--crop", "32", "--batch-size", "2",
                                              "--steps", "2", "--warmup", "0"]))
    for key in ("ce_step_s", "l2_step_s", "ratio", "knn_baseline_step_s", "knn_encode_s"):
        assert fig[key] > 0, key
    assert fig["model"] == "tiny" and fig["batch_size"] == 2 and fig["crop"] == 32 and fig["steps"] == 2
    # the CPU has no peak: TFLOP/s only, from FLOPs counted for this model, batch and crop
    assert fig["peak_tflops"] is None and fig["ce_mfu"] is None and fig["l2_mfu"] is None
    for loss in ("ce", "l2"):
        f = flops.step_flops("tiny", loss, 2, 32, classes=fig["classes"])
        assert fig[f"{loss}_gflop_per_step"] == round(f / 1e9, 2) > 0
        assert fig[f"{loss}_tflops"] == pytest.approx(f / fig[f"{loss}_step_s"] / 1e12, rel=0.01)


def test_bench_step_mfu_with_a_given_peak():
    fig = _last_json(CliRunner().invoke(cli, ["bench", "step", "--model", "tiny", "--crop", "32", "--batch-size", "2",
                                              "--steps", "1", "--warmup", "0", "--peak-tflops", "0.5"]))
    assert fig["peak_tflops"] == 0.5
    assert fig["ce_mfu"] == pytest.approx(fig["ce_tflops"] / 0.5, abs=2e-4)


def test_step_flops_match_the_ecc16_figure_and_scale_with_the_batch():
    per_sample = flops.step_flops("eccv16", "ce", 1, 176, classes=313)
    assert per_sample / 1e9 == pytest.approx(118, rel=0.01)         # the 118 GFLOP per 176 px sample
    assert flops.step_flops("tiny", "l2", 4, 32) == 4 * flops.step_flops("tiny", "l2", 1, 32)


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756),
                                       ("NVIDIA H200", 989), ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L4", 121),
                                       ("NVIDIA L40S", 362), ("Tesla V100-SXM2-32GB", 125), ("AMD thing", None)])
def test_peak_table(name, peak):
    assert flops.peak_tflops(name) == peak


def test_bench_epoch_interleaves_ce_and_l2_and_reports_tflops(shards):
    fig = _last_json(CliRunner().invoke(cli, ["bench", "epoch", "--data", str(shards), "--model", "tiny",
                                              "--batch-size", "4", "--crop", "32", "--workers", "0",
                                              "--device", "cpu"]))
    assert fig["losses"] == ["ce", "l2"] and fig["ce_steps"] == fig["l2_steps"] == 12      # 48 samples / 4
    for loss in ("ce", "l2"):
        assert fig[f"{loss}_epoch_s"] >= fig[f"{loss}_epoch_after_first_step_s"] > 0
        assert fig[f"{loss}_tflops"] > 0 and fig[f"{loss}_mfu"] is None
    assert fig["ratio"] > 0 and fig["samples"] == 48
    first = [seg.split(":")[0] for seg in fig["order"][::2]]              # who goes first in each round
    assert first[:4] == ["ce", "l2", "ce", "l2"]
    assert sum(int(seg.split(":")[1]) for seg in fig["order"]) == 2 * 11  # every step after the first, once


def test_bench_loader_reports_samples_per_second_per_worker_count(shards):
    fig = _last_json(CliRunner().invoke(cli, ["bench", "loader", "--data", str(shards), "--batch-size", "8",
                                              "--crop", "32", "--batches", "3", "--workers", "0,1"]))
    assert set(fig["samples_s"]) == {"0", "1"} and all(v > 0 for v in fig["samples_s"].values())
    res = CliRunner().invoke(cli, ["bench", "loader", "--data", str(shards), "--batch-size", "400", "--crop", "32"])
    assert res.exit_code == 1 and "fewer than one batch" in res.output
