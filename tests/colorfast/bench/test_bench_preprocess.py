"""`cli.py bench preprocess` (colorfast/bench/preprocess.py): its figures, and a run too short to measure."""
import json

from click.testing import CliRunner

import cli


def test_bench_preprocess_ends_with_its_figures_as_json():
    """The JSON last line carries what the issue asks for, and the breakdown that explains a gap."""
    result = CliRunner().invoke(cli.cli, ["bench", "preprocess", "--images", "20", "--photo", "160", "120",
                                          "--size", "32", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output.strip().splitlines()[-1])
    assert fig["n_small"] == 10 and fig["n_large"] == 20 and fig["jobs"] == 1
    assert fig["pipeline_img_s"] > 0 and fig["decode_img_s"] > 0 and fig["peak_rss_mb"] > 0
    assert fig["ratio"] == round(fig["pipeline_img_s"] / fig["decode_img_s"], 3)
    for side in ("decode", "pipeline"):
        assert fig[f"{side}_cpu_ms"] >= 0 and fig[f"{side}_sys_ms"] >= 0 and fig[f"{side}_faults"] >= 0
        assert 0 <= fig[f"{side}_iowait_share"] <= 1


def test_bench_preprocess_survives_a_side_with_no_cpu_tick(monkeypatch):
    """CPU times tick in 10 ms steps, so a tiny run can measure none: the bench reports the ratio as unknown
    instead of dividing by zero (it did, now and then, in this test suite)."""
    import colorfast.bench.preprocess as bench
    frozen = bench.Usage(1.0, 0.5, 10, 0.0, ((1, 1.0, 0.5, 10),))
    monkeypatch.setattr(bench.Usage, "now", classmethod(lambda cls: frozen))
    result = CliRunner().invoke(cli.cli, ["bench", "preprocess", "--images", "20", "--photo", "160", "120",
                                          "--size", "32", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output.strip().splitlines()[-1])
    assert fig["cpu_ratio_large"] is None and fig["pipeline_cpu_ms"] == 0 and fig["ratio"] > 0
