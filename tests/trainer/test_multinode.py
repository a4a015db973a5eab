"""Training on several machines: two torchrun launchers (one process each, gloo on the CPU) meet at a c10d
rendezvous on localhost, as two nodes would, and train as one launcher with two processes does; the SLURM
script the README points to runs that same multi-node command."""
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "docs" / "slurm_fit.sbatch"
TIMEOUT_S = 150


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fit(out, shards):
    return ["cli.py", "fit", "--data", str(shards), "--out", str(out), "--model", "tiny", "--crop", "32",
            "--batch-size", "2", "--steps", "3", "--workers", "0", "--device", "cpu", "--seed", "5",
            "--log-every", "1", "--val-every", "-1", "--verify", "off"]


def _run_all(cmds):
    """Start every launcher in its own session, wait for all; on a timeout or a failure kill every one's process
    group (the launcher and its ranks), so a rendezvous that never completes cannot hang the suite."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c in cmds]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=TIMEOUT_S)[0])
            assert p.returncode == 0, outputs[-1][-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return outputs


def _log(run):
    return [json.loads(ln) for ln in (Path(run) / "log.jsonl").read_text().splitlines()]


def test_two_nodes_at_a_c10d_rendezvous_train_as_one_node_with_two_processes(shards, tmp_path):
    port, run_id = _free_port(), f"colorfast-test-{os.getpid()}"
    nodes = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
              "--node-rank", str(rank), "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
              "--rdzv-id", run_id, *_fit(tmp_path / "two_nodes", shards)] for rank in (0, 1)]
    _run_all(nodes)
    one_node = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                *_fit(tmp_path / "one_node", shards)]
    _run_all([one_node])
    two, one = _log(tmp_path / "two_nodes"), _log(tmp_path / "one_node")
    assert [r["step"] for r in two] == [1, 2, 3] and two[-1]["samples"] == 3 * 2 * 2    # the global batch is 2 x 2
    # the same ranks see the same batches and the gradients are averaged the same way: the same losses
    assert [r["loss"] for r in two] == [r["loss"] for r in one]
    assert sorted(p.name for p in (tmp_path / "two_nodes").iterdir()) == \
        sorted(p.name for p in (tmp_path / "one_node").iterdir())
    assert torch.load(tmp_path / "two_nodes" / "last.pt", weights_only=True)["world_size"] == 2


def test_the_slurm_script_parses_and_runs_the_readme_multi_node_command():
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True).returncode == 0
    text = SBATCH.read_text()
    assert re.search(r"^#SBATCH --nodes=\d+$", text, re.M) and "#SBATCH --ntasks-per-node=1" in text
    commands = [shlex.split(c) for c in text.replace("\\\n", " ").splitlines() if c.startswith("srun ")]
    assert len(commands) == 1, commands
    argv = commands[0][1:]
    assert argv[0] == "torchrun" and "cli.py" in argv and argv[argv.index("cli.py") + 1] == "fit"
    opts = {argv[i]: argv[i + 1] for i in range(1, argv.index("cli.py") - 1, 2)}
    assert opts["--nnodes"] == "$SLURM_NNODES" and opts["--rdzv-backend"] == "c10d"
    assert opts["--rdzv-endpoint"].endswith(":29400") and opts["--rdzv-id"] == "$SLURM_JOB_ID"
    assert "--nproc-per-node" in opts
    readme = (ROOT / "README.md").read_text()
    assert "docs/slurm_fit.sbatch" in readme
    for opt in ("--nnodes", "--nproc-per-node", "--rdzv-backend c10d", "--rdzv-endpoint", "--rdzv-id"):
        assert opt in readme, opt
