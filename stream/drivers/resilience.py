"""Surviving blips: bounded exponential backoff, one log line per outage and one per recovery, and the
dependency health that `/readyz` and the `recstream_dependency_up` gauge report.

The worker wraps every call to Redis and Kafka in `Retrier.call`: a transient failure (Redis unreachable
or loading, broker down) is retried after 0.1, 0.2, 0.4 ... up to 5 s, without committing anything, until
it succeeds or the worker is asked to stop. Nothing is skipped, so nothing is lost; the stages are
idempotent, so nothing is doubled.

>>> b = Backoff(0.1, 5.0)
>>> [b.next() for _ in range(8)]
[0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable, TypeVar

from stream.errors import BrokerError, StoreEmptied, StoreUnavailable

log = logging.getLogger("recstream.worker")
T = TypeVar("T")


def stop_on_signals(stop: threading.Event, log, doing: str) -> None:
    """SIGTERM and SIGINT set `stop` (the loop finishes what it holds), logging what happens next."""
    def handler(signum, frame):
        log.info("signal %d: %s", signum, doing)
        stop.set()
    handler.recstream_stop = True
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def stopped_gracefully() -> None:
    """After a command that `stop_on_signals` stopped has finished its work: ignore further SIGTERM/SIGINT.
    Python resets a handled signal to its default action while the interpreter tears down, so a second
    SIGTERM (a supervisor repeating itself) landing then would turn a clean exit 0 into death by signal."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        if getattr(signal.getsignal(sig), "recstream_stop", False):
            signal.signal(sig, signal.SIG_IGN)


class Stopping(Exception):
    """The worker was asked to stop while waiting out an outage: abandon the batch, commit nothing."""


class Backoff:
    def __init__(self, first: float = 0.1, cap: float = 5.0):
        self.first, self.cap, self.cur = first, cap, 0.0

    def next(self) -> float:
        self.cur = self.first if self.cur == 0 else min(self.cap, self.cur * 2)
        return self.cur

    def reset(self) -> None:
        self.cur = 0.0


class Health:
    """Per dependency ("redis", "broker", "store"): up or down since when, and the last error."""

    def __init__(self, on_change: Callable[[str, bool], None] | None = None):
        self._lock = threading.Lock()
        self.down: dict[str, tuple[float, str, int]] = {}   # dep -> (since, error, retries)
        self.on_change = on_change

    def fail(self, dep: str, error: str, hint: str = "") -> None:
        with self._lock:
            cur = self.down.get(dep)
            if cur is None:
                self.down[dep] = (time.monotonic(), error, 1)
                log.warning("%s outage: %s; retrying with backoff (up to 5 s), committing nothing until it "
                            "is back%s", dep, error, f" ({hint})" if hint else "")
                if self.on_change:
                    self.on_change(dep, False)
            else:
                self.down[dep] = (cur[0], error, cur[2] + 1)

    def ok(self, dep: str) -> None:
        if dep not in self.down:       # the common case: no lock, no work
            return
        with self._lock:
            cur = self.down.pop(dep, None)
        if cur is not None:
            log.warning("%s recovered after %.1f s (%d retries)", dep, time.monotonic() - cur[0], cur[2])
            if self.on_change:
                self.on_change(dep, True)


def dependency_of(exc: BaseException) -> str | None:
    """Which dependency a transient failure belongs to; None: not transient (a bug or bad data)."""
    if isinstance(exc, StoreEmptied):
        return "store"
    if isinstance(exc, StoreUnavailable):
        return "redis"
    if isinstance(exc, BrokerError) and exc.transient:
        return "broker"
    return None


class Retrier:
    """Runs a call until it succeeds, waiting out transient failures; other errors propagate at once."""

    def __init__(self, health: Health, stop: threading.Event, first: float = 0.1, cap: float = 5.0):
        self.health, self.stop, self.first, self.cap = health, stop, first, cap

    def call(self, what: str, fn: Callable[[], T]) -> T:
        backoff = Backoff(self.first, self.cap)
        failed: set[str] = set()
        while True:
            try:
                out = fn()
            except Exception as exc:   # noqa: BLE001 - sorted into transient and not
                dep = dependency_of(exc)
                if dep is None:
                    raise
                hint = ("the store lost its data: run `recstream rebuild`; the worker resumes by itself "
                        "once it is done") if dep == "store" else ""
                self.health.fail(dep, f"{what}: {exc}", hint)
                failed.add(dep)
                if self.stop.wait(backoff.next()):
                    raise Stopping(what) from exc
                continue
            for dep in failed:
                self.health.ok(dep)
            return out
