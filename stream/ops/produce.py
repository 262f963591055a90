"""Send a log to Kafka: validated Event v1 messages keyed by user_id (per-user order holds).

Lines that fail mapping or validation are reported with their line number and reason and are
not sent. Used by `recstream produce` and by the demo, replay and benchmarks.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import orjson
from confluent_kafka import KafkaException, Producer

from schemas import Rejected, validate_event, validate_item
from stream.drivers.kafka import BrokerError, producer_conf


@dataclass
class ProduceReport:
    sent: int = 0
    by_type: Counter = field(default_factory=Counter)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def merge(self, other: "ProduceReport") -> None:
        """Add another run's figures (a replay sent in parts)."""
        self.sent += other.sent
        self.by_type.update(other.by_type)
        self.rejected += other.rejected
        self.failed += other.failed
        self.seconds += other.seconds

    def summary(self, what: str = "events") -> str:
        types = ", ".join(f"{k} {v}" for k, v in sorted(self.by_type.items()))
        return (f"sent {self.sent} {what} in {self.seconds:.1f}s ({self.rate:,.0f}/s)"
                + (f" [{types}]" if types else "")
                + f"; rejected {len(self.rejected)}; delivery failures {self.failed}")


class Pacer:
    """Hold a steady rate: call `wait(n)` after each n records (no-op when rate is None)."""

    def __init__(self, rate: float | None):
        self.rate, self.start, self.done = rate, time.monotonic(), 0

    def wait(self, n: int = 1) -> None:
        self.done += n
        if not self.rate:
            return
        ahead = self.done / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="ev", disable=not enabled, file=sys.stderr,
                mininterval=0.5, smoothing=0.1)


def produce_events(records: Iterable[tuple[int, object]], topic: str, brokers: str, *,
                   rate: float | None = None, progress: bool = False, total: int | None = None,
                   producer: Producer | None = None, validate: bool = True) -> ProduceReport:
    """Validate and send `(line_no, record)` pairs; record is an Event dict, raw JSON bytes, or Rejected.

    With validate=False raw bytes are sent unchanged (to exercise the worker's dead-letter path).
    """
    producer = producer or Producer(producer_conf(brokers))
    report = ProduceReport()

    def on_delivery(err, msg):
        if err is not None:
            report.failed += 1

    pacer = Pacer(rate)
    t0 = time.monotonic()
    bar = _progress(total, f"produce {topic}", progress)
    try:
        for n, rec in records:
            if isinstance(rec, Rejected):
                report.rejected.append((n, rec.reason))
                continue
            if validate:
                ev = validate_event(rec)
                if isinstance(ev, Rejected):
                    report.rejected.append((n, ev.reason))
                    continue
                key, value = ev.user_id.encode(), ev.to_json()
                report.by_type[ev.type] += 1
            else:
                value = rec if isinstance(rec, bytes) else orjson.dumps(rec)
                key = None
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
                except KafkaException as exc:
                    raise BrokerError(f"produce to {topic} at {brokers}: {exc}") from exc
            report.sent += 1
            if report.sent % 1000 == 0:
                producer.poll(0)
                bar.update(1000)
            pacer.wait()
        remaining = producer.flush(60)
        if remaining:
            report.failed += remaining
        bar.update(report.sent % 1000)
    finally:
        bar.close()
    report.seconds = time.monotonic() - t0
    return report


def produce_items(items: Iterable[dict], topic: str, brokers: str) -> ProduceReport:
    """Upsert Item v1 records on the catalog topic, keyed by item_id."""
    producer = Producer(producer_conf(brokers))
    report = ProduceReport()
    t0 = time.monotonic()
    for n, raw in enumerate(items, 1):
        it = validate_item(raw)
        if isinstance(it, Rejected):
            report.rejected.append((n, it.reason))
            continue
        while True:
            try:
                producer.produce(topic, it.to_json(), it.item_id.encode())
                break
            except BufferError:
                producer.poll(0.05)
        report.sent += 1
    report.failed = producer.flush(60)
    report.seconds = time.monotonic() - t0
    return report


def print_rejects(report: ProduceReport, limit: int = 20, out=sys.stderr) -> None:
    for n, reason in report.rejected[:limit]:
        print(f"  line {n}: {reason}", file=out)
    if len(report.rejected) > limit:
        print(f"  ... and {len(report.rejected) - limit} more (use --rejects FILE for all)", file=out)


def count_lines(path) -> int | None:
    try:
        with open(path, "rb") as fh:
            return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None
