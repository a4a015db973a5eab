"""The line that `cli.py serve`'s colorizations wait in: bounded, fair, and dropping work nobody waits for.

One worker thread colorizes one photo at a time (torch already spreads one image over every core, and the model
is never used from two threads). A request takes a place in line (`ColorizeQueue.place`) before its body is
read, and keeps it while its upload is spooled to disk, while it waits and while it runs: so at most
`waiting + 1` uploads are in the server at once, whatever the number of clients, and a request that finds the
line full is refused at once (503, `Retry-After` from recent processing times) without its body being read.

A client that goes away is noticed by a task that listens for the ASGI `http.disconnect` (`watch_disconnect`):
its request leaves the line before its turn, and a job already running stops at its next stage boundary
(`Job.check`: after decoding, after the network, after the full-resolution rebuild), each with one log line.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import statistics
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("colorfast.serve")


class Busy(Exception):
    """The line is full; `retry_after` whole seconds is a guess at when a place frees up."""

    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy: {retry_after} s")
        self.retry_after = retry_after


class ClientGone(Exception):
    """The client disconnected; `stage` says when it was noticed (for the one log line)."""

    def __init__(self, stage: str):
        super().__init__(stage)
        self.stage = stage


class Job:
    """What the worker thread sees of a request: a flag the event loop sets when its client goes away."""

    def __init__(self):
        self.gone = threading.Event()

    def check(self, stage: str) -> None:
        if self.gone.is_set():
            raise ClientGone(stage)


async def watch_disconnect(receive, job: Job, gone: asyncio.Event) -> None:
    """Once the body is read, the only ASGI message left to receive is the client's disconnect."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            job.gone.set()
            gone.set()
            return


class ColorizeQueue:
    def __init__(self, waiting: int):
        self.places = waiting + 1                   # the request being colorized and `waiting` behind it
        self.taken = 0
        self.turn = asyncio.Lock()                  # FIFO: its waiters are woken in arrival order
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="colorize")
        self.recent = deque(maxlen=8)               # seconds of the last jobs, for Retry-After
        self.waiting = 0                            # requests with their body in, waiting for their turn
        self.running: Job | None = None

    def retry_after(self) -> int:
        """Whole seconds until a place is likely to free up: the typical job's time (1 s before any)."""
        return max(1, math.ceil(statistics.median(self.recent))) if self.recent else 1

    @contextlib.contextmanager
    def place(self):
        """A place in line for one request, or Busy. No await between the test and the taking: atomic."""
        if self.taken >= self.places:
            raise Busy(self.retry_after())
        self.taken += 1
        try:
            yield
        finally:
            self.taken -= 1

    async def run(self, job: Job, gone: asyncio.Event, fn, *args):
        """fn(job, *args) on the worker once it is this request's turn -> (result, seconds waited, seconds of
        work). ClientGone when the client left before its turn or during the work."""
        t0 = time.perf_counter()
        my_turn = asyncio.ensure_future(self.turn.acquire())
        left = asyncio.ensure_future(gone.wait())
        self.waiting += 1
        try:
            await asyncio.wait({my_turn, left}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            self.waiting -= 1
        if not my_turn.done() or my_turn.cancelled() or job.gone.is_set():
            my_turn.cancel()
            if my_turn.done() and not my_turn.cancelled():
                self.turn.release()
            raise ClientGone("before its turn")
        try:
            waited = time.perf_counter() - t0
            self.running = job

            def timed():
                t = time.perf_counter()
                return fn(job, *args), time.perf_counter() - t

            # awaited even when the client leaves, so that the next job starts only once the worker is free
            result, work = await asyncio.get_running_loop().run_in_executor(self.worker, timed)
        finally:
            self.running = None
            self.turn.release()
        self.recent.append(work)
        return result, waited, work

    def close(self):
        self.worker.shutdown(wait=False, cancel_futures=True)
