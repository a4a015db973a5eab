"""A real dask cluster: `dask scheduler` and two `dask worker` processes on localhost, started as subprocesses
the way a user starts them on their machines, and `preprocess --scheduler` against it."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from archive_trees import imagenet_files, write_imagenet_tars
from test_archives import assert_same, shard_contents

ROOT = Path(__file__).resolve().parents[2]
distributed = pytest.importorskip("distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_cli() -> str:
    exe = Path(sys.executable).with_name("dask")           # the CLI installed with dask[distributed]
    assert exe.is_file(), f"{exe}: the dask CLI is missing (pip install 'dask[distributed]')"
    return str(exe)


def _stop(procs) -> None:
    """SIGTERM each process group (a worker's nanny and its child), SIGKILL what is still there after 15 s."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)


@pytest.fixture
def dask_cluster(tmp_path):
    """Address of a scheduler with two single-threaded workers; everything is torn down, even on failure."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "cluster.log", "wb")
    common = dict(cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    procs = []
    try:
        procs.append(subprocess.Popen([_dask_cli(), "scheduler", "--host", "127.0.0.1", "--port",
                                       address.rsplit(":", 1)[1], "--no-dashboard"], **common))
        for i in range(2):
            procs.append(subprocess.Popen([_dask_cli(), "worker", address, "--nworkers", "1", "--nthreads", "1",
                                           "--no-dashboard", "--name", f"w{i}", "--local-directory",
                                           str(tmp_path / f"w{i}")], **common))
        with distributed.Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        _stop(procs)
        log.close()
        assert all(p.poll() is not None for p in procs)


def test_preprocess_on_a_scheduler_and_two_worker_processes_equals_a_local_run(dask_cluster, tmp_path):
    import cli
    roots = write_imagenet_tars(tmp_path / "tars", imagenet_files())      # the workers read the tars themselves
    common = ["preprocess", "imagenet", "--root", str(roots), "--size", "64", "--min-side", "32",
              "--shard-size", "2"]
    local = CliRunner().invoke(cli.cli, common + ["--out", str(tmp_path / "local"), "--jobs", "1"])
    assert local.exit_code == 0, local.output
    remote = CliRunner().invoke(cli.cli, common + ["--out", str(tmp_path / "cluster"), "--scheduler", dask_cluster])
    assert remote.exit_code == 0, remote.output
    assert "11 written, 1 skipped of 12 inputs in 7 shards" in remote.output
    assert_same(shard_contents(tmp_path / "local"), shard_contents(tmp_path / "cluster"))

    def ran_a_shard():                     # worker_init runs only when a worker process executes a shard task
        import pipeline.parallel
        return pipeline.parallel._initialised
    with distributed.Client(dask_cluster) as client:
        ran = client.run(ran_a_shard)
    assert len(ran) == 2 and any(ran.values())
