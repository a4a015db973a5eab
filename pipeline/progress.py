"""Progress that reads well both on a terminal and in a log file.

On a terminal `progress(...)` is tqdm's bar, as every command had before. When stderr is not a terminal (a log
file, a pipe, a batch job) a carriage-return bar writes one record per refresh (a 50-step fit wrote 180 of them);
there it is tqdm with its display replaced by one plain line every COLORFAST_PROGRESS_EVERY seconds (default 30)
and one at the end: `desc: n/total unit (pct%), rate, elapsed, ~left, postfix`. `cli.py --quiet` (which sets
COLORFAST_QUIET=1, so worker processes inherit it) and tqdm's own TQDM_DISABLE=1 turn progress off entirely;
errors and summaries are printed without it and still appear.

tqdm's counting, postfix, context manager and iteration are kept by subclassing it: only the drawing differs.
Every layer imports progress from here (pipeline/ is the bottom layer), so tqdm is configured in one place.
"""
from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

EVERY_ENV, QUIET_ENV = "COLORFAST_PROGRESS_EVERY", "COLORFAST_QUIET"
DEFAULT_EVERY = 30.0
write = tqdm.write            # a message that does not break a bar on a terminal; a plain print elsewhere


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


def quiet() -> bool:
    """True when progress is off: `--quiet` (COLORFAST_QUIET) or TQDM_DISABLE. tqdm reads TQDM_DISABLE only as the
    default of `disable`, which our callers pass explicitly, so it is checked here too."""
    return _env_flag(QUIET_ENV) or _env_flag("TQDM_DISABLE")


def set_quiet() -> None:
    """Progress off for this process and, through the environment, every process it starts."""
    os.environ[QUIET_ENV] = "1"


def every_seconds() -> float:
    raw = os.environ.get(EVERY_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_EVERY
    except ValueError:
        value = DEFAULT_EVERY                         # a typo in a log setting must not stop a run
    return max(value, 0.0)


def progress(iterable=None, total=None, desc=None, unit="it", disable=None, **kw):
    """tqdm(iterable, total, desc, unit, **kw) on a terminal; plain lines otherwise; nothing when quiet.
    `disable`: True turns it off (e.g. on non-primary ranks); None and False both mean "show it"."""
    if disable or quiet():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=True, **kw)
    stream = kw.get("file") or sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=False, **kw)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, every=every_seconds(), **kw)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):              # no isatty, or a closed stream
        return False


class PlainProgress(tqdm):
    """tqdm that writes a whole line at most every `every` seconds and a last one on close; never '\\r'."""

    def __init__(self, *args, every: float = DEFAULT_EVERY, **kw):
        self._every, self._lines, self._closing = every, 0, False
        self._last_line_t, self._last_line_n = time.time(), None    # tqdm.__init__ already calls display()
        kw.setdefault("mininterval", min(every, 1.0))   # fewer display() calls to refuse
        kw["dynamic_ncols"] = False                   # no terminal to measure
        super().__init__(*args, **kw)
        self._last_line_t = self.start_t

    def display(self, msg=None, pos=None):
        """Called by tqdm on every refresh (update, set_postfix, write): a line when one is due."""
        if msg == "":                                 # tqdm clearing the bar: nothing drawn to clear
            return True
        now = self._time()
        # set_postfix and write() refresh too: a line only for new progress
        due = self.n > max(self.initial, self._last_line_n or 0) and now - self._last_line_t >= self._every
        if due or self._closing:
            self.fp.write(self.line() + "\n")
            self.fp.flush()
            self._last_line_t, self._last_line_n, self._lines = now, self.n, self._lines + 1
        return True

    def clear(self, nolock=False):
        """Nothing on screen to clear (tqdm.write calls this around each message)."""

    def close(self):
        if self.disable:
            return
        # a transient bar (leave=False: a listing, a check) ends silently unless it was long enough to show lines
        leave = self.leave if self.leave is not None else self.pos == 0
        if leave or self._lines:
            self._closing = True
            self.display()
        self.disable = True
        self._decr_instances(self)

    def line(self) -> str:
        """`desc: n/total unit (pct%), rate, elapsed, ~left, postfix`; the rate is the whole run's average."""
        d = self.format_dict
        n, total, unit, elapsed = d["n"], d["total"], d["unit"], d["elapsed"]
        if d["unit_scale"]:
            size = lambda x: tqdm.format_sizeof(x, divisor=d["unit_divisor"])   # noqa: E731
        else:
            size = lambda x: f"{x:g}" if isinstance(x, float) else str(x)        # noqa: E731
        sep = "" if d["unit_scale"] else " "                                    # 5.24MB, 50 step
        parts = [f"{size(n)}/{size(total)}{sep}{unit} ({100 * n / total:.0f}%)" if total else f"{size(n)}{sep}{unit}"]
        done = n - self.initial
        rate = done / elapsed if elapsed > 0 else 0.0
        if rate >= 1 or (rate and d["unit_scale"]):
            shown = size(rate) if d["unit_scale"] else tqdm.format_sizeof(rate)       # 19.9, 350k
            parts.append(f"{shown}{sep}{unit}/s")
        elif rate:
            parts.append(f"{1 / rate:.2f} s/{unit}")
        parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
        if total and rate and n < total:
            parts.append(f"~{tqdm.format_interval((total - n) / rate)} left")
        if d["postfix"]:
            parts.append(d["postfix"])
        head = f"{d['prefix']}: " if d["prefix"] else ""
        return head + ", ".join(parts)
