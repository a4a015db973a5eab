"""Graceful stop of a training run on SIGINT (Ctrl-C) or SIGTERM (a scheduler, torchrun shutting down).

The first signal only sets a flag: the loop finishes the step it is in, every rank agrees to stop after that
same step (trainer.dist.any_rank_now, so no rank waits in a collective the others left), rank 0 writes last.pt
atomically and the run ends with a `--resume` hint. A second signal stops at once (KeyboardInterrupt, as
Python's default handler would); the last complete checkpoint stays, since every save is atomic.

DataLoader workers run ignore_signals: a Ctrl-C in a terminal reaches the whole foreground process group
(and torchrun forwards its signal to each rank's process group), and a worker that died of it would make the
step in flight fail instead of finish.
"""
from __future__ import annotations

import functools
import shlex
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager: while active, the first SIGINT/SIGTERM sets `signum`; the second raises
    KeyboardInterrupt. Outside the main thread (signals cannot be caught there) it does nothing."""

    def __init__(self, announce=None):
        self.signum: int | None = None
        self._announce = announce             # callable(str), for the one line shown on the first signal
        self._old = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None:           # the second one: stop now
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        if self._announce:
            self._announce(f"{signal.Signals(signum).name}: finishing the current step, then saving last.pt "
                           f"(send it again to stop at once)")

    def install(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.restore()
        return False


def ignore_signals(worker_id: int = 0) -> None:
    """DataLoader worker_init_fn: leave SIGINT/SIGTERM to the training process, which decides when to stop."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def resume_command(argv: list[str] | None = None, world_size: int = 1) -> str:
    """The command line that continues a stopped run: this one with --resume (once), under torchrun when the
    run had several processes."""
    argv = list(sys.argv if argv is None else argv)
    prog = [sys.executable if sys.executable else "python", *argv]
    if "--resume" not in argv:
        prog.append("--resume")
    if world_size > 1:
        prog = ["torchrun", f"--nproc-per-node={world_size}", *argv] + ([] if "--resume" in argv else ["--resume"])
    return shlex.join(prog)


class RunStopped(Exception):
    """A signal stopped the run after a complete step; last.pt holds that step, so --resume continues it."""

    def __init__(self, run_dir, step: int, total: int, signum: int | None, world_size: int):
        self.run_dir, self.step, self.total, self.world_size = run_dir, step, total, world_size
        self.signum = signum or signal.SIGTERM            # a rank not signalled itself stopped with the others
        super().__init__(f"stopped by {signal.Signals(self.signum).name} after step {step} of {total}; "
                         f"{run_dir}/last.pt holds it")


def _init_worker(previous, worker_id):
    ignore_signals()
    if previous is not None:
        previous(worker_id)


def with_ignored_signals(worker_init_fn=None):
    """A worker_init_fn that ignores SIGINT/SIGTERM, then runs `worker_init_fn` (picklable, for spawn)."""
    return functools.partial(_init_worker, worker_init_fn)
