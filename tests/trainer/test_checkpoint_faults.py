"""Damaged, crafted and unwritable checkpoints: a flipped byte is refused naming the file, a file that claims
the format but lacks or twists its parts is one line (colorize, fit --resume, fit --init), and a full disk or
a read-only run dir stops fit in one line with the previous last.pt intact."""
import errno
import os
import resource
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast.loader import load_colorizer
from trainer import checkpoint

ROOT = Path(__file__).resolve().parents[2]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def data_offset(path: Path) -> int:
    """An offset in the middle of the largest tensor's bytes of a torch.save zip."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "rb") as f:                     # local header: 30 bytes, then the name and the extra field
        f.seek(info.header_offset + 26)
        n, m = np.frombuffer(f.read(4), "<u2")
    return info.header_offset + 30 + int(n) + int(m) + info.file_size // 2


def one_line_error(res, *fragments) -> str:
    """The CLI stopped with exit 1 and a single `Error: ...` line holding every fragment; no traceback."""
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, (res.exception, res.output)
    assert "Traceback" not in res.output, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and res.stderr.rstrip().splitlines()[-1] == errors[0], res.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])
    return errors[0]


@pytest.fixture()
def run(tiny_runs, tmp_path):
    """A copy of the tiny CE run dir (its last.pt is a real 2-step checkpoint) and the fit arguments that
    resume it."""
    data, cks = tiny_runs
    run = tmp_path / "run"
    shutil.copytree(cks["ce"].parent, run)
    args = ["fit", "--data", str(data), "--out", str(run), "--model", "tiny", "--loss", "ce", "--batch-size", "4",
            "--crop", "32", "--workers", "0", "--device", "cpu", "--lr", "0.001", "--steps", "4"]
    return run, args


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)).save(path)
    return path


def colorize(ckpt, image, tmp_path):
    return CliRunner().invoke(cli, ["colorize", str(image), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"),
                                    "--device", "cpu", "--size", "32"])


# ---- damage -------------------------------------------------------------------------------------------------
def test_a_flipped_byte_in_the_weights_is_refused_naming_the_file(run, image, tmp_path):
    run_dir, args = run
    last = run_dir / "last.pt"
    flip(last, data_offset(last))
    damaged = last.read_bytes()
    assert torch.load(last, weights_only=True)["model"]         # torch itself loads it without a word
    with pytest.raises(checkpoint.CheckpointError, match="last.pt: checksum mismatch \\(the file is damaged\\)"):
        checkpoint.load_any(last)
    one_line_error(colorize(last, image, tmp_path), str(last), "checksum mismatch")
    one_line_error(CliRunner().invoke(cli, args + ["--resume"]), str(last), "checksum mismatch")
    assert last.read_bytes() == damaged                          # not trained on, not replaced


def test_every_single_flipped_byte_is_refused_or_changes_nothing(tmp_path):
    torch.manual_seed(0)
    good = checkpoint.save(tmp_path / "good.pt", {
        "model": {"conv.weight": torch.randn(6, 3), "conv.bias": torch.randn(6), "n": torch.tensor(3)},
        "model_name": "tiny", "loss": "ce", "config": {"lr": 0.001, "val_data": ["a", "b"]}, "step": 3,
        "rng": torch.get_rng_state()[:32]})
    ref, data = checkpoint.load_any(good), good.read_bytes()
    bad, outcomes = tmp_path / "bad.pt", {"refused": 0, "same": 0}
    for i in range(0, len(data), 3):                             # every third byte: zip headers, pickle, tensors
        b = bytearray(data)
        b[i] ^= 0x10
        bad.write_bytes(bytes(b))
        try:
            got = checkpoint.load_any(bad)
        except checkpoint.CheckpointError as e:
            assert str(e).startswith(f"{bad}: ") and "\n" not in str(e)
            outcomes["refused"] += 1
            continue
        # it loaded: then it must be what was saved (a flip in zip padding or a timestamp changes nothing)
        assert checkpoint.checksum_of(got) == checkpoint.checksum_of(ref), i
        outcomes["same"] += 1
    assert outcomes["refused"] > 300 and outcomes["same"] > 0, outcomes


def test_a_checkpoint_without_checksum_loads_with_a_warning(tiny_runs, tmp_path, capsys):
    ck = torch.load(tiny_runs[1]["ce"], weights_only=True)
    del ck[checkpoint.CHECKSUM]                                  # as colorfast saved them before checksums
    torch.save(ck, tmp_path / "old.pt")
    col = load_colorizer(tmp_path / "old.pt")
    assert col.loss == "ce"
    assert "old.pt: carries no checksum" in capsys.readouterr().err


def test_a_damaged_state_dict_without_checksum_is_refused_by_the_zip_crc(released_sd, tmp_path):
    path = tmp_path / "released.pth"
    torch.save(released_sd, path)
    flip(path, data_offset(path))
    with pytest.raises(checkpoint.CheckpointError, match="released.pth: damaged: its zip entry .*/data/"):
        load_colorizer(path)


@pytest.fixture()
def released_sd():
    sys.path.insert(0, str(ROOT / "tests" / "colorfast"))
    from released_weights import released_state_dict
    return released_state_dict()


# ---- crafted files that claim the format ---------------------------------------------------------------------
def _set(key, value):
    return lambda ck: ck.__setitem__(key, value)


def _set_model(key, value):
    return lambda ck: ck["model"].__setitem__(key, value)


def _moment(ck):
    ck["optimizer"]["state"][0]["exp_avg"] = torch.zeros(1)


# name -> (change, where it is refused {"colorize", "resume", "init"}, what the one line says)
CRAFTED = {
    "no model": (lambda ck: ck.pop("model"), {"colorize", "resume", "init"}, "no 'model' entry"),
    "no model_name": (lambda ck: ck.pop("model_name"), {"colorize", "resume"}, "no 'model_name' entry"),
    "no config": (lambda ck: ck.pop("config"), {"resume"}, "no 'config' entry"),
    "model_name not a string": (_set("model_name", 3), {"colorize", "resume"}, "'model_name' entry is a int"),
    "unknown model_name": (_set("model_name", "huge"), {"colorize"}, "model_name 'huge'"),
    "unknown loss": (_set("loss", "bogus"), {"colorize"}, "loss 'bogus'"),
    "out_channels lie": (_set("out_channels", 7), {"colorize"}, "out_channels=7"),
    "model not tensors": (_set("model", {"model1.0.weight": 1}), {"colorize", "resume", "init"},
                          "'model' entry is not a dict of names -> tensors"),
    "bad weight shape": (_set_model("model1.0.weight", torch.zeros(3, 3)), {"colorize", "resume", "init"},
                         "model1.0.weight"),
    "bad centres shape": (_set_model("centers", torch.zeros(7)), {"colorize", "resume", "init"}, "centers"),
    "config not a valid run": (_set("config", {"crop": "big"}), {"resume"}, "its config is not a valid run's"),
    "optimizer moment shape": (_moment, {"resume"}, "exp_avg of shape (1,)"),
    "rng not a generator state": (_set("rng", torch.zeros(3)), {"resume"}, "does not fit this run"),
    "prior without centres": (_set("prior", {}), {"resume"}, "its prior has no bin centres"),
    "step a string": (_set("step", "3"), {"resume"}, "'step' entry is a str"),
}


@pytest.mark.parametrize("name", list(CRAFTED), ids=[n.replace(" ", "_") for n in CRAFTED])
def test_crafted_checkpoints_are_one_line_errors(name, run, image, tmp_path):
    change, where, says = CRAFTED[name]
    run_dir, args = run
    last = run_dir / "last.pt"
    ck = checkpoint.load(last)
    change(ck)
    checkpoint.save(last, ck)                # a valid checksum: the file is what its maker meant, not damaged
    crafted = last.read_bytes()
    if "colorize" in where:
        one_line_error(colorize(last, image, tmp_path), str(last), says)
    if "resume" in where:
        one_line_error(CliRunner().invoke(cli, args + ["--resume"]), str(last), says)
        assert last.read_bytes() == crafted
    if "init" in where:
        init = tmp_path / "init.pt"
        shutil.copy(last, init)
        out = tmp_path / "fresh"
        args = [a if a != str(run_dir) else str(out) for a in args]
        one_line_error(CliRunner().invoke(cli, args + ["--init", str(init)]), str(init), says)


# ---- write failures ------------------------------------------------------------------------------------------
class _FullDisk:
    """A file that takes 100 kB, then fails every write as a full disk does (ENOSPC)."""

    def __init__(self, f):
        self.f, self.left = f, 100_000

    def write(self, b):
        if len(b) > self.left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= len(b)
        return self.f.write(b)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_a_full_disk_while_saving_stops_fit_in_one_line_and_keeps_last_pt(run, monkeypatch):
    run_dir, args = run
    before = (run_dir / "last.pt").read_bytes()
    monkeypatch.setattr(checkpoint, "open", lambda *a: _FullDisk(open(*a)), raising=False)
    one_line_error(CliRunner().invoke(cli, args + ["--resume"]), str(run_dir), "ENOSPC", "No space left on device",
                   "last.pt there is the last complete save")
    assert (run_dir / "last.pt").read_bytes() == before
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]
    monkeypatch.undo()
    assert checkpoint.load(run_dir / "last.pt")["step"] == 2


def test_a_file_size_limit_stops_fit_in_one_line_and_keeps_last_pt(run):
    """A real write failure from the kernel (RLIMIT_FSIZE: EFBIG past the limit; works as root, unlike a
    read-only folder) in a `cli.py fit` process."""
    run_dir, args = run
    last = run_dir / "last.pt"
    before, limit = last.read_bytes(), last.stat().st_size // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    res = subprocess.run([sys.executable, "cli.py", *args, "--resume"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, preexec_fn=small_files, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    error = res.stderr.rstrip().splitlines()[-1]
    assert error.startswith(f"Error: {run_dir}: cannot write") and "EFBIG" in error, res.stderr[-3000:]
    assert sum(ln.startswith("Error:") for ln in res.stderr.splitlines()) == 1
    assert last.read_bytes() == before
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the EFBIG test covers root")
def test_a_read_only_run_dir_stops_fit_in_one_line(run):
    run_dir, args = run
    before = (run_dir / "last.pt").read_bytes()
    os.chmod(run_dir, 0o500)
    try:
        one_line_error(CliRunner().invoke(cli, args + ["--resume"]), str(run_dir), "EACCES")
    finally:
        os.chmod(run_dir, 0o700)
    assert (run_dir / "last.pt").read_bytes() == before
