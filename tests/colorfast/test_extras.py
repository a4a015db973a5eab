"""A command whose optional extra is missing says in one line what to install (simulated: sys.modules[name] = None)."""
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast.extras import MissingExtra, require


def test_require_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)             # `import onnxruntime` now fails
    with pytest.raises(MissingExtra, match=r"needs onnxruntime, which is not installed: pip install 'colorfast\[onnx\]'"):
        require("json", "onnxruntime", extra="onnx", what="this")
    assert require("json", extra="onnx", what="this")[0].__name__ == "json"


def one_line_error(res):
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    lines = res.output.strip().split("\n")
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.mark.parametrize("module", ["onnx", "onnxscript"])
def test_export_without_the_onnx_extra(monkeypatch, tiny_runs, tmp_path, module):
    monkeypatch.setitem(sys.modules, module, None)
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(tiny_runs[1]["ce"]), "--out", str(tmp_path / "m.onnx")])
    line = one_line_error(res)
    assert module in line and "pip install 'colorfast[onnx]'" in line
    assert not (tmp_path / "m.onnx").exists()


def test_colorize_runtime_onnx_without_onnxruntime(monkeypatch, tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")                  # never opened: the import fails first
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "p.png")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "p.png"), "--checkpoint", str(tmp_path / "m.onnx"),
                                   "--runtime", "onnx", "--out", str(tmp_path / "o")])
    line = one_line_error(res)
    assert "--runtime onnx needs onnxruntime" in line and "pip install 'colorfast[onnx]'" in line


def test_bench_colorize_without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    res = CliRunner().invoke(cli, ["bench", "colorize", "--model", "tiny", "--repeats", "1"])
    line = one_line_error(res)
    assert "pip install 'colorfast[onnx]'" in line


def test_the_onnx_extra_is_declared_and_installed_by_make():
    import configparser
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    onnx_extra = cfg["options.extras_require"]["onnx"]
    assert all(p in onnx_extra for p in ("onnx", "onnxscript", "onnxruntime"))
    assert "onnx" in (root / "Makefile").read_text().split(".[")[1].split("]")[0].split(",")
