"""The bench commands run end to end on tiny settings and end with the JSON the docs quote (no timings asserted)."""
import json

from click.testing import CliRunner

from cli import cli


def _last_json(res):
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


def test_bench_step_reports_ce_l2_and_the_knn_baseline():
    fig = _last_json(CliRunner().invoke(cli, ["bench", "step", "--model", "tiny", "--crop", "32", "--batch-size", "2",
                                              "--steps", "2", "--warmup", "0"]))
    for key in ("ce_step_s", "l2_step_s", "ratio", "knn_baseline_step_s", "knn_encode_s"):
        assert fig[key] > 0, key
    assert fig["model"] == "tiny" and fig["batch_size"] == 2 and fig["crop"] == 32 and fig["steps"] == 2


def test_bench_loader_reports_samples_per_second_per_worker_count(shards):
    fig = _last_json(CliRunner().invoke(cli, ["bench", "loader", "--data", str(shards), "--batch-size", "8",
                                              "--crop", "32", "--batches", "3", "--workers", "0,1"]))
    assert set(fig["samples_s"]) == {"0", "1"} and all(v > 0 for v in fig["samples_s"].values())
    res = CliRunner().invoke(cli, ["bench", "loader", "--data", str(shards), "--batch-size", "400", "--crop", "32"])
    assert res.exit_code == 1 and "fewer than one batch" in res.output
