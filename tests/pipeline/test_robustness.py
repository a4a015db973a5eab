"""Preprocessing survives SIGKILL, a full disk and a dask cluster, and gives the same bytes as a clean run.
(Two loky workers against the serial run, prior included, is test_preprocess.py's
test_jobs_backend_and_resume_do_not_change_the_result.)

Every run here uses the same 64 synthetic photos, --size 256, 4 inputs a shard (16 shards), and is compared
with one uninterrupted in-process run at --jobs 1 (the `reference` fixture): same shard arrays, keys and
attrs, same prior.npz arrays, same manifest apart from its timestamp and the output path.
"""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline import contract, verify
from colorfast.bench.scale import make_images
from pipeline.config import PrepConfig

ROOT = Path(__file__).resolve().parents[2]
N_IMAGES, SIZE, SHARD = 64, 256, 4


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    make_images(root, N_IMAGES, px=SIZE)
    return root


@pytest.fixture(scope="module")
def cfg(images, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "shards"
    return PrepConfig(dataset="folder", root=str(images), out_dir=str(out), size=SIZE, shard_size=SHARD, jobs=1)


@pytest.fixture(scope="module")
def reference(cfg):
    """An uninterrupted serial run: what every other run must reproduce exactly."""
    from pipeline.preprocess import run
    result = run(cfg, progress=False)
    assert result.written == N_IMAGES and result.shards == N_IMAGES // SHARD
    return Path(cfg.out)


def _command(cfg, out, *extra):
    return [sys.executable, str(ROOT / "cli.py"), "preprocess", "folder", "--root", cfg.root, "--out", str(out),
            "--size", str(SIZE), "--shard-size", str(SHARD), "--jobs", "1", *extra]


def _manifest_sans_run_details(folder):
    m = contract.read_manifest(folder)
    m.pop("created_utc")
    m["config"] = {k: v for k, v in m["config"].items() if k not in ("out_dir", "jobs", "backend", "scheduler")}
    return m


def assert_same_output(got: Path, want: Path):
    assert verify.verify_folder(got) == []
    assert _manifest_sans_run_details(got) == _manifest_sans_run_details(want)
    names = sorted(p.name for p in want.glob("*.h5"))
    assert sorted(p.name for p in got.glob("*.h5")) == names
    for name in names:
        with h5py.File(got / name, "r") as g, h5py.File(want / name, "r") as w:
            for d in contract.DATASETS:
                np.testing.assert_array_equal(g[d][()], w[d][()], err_msg=f"{name}/{d}")
            assert sorted(g.attrs) == sorted(w.attrs)
            for k in w.attrs:
                np.testing.assert_equal(g.attrs[k], w.attrs[k], err_msg=f"{name} attrs[{k}]")
    with np.load(got / contract.PRIOR) as g, np.load(want / contract.PRIOR) as w:
        assert sorted(g.files) == sorted(w.files)
        for k in w.files:
            np.testing.assert_array_equal(g[k], w[k], err_msg=f"prior.npz/{k}")
    assert not [p for p in got.iterdir() if p.name.endswith(".tmp")], "temporary files left behind"


def _kill_mid_run(cmd, out: Path) -> bool:
    """Start cmd, SIGKILL it as soon as the first shard is complete (preferably while the next one is being
    written, i.e. while a temporary file exists). Returns whether a temporary file was there at the kill;
    fails if the run finished before it could be killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any(e.name.endswith(".h5") for e in os.scandir(out)):
                break
            time.sleep(0.001)
        hunt_tmp = time.monotonic() + 0.05                  # up to 50 ms more to catch a write in flight
        tmp_exists = lambda: out.is_dir() and any(e.name.endswith(".tmp") for e in os.scandir(out))
        while time.monotonic() < hunt_tmp and not tmp_exists():
            pass
        mid_write = tmp_exists()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL, "preprocess finished before it could be killed"
        return mid_write
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigkill_then_rerun_equals_clean_run(cfg, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = _command(cfg, out)
    mid_write = _kill_mid_run(cmd, out)
    shards = sorted(out.glob("*.h5"))
    assert 1 <= len(shards) < N_IMAGES // SHARD
    assert not (out / contract.MANIFEST).exists()              # so nothing downstream takes it as complete
    problems = verify.verify_folder(out)
    assert problems and "no readable manifest" in problems[0]
    for p in shards:                                            # what survived a SIGKILL is complete and intact
        with contract.open_shard(p) as sh:
            assert len(sh) == SHARD and verify._shard_data_problems(sh, sh.keys(), None) == []
    # whether or not the kill caught a write in flight, leave the worst debris a crash can: a half-written
    # temporary shard. It must be ignored, and cleaned by the rerun.
    (out / ".train-00001.h5.colorfast-4242-k1ll3d.tmp").write_bytes(shards[0].read_bytes()[:5000])
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"({len(shards)} reused from an earlier run)" in rerun.stdout, (mid_write, rerun.stdout)
    assert_same_output(out, reference)


def test_dask_cluster_gives_the_same_result_as_loky(cfg, reference, tmp_path):
    from distributed import LocalCluster
    from cli import cli
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "dask"
        r = CliRunner().invoke(cli, ["preprocess", "folder", "--root", cfg.root, "--out", str(out), "--size",
                                     str(SIZE), "--shard-size", str(SHARD), "--backend", "dask",
                                     "--scheduler", cluster.scheduler_address])
        assert r.exit_code == 0, r.output
        workers_used = len(cluster.workers)
    assert workers_used == 2
    assert_same_output(out, reference)


def _fail_on_nth_fsync(monkeypatch, n):
    """fsync is where a full disk shows on a delayed-allocation filesystem; the n-th shard's one raises ENOSPC."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def test_disk_full_is_a_clear_error_and_the_rerun_resumes(cfg, reference, tmp_path, monkeypatch):
    from cli import cli
    out = tmp_path / "full"
    args = ["preprocess", "folder", "--root", cfg.root, "--out", str(out), "--size", str(SIZE),
            "--shard-size", str(SHARD), "--jobs", "1"]
    _fail_on_nth_fsync(monkeypatch, 4)
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception    # ClickException, no traceback
    assert str(out) in r.output and "No space left on device" in r.output and "rerun" in r.output, r.output
    assert sorted(p.name for p in out.iterdir()) == ["train-00000.h5", "train-00001.h5", "train-00002.h5"]
    for p in out.iterdir():                                  # the three shards finished before the failure
        with contract.open_shard(p) as sh:
            assert verify._shard_data_problems(sh, sh.keys(), None) == []
    monkeypatch.undo()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "(3 reused from an earlier run)" in r.output, r.output
    assert_same_output(out, reference)


def _mount_tmpfs(path: Path, kib: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_real_enospc_on_a_small_tmpfs(cfg, reference, tmp_path):
    """The same on a real full filesystem (a tmpfs that holds 2.5 shards, sized from the reference run's, as
    compression makes them smaller than their ~0.65 MiB of arrays); skipped where mounting is not allowed. h5py
    reports this one as a RuntimeError from its flush, not an OSError."""
    disk = tmp_path / "disk"
    shard_kib = max(p.stat().st_size for p in reference.glob("*.h5")) / 1024
    if not _mount_tmpfs(disk, int(2.5 * shard_kib)):
        pytest.skip("cannot mount a tmpfs here (needs root in a namespace that allows it)")
    try:
        out = disk / "shards"
        r = subprocess.run(_command(cfg, out), capture_output=True, text=True, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
        assert str(out) in r.stderr and "No space left on device" in r.stderr, r.stderr[-3000:]
        kept = sorted(out.glob("*.h5"))
        assert kept and not [p for p in out.iterdir() if p.name.endswith(".tmp")]
        for p in kept:
            with contract.open_shard(p) as sh:
                assert verify._shard_data_problems(sh, sh.keys(), None) == []
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)     # space freed
        r = subprocess.run(_command(cfg, out), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and f"({len(kept)} reused" in r.stdout, r.stderr[-3000:]
        assert_same_output(out, reference)
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_read_only_output_is_a_clear_error(cfg, tmp_path):
    """Unwritable output (root ignores chmod, so a read-only mount): a message naming the folder, no traceback."""
    from cli import cli
    disk = tmp_path / "ro"
    if not _mount_tmpfs(disk, 1024):
        pytest.skip("cannot mount a tmpfs here (needs root in a namespace that allows it)")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        r = CliRunner().invoke(cli, ["preprocess", "folder", "--root", cfg.root, "--out", str(disk / "shards")])
        assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.exception
        assert str(disk) in r.output and "Read-only file system" in r.output, r.output
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)
