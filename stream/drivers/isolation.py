"""Failure isolation for a driver: a stage that keeps failing on a batch (a bug, a corrupt key; not an
outage, which the `Retrier` waits out) is retried `POISON_RETRIES` times, then run per user; the events
of the users that still fail become dead letters naming the stage, the error and their
topic[partition]@offset, so the rest of the batch, and the partition, go on."""
from __future__ import annotations

import logging
import threading
from typing import Callable

import redis

from stream.core.stages import merge
from stream.core.validate import DeadLetter, InMessage
from stream.drivers.resilience import Retrier, Stopping
from stream.errors import translate_redis

log = logging.getLogger("recstream.worker")

POISON_RETRIES = 3          # attempts at a failing batch before it is split and the failing users dead-lettered


def at_edge(stage: str, fn: Callable):
    """Run a pipeline stage, translating redis-py's errors (the foreign ones) into StoreError subclasses."""
    try:
        return fn()
    except redis.RedisError as exc:
        raise translate_redis(exc, stage) from exc


def guarded(stage: str, whole, fn, retry: Retrier, stop_event: threading.Event):
    """`fn(whole)` (an `Ingested` or `Applied`), with transient failures waited out. A failure that
    persists over POISON_RETRIES attempts is a bug or a corrupt key, not an outage: the input is split
    by user (`whole.only`) and `fn` runs per user; the events of users that still fail become dead
    letters naming the stage, the error and their topic[partition]@offset.
    Returns (the stage's result for the whole batch, merged from the parts after an isolation; the
    dead letters of the isolated users)."""
    events = whole.events
    origins = whole.origins
    if not events:
        return retry.call(stage, lambda: at_edge(stage, lambda: fn(whole))), []
    last: Exception | None = None
    for attempt in range(POISON_RETRIES):
        try:
            return retry.call(stage, lambda: at_edge(stage, lambda: fn(whole))), []
        except Stopping:
            raise
        except Exception as exc:   # noqa: BLE001 - isolated below
            last = exc
            log.error("%s failed on %d events (%s), attempt %d of %d: %s: %s", stage, len(events),
                      _span(origins), attempt + 1, POISON_RETRIES, type(exc).__name__, exc)
            if stop_event.wait(0.2 * (attempt + 1)):
                raise Stopping(stage) from exc
    by_user: dict[str, list[int]] = {}
    for i, ev in enumerate(events):
        by_user.setdefault(ev.user_id, []).append(i)
    parts, dead = [], []
    for user, idx in by_user.items():
        part = whole.only({user})
        try:
            parts.append(retry.call(stage, lambda: at_edge(stage, lambda: fn(part))))
        except Stopping:
            raise
        except Exception as exc:   # noqa: BLE001 - this user's events are the poison
            reason = f"{stage}: {type(exc).__name__}: {exc}"
            for i in idx:
                d = DeadLetter.of(origins[i], reason, stage)
                log.error("dead-lettered %s after %s failed %d times: %s", d.where, stage, POISON_RETRIES,
                          d.reason)
                dead.append(d)
    log.warning("%s: %d of %d events dead-lettered after isolating the failure (%s)", stage, len(dead),
                len(events), type(last).__name__)
    return merge(whole, parts), dead


def _span(origins: list[InMessage]) -> str:
    """Where a batch's events came from: topic[partition]@first..last per partition."""
    spans: dict[tuple[str, int], list[int]] = {}
    for m in origins:
        spans.setdefault((m.topic, m.partition), []).append(m.offset)
    return ", ".join(f"{t}[{p}]@{min(o)}..{max(o)}" for (t, p), o in sorted(spans.items()))
