"""`cli.py bench serve` (colorfast/bench/serve.py, formerly tools/serve_latency.py): a real server's latency per
request for a 1 MP photo, beside the same colorize in-process."""
import json

import pytest
from click.testing import CliRunner

import cli

pytest.importorskip("fastapi", reason="serve needs the web extra: pip install 'colorfast[web]'")


def test_bench_serve_times_a_real_server(tiny_runs):
    _, checkpoints = tiny_runs
    result = CliRunner().invoke(cli.cli, ["bench", "serve", "--checkpoint", str(checkpoints["ce"]), "--requests", "2",
                                          "--size", "64"])
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output.strip().splitlines()[-1])
    assert fig["photo"].startswith("1155x866") and fig["model"] == str(checkpoints["ce"])
    assert 0 < fig["server_work_s_median"] <= fig["request_s_median"]          # the server's own work is part
    assert fig["request_s_min"] <= fig["request_s_median"] and fig["colorize_rgb_s_median"] > 0
    assert fig["concurrent4_s_per_request"] > 0 and "| request (median) |" in result.output
