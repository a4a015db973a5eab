"""Checkpoints: weights-only loading refuses pickled code, truncation is a clear error, saves are atomic."""
import errno
import os

import pytest
import torch
from click.testing import CliRunner

from cli import cli
from trainer import checkpoint
from colorfast.loader import load_colorizer


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": _Payload(str(marker))}, path)
    assert not marker.exists()                           # saving does not run it; only a full unpickle would
    with pytest.raises(checkpoint.CheckpointError, match="refused: it holds pickled Python objects"):
        checkpoint.load_any(path)
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        load_colorizer(path)
    assert not marker.exists()


def test_a_file_that_is_no_checkpoint_is_named_as_such_not_as_pickled_code(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("# not a checkpoint\n")
    with pytest.raises(checkpoint.CheckpointError, match="notes.pt: not a PyTorch checkpoint"):
        checkpoint.load_any(text)


@pytest.fixture()
def good(tmp_path):
    return checkpoint.save(tmp_path / "last.pt", {"model": {"w": torch.arange(50000.0)}, "step": 3})


def test_truncated_checkpoint_is_a_clear_error(good, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError, match="cut.pt: damaged, truncated or not a PyTorch checkpoint"):
        checkpoint.load(bad)
    res = CliRunner().invoke(cli, ["fit", "--init", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    assert res.exit_code == 1 and "truncated" in res.output and "Traceback" not in res.output


def test_save_is_atomic_a_failed_save_keeps_the_previous_file(good, monkeypatch):
    before = good.read_bytes()

    def dies_mid_write(obj, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(OSError, match="No space"):
        checkpoint.save(good, {"model": {}, "step": 4})
    assert good.read_bytes() == before and os.listdir(good.parent) == ["last.pt"]
    assert checkpoint.load_any(good)["step"] == 3


def test_bare_state_dict_is_not_a_resumable_checkpoint(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "sd.pt")
    with pytest.raises(checkpoint.CheckpointError, match="not a colorfast training checkpoint"):
        checkpoint.load(tmp_path / "sd.pt")
    with pytest.raises(checkpoint.CheckpointError, match="neither a colorfast checkpoint nor a released"):
        load_colorizer(tmp_path / "sd.pt")
