"""Where a long generation says how far it is.

``CachedBackend`` sends new requests to the model in chunks and reports after each one: done /
total, the rate, the time left. The report goes to the step that is running (its Dagster log:
the UI and the console) when one is (``table_stage`` sets it for the stage's duration), else to
this module's Python logger.
"""

from __future__ import annotations

import logging
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
    rate = done / elapsed_s if elapsed_s > 0 else float("inf")
    left = (total - done) / rate if done and rate != float("inf") else 0.0
    return (f"{model_id}: {done}/{total} new requests ({100 * done / total:.0f}%), {rate:.2f}/s, "
            f"about {_duration(left)} left")
