"""pipeline/progress.py: plain lines when stderr is not a terminal, every COLORFAST_PROGRESS_EVERY seconds and at
the end; nothing with --quiet or TQDM_DISABLE=1; `preprocess` end to end in a log file."""
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import progress as prog

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_switches(monkeypatch):
    for name in ("TQDM_DISABLE", prog.QUIET_ENV, prog.EVERY_ENV):
        monkeypatch.delenv(name, raising=False)


def _count(steps=10, **kw):
    buf = io.StringIO()                                   # not a terminal
    with prog.progress(total=steps, desc="fit", unit="step", file=buf, **kw) as bar:
        for i in range(steps):
            bar.update()
            bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
            prog.write("a message between updates", file=buf)
    return buf.getvalue()


def test_one_plain_line_at_the_end_when_the_interval_is_long():
    out = _count()
    assert "\r" not in out
    lines = [line for line in out.splitlines() if line.startswith("fit:")]
    assert len(lines) == 1 and lines[0].startswith("fit: 10/10 step (100%), ") and lines[0].endswith("loss=0.100")
    assert out.count("a message between updates\n") == 10        # messages print whole, between lines


def test_a_line_every_interval(monkeypatch):
    monkeypatch.setenv(prog.EVERY_ENV, "0")
    lines = [line for line in _count().splitlines() if line.startswith("fit:")]
    assert [line.split(" step")[0] for line in lines[:2]] == ["fit: 1/10", "fit: 2/10"]
    assert lines[-1].startswith("fit: 10/10 step (100%)") and "left" in lines[0] and "elapsed" in lines[0]


@pytest.mark.parametrize("name", ["TQDM_DISABLE", prog.QUIET_ENV])
def test_switched_off(monkeypatch, name):
    monkeypatch.setenv(prog.EVERY_ENV, "0")
    monkeypatch.setenv(name, "1")
    assert _count() == "a message between updates\n" * 10     # messages stay, progress goes


def test_a_short_transient_listing_leaves_nothing_and_sizes_read_as_bytes(monkeypatch):
    buf = io.StringIO()
    with prog.progress(total=5 * 2**20, unit="B", unit_scale=True, leave=False, desc="listing", file=buf) as bar:
        bar.update(2**20)
    assert buf.getvalue() == ""
    monkeypatch.setenv(prog.EVERY_ENV, "0")
    with prog.progress(total=5 * 2**20, unit="B", unit_scale=True, leave=False, desc="listing", file=buf) as bar:
        bar.update(2**20)
    assert buf.getvalue().startswith("listing: 1.05M/5.24MB (20%)")


def _preprocess(tmp_path, *pre, **env):
    log = tmp_path / "stderr.log"
    base = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", prog.QUIET_ENV, prog.EVERY_ENV)}
    with open(log, "w") as f:
        res = subprocess.run([sys.executable, "cli.py", *pre, "preprocess", "sample", "--out", str(tmp_path / "s"),
                              "--size", "32", "--jobs", "1"], cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **env},
                             stdout=subprocess.PIPE, stderr=f, text=True, timeout=180)
    assert res.returncode == 0, log.read_text()[-2000:]
    assert "written" in res.stdout                            # the summary is not progress
    return log.read_text()


def test_preprocess_in_a_log_file(tmp_path):
    err = _preprocess(tmp_path)
    assert "\r" not in err and err.count("preprocess sample: ") == 1 and "29/29 img (100%)" in err, err


@pytest.mark.parametrize("pre, env", [(("--quiet",), {}), ((), {"TQDM_DISABLE": "1"})], ids=["quiet", "tqdm-disable"])
def test_preprocess_quiet(tmp_path, pre, env):
    err = _preprocess(tmp_path, *pre, **env)
    assert "\r" not in err and "preprocess sample" not in err and "img" not in err, err
