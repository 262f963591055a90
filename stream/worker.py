"""The Kafka worker (confluent-kafka driver, the default): consume micro-batches, run the pipeline
core, emit recommendations and dead letters, then commit.

Delivery is at-least-once: offsets are committed only after the batch's Redis writes happened
and every produced message was acknowledged. A crash between the two redelivers the batch;
the profile stage skips event ids it has applied, and recommendation ids are derived from the
trigger event, so a redelivery changes no state and duplicates no recommendation id.

SIGTERM/SIGINT: finish the batch in hand, commit, leave the group, exit 0.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream.kafka import BrokerError, consumer_conf, producer_conf
from stream.metrics import WorkerMetrics
from stream.pipeline import BatchResult, Pipeline
from stream.settings import Settings
from stream.validate import DeadLetter, InMessage

log = logging.getLogger("recstream.worker")


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, bytes]]:
    return [("recstream.reason", d.reason.encode()), ("recstream.source.topic", d.topic.encode()),
            ("recstream.source.partition", str(d.partition).encode()),
            ("recstream.source.offset", str(d.offset).encode()), ("recstream.stage", b"validate")]


def worker_id() -> str:
    import os
    import socket
    return f"{socket.gethostname()}:{os.getpid()}"


class Emitter:
    """Produces a batch's output and waits until the broker acknowledged all of it."""

    def __init__(self, producer: Producer, settings: Settings):
        self.producer, self.s = producer, settings
        self.failures: list[str] = []
        self.headers = [("recstream.worker", worker_id().encode())]

    def _cb(self, err, msg):
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err}")

    def send(self, result: BatchResult) -> None:
        p = self.producer
        for rec in result.recommendations:
            self._produce(self.s.recs_topic, rec.to_json(), rec.user_id.encode(), self.headers)
        for d in result.dead_letters:
            self._produce(self.s.dlq_topic, d.value, d.key, dead_letter_headers(d))
        remaining = p.flush(30)
        if remaining or self.failures:
            msg = f"{remaining} unacknowledged, failures: {self.failures[:3]}"
            self.failures.clear()
            raise BrokerError(f"emit to {self.s.recs_topic}/{self.s.dlq_topic}: {msg}")

    def _produce(self, topic, value, key, headers=None):
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=self._cb)
                return
            except BufferError:
                self.producer.poll(0.05)


class ConfluentWorker:
    def __init__(self, settings: Settings, pipeline: Pipeline, *, metrics: WorkerMetrics | None = None,
                 group_id: str | None = None, on_batch: Callable[[BatchResult], None] | None = None,
                 between_batches: Callable[[], None] | None = None):
        self.s = settings
        self.pipeline = pipeline
        self.metrics = metrics or WorkerMetrics(0, settings.log_every_s)
        self.group_id = group_id or settings.group_id
        self.on_batch = on_batch
        self.between_batches = between_batches
        self.stop_event = threading.Event()
        self.batches = 0

    def install_signal_handlers(self) -> None:
        def handler(signum, frame):
            log.info("signal %d: finishing the batch in hand, then committing and leaving the group", signum)
            self.stop_event.set()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self, max_idle_s: float | None = None) -> None:
        s = self.s
        consumer = Consumer(consumer_conf(s.brokers, self.group_id, session_timeout_ms=s.session_timeout_ms))
        producer = Producer(producer_conf(s.brokers, **{"linger.ms": 2}))
        emitter = Emitter(producer, s)
        consumer.subscribe([s.events_topic, s.items_topic],
                           on_assign=lambda c, ps: log.info("assigned %s", _fmt(ps)),
                           on_revoke=lambda c, ps: log.info("revoked %s", _fmt(ps)))
        log.info("worker consuming %s and %s as group %s at %s (batch %d, wait %d ms, scorer %s)",
                 s.events_topic, s.items_topic, self.group_id, s.brokers, s.batch_size, s.batch_wait_ms,
                 self.pipeline.scorer.version)
        last_msg = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if self.between_batches:
                    self.between_batches()
                t_poll = time.perf_counter()
                msgs = consumer.consume(s.batch_size, s.batch_wait_ms / 1000)
                t_poll = time.perf_counter() - t_poll
                batch, offsets, ts = [], {}, []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise BrokerError(f"{m.topic()}[{m.partition()}]: {err}")
                    kind = "item" if m.topic() == s.items_topic else "event"
                    batch.append(InMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset(), kind))
                    offsets[(m.topic(), m.partition())] = m.offset() + 1
                    if kind == "event":
                        ts.append(m.timestamp()[1])
                if not batch:
                    if max_idle_s is not None and time.monotonic() - last_msg > max_idle_s:
                        log.info("idle for %.0fs: stopping", max_idle_s)
                        break
                    continue
                last_msg = time.monotonic()
                result = self.pipeline.process_batch(batch)
                result.timings["poll"] = t_poll
                t_emit = time.perf_counter()
                emitter.send(result)
                result.timings["emit"] = time.perf_counter() - t_emit
                t_commit = time.perf_counter()
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                asynchronous=False)
                result.timings["commit"] = time.perf_counter() - t_commit
                now_ms = time.time() * 1000
                self.metrics.observe_batch(len(batch), result, [(now_ms - x) / 1000 for x in ts if x > 0])
                self._lag(consumer, offsets)
                self.batches += 1
                if self.on_batch:
                    self.on_batch(result)
        except KafkaException as exc:
            raise BrokerError(f"worker on {s.events_topic} at {s.brokers}: {exc}") from exc
        finally:
            producer.flush(10)
            consumer.close()   # sends LeaveGroup: the partitions move at once, not after the session timeout
            log.info("worker stopped after %d batches", self.batches)

    def _lag(self, consumer: Consumer, offsets: dict) -> None:
        for (topic, part), pos in offsets.items():
            if topic != self.s.events_topic:
                continue
            try:
                # the fetch-response high watermark (cached=True) is right on Tansu; a fresh query is not
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, part), cached=True)
                if high >= 0:
                    self.metrics.lag.labels(str(part)).set(max(0, high - pos))
            except KafkaException:
                pass


def _fmt(parts) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in parts) or "nothing"
