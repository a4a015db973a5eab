"""`cli.py bench colorize`: torch and onnxruntime on the same photos, figures as JSON on the last line."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")


def test_bench_colorize_ends_with_its_figures_as_json(tmp_path):
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(60, 80), (96, 64)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    res = CliRunner().invoke(cli, ["bench", "colorize", "--model", "tiny", "--images", str(tmp_path), "--size", "32",
                                   "--repeats", "2"])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.output.strip().splitlines()[-1])
    assert figures["photos"] == 2 and figures["megapixels"] == pytest.approx((60 * 80 + 96 * 64) / 1e6, abs=1e-3)
    for side in ("torch", "onnx"):
        assert figures[f"{side}_s_per_mp"] > 0 and figures[f"{side}_net_ms"] > 0
    assert figures["torch_over_onnx"] == pytest.approx(figures["torch_s_per_mp"] / figures["onnx_s_per_mp"], rel=0.01)
    assert figures["max_abs_delta_ab"] <= 1e-3
    assert "repeat 2/2" in res.output
