import pytest
from click.testing import CliRunner

import cli
from hostile_files import jpeg_bytes, photo
from pipeline import contract


@pytest.mark.parametrize("args", [["preprocess"], ["prior-plot"]])
def test_help(args):
    result = CliRunner().invoke(cli.cli, [*args, "--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_preprocess_three_images_one_corrupt_then_prior_plot(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("astronaut", "coffee"):
        (root / f"{name}.jpg").write_bytes(jpeg_bytes(photo(name)))
    (root / "broken.jpg").write_bytes(jpeg_bytes(photo("rocket"))[:500])
    out = tmp_path / "shards"
    result = CliRunner().invoke(cli.cli, ["preprocess", "folder", "--root", str(root), "--out", str(out),
                                          "--size", "32", "--jobs", "1", "--shard-size", "2"])
    assert result.exit_code == 0, result.output
    assert "2 written, 1 skipped of 3 inputs" in result.output and "truncated" in result.output
    manifest = contract.read_manifest(out)
    assert manifest["skipped"][0]["key"] == "broken.jpg" and manifest["config"]["size"] == 32

    png = tmp_path / "prior.png"
    result = CliRunner().invoke(cli.cli, ["prior-plot", "--data", str(out), "--out", str(png)])
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


@pytest.mark.parametrize("args, message", [
    (["preprocess", "folder"], "needs --root"),
    (["preprocess", "folder", "--root", "/no/such/dir"], "does not exist"),
    (["preprocess", "sun_scenes", "--root", "{tmp}"], "Training_01.txt and Testing_01.txt not found"),
    (["preprocess", "sample", "--size", "30"], "multiple of 4"),
    (["prior-plot", "--data", "{tmp}"], "run `cli.py preprocess` first"),
])
def test_bad_input_is_a_message_not_a_traceback(tmp_path, args, message):
    result = CliRunner().invoke(cli.cli, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code != 0 and message in result.output, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (TypeError, KeyError))
