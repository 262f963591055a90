"""The archive sink (`recstream archive`): a consumer group of its own on the events topic that keeps every
accepted event in the event archive (stream/data/archive.py), beside the worker, never in its way.

Each message is validated with the worker's own contracts (what the worker dead-letters is not kept; the
worker reports it) and pseudonymised with the same key, so the archive holds what the profiles were built
from. Offsets are committed only after the Parquet file holding their events has been renamed into place:
a crash before that redelivers them, the flush writes the same file name again (or an overlapping one,
read once: readers keep the first of each (user, event id)), so nothing is lost and nothing is read twice.
SIGTERM/SIGINT: flush, commit, leave the group.
"""
from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream.config.settings import Settings
from stream.core.validate import InMessage, validate_with_origins
from stream.data.archive import ArchiveWriter
from stream.drivers.kafka import REBALANCE_CODES, BrokerError, consumer_conf
from stream.drivers.resilience import stop_on_signals
from stream.secrets import Pseudonymiser

log = logging.getLogger("recstream.archive")


class Archiver:
    def __init__(self, s: Settings, *, root: str | None = None, group_id: str | None = None,
                 roll_events: int = 50_000, roll_s: float = 10.0):
        self.s = s
        self.group_id = group_id or f"{s.group_id}-archive"
        self.writer = ArchiveWriter(root or s.archive_dir, roll_events=roll_events, roll_s=roll_s,
                                    retention_days=s.archive_retention_days)
        self.pseudonymiser = Pseudonymiser(s.pseudonymise_key.encode()) if s.pseudonymise_key else None
        self.stop_event = threading.Event()
        self.rejected = 0

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop_event, log, "flushing the archive, committing, leaving the group")

    def run(self, max_idle_s: float | None = None) -> None:
        s = self.s
        consumer = Consumer(consumer_conf(s.brokers, self.group_id, session_timeout_ms=s.session_timeout_ms))
        last_msg, assigned = time.monotonic(), False

        def on_assign(c, parts):
            nonlocal last_msg, assigned
            last_msg, assigned = time.monotonic(), True   # --max-idle counts from the group join (seconds)

        consumer.subscribe([s.events_topic], on_assign=on_assign)
        log.info("archiving %s as group %s into %s (retention %d days)", s.events_topic, self.group_id,
                 self.writer.root, s.archive_retention_days)
        pending: dict = {}            # (topic, partition) -> next offset, committed after the next flush
        try:
            while not self.stop_event.is_set():
                msgs = consumer.consume(1000, 0.2)
                batch = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF and err.fatal():
                            raise BrokerError(f"{m.topic()}[{m.partition()}]: fatal: {err}")
                        continue
                    batch.append(InMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset(), "event"))
                    pending[(m.topic(), m.partition())] = m.offset() + 1
                if batch:
                    last_msg = time.monotonic()
                    events, _, _, dead = validate_with_origins(batch)
                    self.rejected += len(dead)
                    if self.pseudonymiser is not None:
                        events = self.pseudonymiser.events(events)
                    self.writer.add(events)
                if self.writer.due() or (pending and not self.writer.buffer):
                    self._flush(consumer, pending)
                elif not batch and assigned and max_idle_s is not None and time.monotonic() - last_msg > max_idle_s:
                    log.info("idle for %.0fs: stopping", max_idle_s)
                    break
        except KafkaException as exc:
            raise BrokerError(f"archive on {s.events_topic} at {s.brokers}: {exc}") from exc
        finally:
            try:
                self._flush(consumer, pending)
            finally:
                consumer.close()
                log.info("archive stopped: %d events in %d files written, %d messages not valid (not kept)",
                         self.writer.events_written, self.writer.files_written, self.rejected)

    def _flush(self, consumer: Consumer, pending: dict) -> None:
        """Write the buffer, then commit the offsets its messages came from (never before)."""
        n = self.writer.flush()
        if pending:
            try:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in pending.items()],
                                asynchronous=False)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is None or err.code() not in REBALANCE_CODES:
                    raise
                log.warning("commit dropped (%s): the partitions moved; their events are archived again there and "
                            "read once", err)
            pending.clear()
        if n:
            log.debug("archived %d events (%d in total)", n, self.writer.events_written)
