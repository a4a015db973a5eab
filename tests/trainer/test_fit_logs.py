"""`fit`'s progress in a log file: plain lines, no carriage-return records; none with --quiet or TQDM_DISABLE=1;
still a bar on a terminal."""
import fcntl
import os
import pty
import re
import subprocess
import struct
import sys
import termios
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRESS_LINE = re.compile(r"^fit: \d+/50 step \(\d+%\)", re.M)


def fit_cmd(shards, out, *pre):
    """A tiny 50-step CPU fit (no data init: slow and beside the point here)."""
    return [sys.executable, "cli.py", *pre, "fit", "--data", str(shards), "--out", str(out), "--model", "tiny",
            "--crop", "32", "--batch-size", "4", "--steps", "50", "--device", "cpu", "--workers", "0",
            "--data-init", "off"]


def clean_env(**extra):
    """This environment without the switches under test (a developer may have set them), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "COLORFAST_QUIET")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.mark.parametrize("pre, env, lines", [
    ((), {}, "some"),
    (("--quiet",), {}, "none"),
    ((), {"TQDM_DISABLE": "1"}, "none"),
], ids=["plain-lines", "quiet", "tqdm-disable"])
def test_fit_progress_in_a_log_file(shards, tmp_path, pre, env, lines):
    log = tmp_path / "stderr.log"
    with open(log, "w") as f:
        res = subprocess.run(fit_cmd(shards, tmp_path / "run", *pre), cwd=ROOT, env=clean_env(**env),
                             stdout=subprocess.PIPE, stderr=f, text=True, timeout=180)
    err = log.read_text()
    assert res.returncode == 0, err[-2000:]
    assert "\r" not in err                                          # no carriage-return bar records
    found = PROGRESS_LINE.findall(err)
    if lines == "some":
        assert 1 <= len(found) <= 5, err[-2000:]                    # a handful at most, the last at 50/50
        assert "fit: 50/50 step (100%)" in err and "loss=" in err
    else:
        assert not found and "50/50" not in err, err[-2000:]
    assert "run: " in res.stdout                                    # the command's summary is not progress


def test_fit_on_a_terminal_still_draws_a_bar(shards, tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # 0 columns: tqdm draws nothing
    try:
        proc = subprocess.Popen(fit_cmd(shards, tmp_path / "run"), cwd=ROOT, env=clean_env(),
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        seen = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:                                             # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=180) == 0, seen[-2000:]
    finally:
        os.close(master)
    # tqdm's bar, redrawn in place: a carriage return not from the terminal's own \n -> \r\n
    assert re.search(rb"\r(?!\n)", seen) and b"50/50" in seen, seen[-2000:]
