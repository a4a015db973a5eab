"""`cli.py bench memory` (colorfast/bench/memory.py, formerly tools/colorize_memory.py): colorize's peak memory
per photo size, each in its own process."""
import json

from click.testing import CliRunner

import cli


def test_bench_memory_measures_colorize_per_photo(tmp_path):
    result = CliRunner().invoke(cli.cli, ["bench", "memory", "--size", "640x480", "--input", "png"])
    assert result.exit_code == 0, result.output
    fig = json.loads(result.output.strip().splitlines()[-1])
    base, photo = fig["photos"]
    assert (base["photo"], photo["photo"], fig["input"]) == ("256x256", "640x480", "png")
    assert 50 < base["peak_rss_mb"] < 4000 and base["wall_s"] > 0     # a real process: Python, torch, the model
    assert photo["megapixels"] == 0.31 and "bytes_per_pixel_above_256px" in photo


def test_bench_memory_says_when_colorize_fails(tmp_path):
    bad = tmp_path / "not_a_checkpoint.pt"
    bad.write_text("hello")
    result = CliRunner().invoke(cli.cli, ["bench", "memory", "--size", "300x200", "--checkpoint", str(bad)])
    assert result.exit_code == 1 and "colorize failed on photo_256x256.jpg" in result.output
    assert "Traceback" not in result.output


def test_bench_memory_rejects_a_malformed_size():
    result = CliRunner().invoke(cli.cli, ["bench", "memory", "--size", "big"])
    assert result.exit_code == 2 and "expected sizes like 5120x2880" in result.output
