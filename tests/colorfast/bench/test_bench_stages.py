"""`cli.py bench stages` (colorfast/bench/stages.py, formerly tools/preprocess_stages.py): per-stage ms of a real
preprocess run, whose stages add up to the whole, and preprocess left as it was afterwards."""
import json

from click.testing import CliRunner

import cli
from pipeline import contract, preprocess


def test_bench_stages_splits_a_real_run_into_its_stages():
    real = preprocess.load_rgb, contract.write_shard
    result = CliRunner().invoke(cli.cli, ["bench", "stages", "--images", "20", "--photo", "160", "120"])
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output.strip().splitlines()[-1])
    assert fig["images"] == 20 and fig["decode_only_ms"] > 0
    stages = fig["stages_ms"]
    for stage in ("load_rgb (reduced decode)", "float Lab", "soft encoding", "shard write"):
        assert stages[stage] > 0, stage                   # each timer saw its function called
    assert abs(sum(stages.values()) - fig["pipeline_ms"]) < 0.01 * fig["pipeline_ms"] + 0.01
    assert "shard write" in result.output and "total" in result.output     # the table before the JSON
    assert (preprocess.load_rgb, contract.write_shard) == real            # the timers are removed again
