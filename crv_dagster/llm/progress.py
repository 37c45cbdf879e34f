"""Where a long generation says how far it is.

``CachedBackend`` sends new requests to the model in chunks and reports after each one, and every
``REPORT_EVERY_S`` seconds while one runs (a chunk of 12 slow agent calls is one chunk, minutes
long): done / total, the rate, the time left. The report goes to the step that is running (its
Dagster log: the UI and the console) when one is (``table_stage`` sets it for the stage's
duration), else to this module's Python logger.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

_step_log: ContextVar[Callable[[str], None] | None] = ContextVar("crv_step_log", default=None)
_fallback = logging.getLogger(__name__)


@contextmanager
def reporting_to(log: Callable[[str], None]) -> Iterator[None]:
    """Progress of generations started inside the block goes to ``log``."""
    token = _step_log.set(log)
    try:
        yield
    finally:
        _step_log.reset(token)


def report(message: str) -> None:
    log = _step_log.get()
    (log or _fallback.info)(message)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def progress_line(model_id: str, done: int, total: int, elapsed_s: float) -> str:
    """One line: how many of this call's new requests are done, at what rate, and how long the
    rest should take at that rate."""
    if done == 0:
        return (f"{model_id}: 0/{total} new requests, {_duration(elapsed_s)} in, no reply finished yet "
                "(a batch's replies finish together)")
    rate = done / elapsed_s if elapsed_s > 0 else float("inf")
    left = (total - done) / rate if done and rate != float("inf") else 0.0
    return (f"{model_id}: {done}/{total} new requests ({100 * done / total:.0f}%), {rate:.2f}/s, "
            f"about {_duration(left)} left")


REPORT_EVERY_S = 30.0


class Heartbeat:
    """Reports a generation's progress at least every ``REPORT_EVERY_S`` seconds while it runs,
    from a thread of its own, whatever the size of the chunks that also report when they end.
    ``advance`` counts finished requests; ``reported`` marks a report made by the caller."""

    def __init__(self, model_id: str, total: int):
        self.model_id, self.total = model_id, total
        self.done = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = self._last = time.perf_counter()
        # The step's log is a context variable, which a new thread does not inherit.
        self._log = _step_log.get() or _fallback.info
        self._thread = threading.Thread(target=self._beat, name="crv-progress", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n

    def line(self) -> str:
        with self._lock:
            self._last = time.perf_counter()
            return progress_line(self.model_id, self.done, self.total, self._last - self._started)

    def _beat(self) -> None:
        while not self._stop.wait(max(0.0, self._last + REPORT_EVERY_S - time.perf_counter())):
            if time.perf_counter() - self._last >= REPORT_EVERY_S:
                self._log(self.line())
