"""`cli.py bench hints` (colorfast/bench/hints.py, formerly tools/hint_latency.py): one hint update of the web
page, torch against ONNX Runtime, two real servers."""
import json

import pytest
from click.testing import CliRunner

import cli

pytest.importorskip("fastapi", reason="serve needs the web extra: pip install 'colorfast[web]'")
pytest.importorskip("onnxruntime", reason="the ONNX side needs the onnx extra: pip install 'colorfast[onnx]'")
pytest.importorskip("onnxscript", reason="the export needs the onnx extra: pip install 'colorfast[onnx]'")


def test_bench_hints_times_both_runtimes_with_the_hints_applied():
    result = CliRunner().invoke(cli.cli, ["bench", "hints", "--tiny", "--requests", "1", "--size", "64"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    fig = json.loads(lines[-1])
    assert fig["photo"].startswith("1155x866") and fig["model"] == "siggraph17-tiny (random weights)"
    assert fig["size"] == 64 and fig["requests"] == 1 and fig["onnx_parity_ab"] is not None
    for runtime, row, served in (("torch", "| torch CPU |", ".pt"), ("onnx", "| ONNX Runtime CPU |", ".onnx")):
        f = fig[runtime]
        assert f["served"].endswith(served)                        # each runtime had its own server and file
        assert f["hints_change_png"] is True                      # the hints reached the network
        assert 0 < f["update_server_s_median"] <= f["update_s_median"] and f["update_s_min"] <= f["update_s_median"]
        assert f["suggest_s_median"] > 0
        assert any(line.startswith(row) for line in lines)
    assert "| hint update: request, median |" in result.output
