"""The Kafka worker (confluent-kafka driver, the default): consume micro-batches, run the pipeline
core, emit recommendations and dead letters, then commit.

Delivery is at-least-once: offsets are committed only after the batch's Redis writes happened
and every produced message was acknowledged. A crash between the two redelivers the batch;
the profile stage skips event ids it has applied, and recommendation ids are derived from the
trigger event, so a redelivery changes no state and duplicates no recommendation id.

SIGTERM/SIGINT: finish the batch in hand, commit, leave the group, exit 0.
"""
from __future__ import annotations

import gc
import logging
import queue
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
        """Consume until stopped. Two threads overlap the work of consecutive batches: this one
        consumes, validates and applies profiles (mostly waiting on Redis' Lua), the other gathers
        candidates, scores, ranks, emits and hands the offsets back to be committed here. A batch's
        recommendations may therefore read co-visitation/trending that already include the next
        batch (one batch of look-ahead in live serving; the backtest runs the stages in order)."""
        s = self.s
        consumer = Consumer(consumer_conf(s.brokers, self.group_id, session_timeout_ms=s.session_timeout_ms))
        producer = Producer(producer_conf(s.brokers, **{"linger.ms": 1}))
        emitter = Emitter(producer, s)
        handoff: queue.Queue = queue.Queue(maxsize=1)
        done: queue.Queue = queue.Queue()
        failure: list[BaseException] = []

        def commit_done(block_until_drained: bool = False) -> None:
            if block_until_drained:
                handoff.join()
            offsets: dict = {}
            while True:
                try:
                    offsets.update(done.get_nowait())
                except queue.Empty:
                    break
            if offsets:
                consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                asynchronous=False)

        def on_revoke(c, parts):
            commit_done(block_until_drained=True)   # finish and commit what we hold before it moves
            log.info("revoked %s", _fmt(parts))

        def back_half() -> None:
            while True:
                job = handoff.get()
                try:
                    if job is None:
                        return
                    if not failure:
                        self._finish(job, emitter, done)
                except BaseException as exc:  # noqa: BLE001 - surfaced by the consuming thread
                    failure.append(exc)
                    self.stop_event.set()
                finally:
                    handoff.task_done()

        consumer.subscribe([s.events_topic, s.items_topic],
                           on_assign=lambda c, ps: log.info("assigned %s", _fmt(ps)), on_revoke=on_revoke)
        log.info("worker consuming %s and %s as group %s at %s (batch %d, wait %d ms, scorer %s)",
                 s.events_topic, s.items_topic, self.group_id, s.brokers, s.batch_size, s.batch_wait_ms,
                 self.pipeline.scorer.version)
        # fewer, cheaper GC passes: long-lived objects (catalog cache, clients) are frozen out of the
        # collector's scans, and young collections run less often (pauses showed up in p99 latency)
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        finisher = threading.Thread(target=back_half, name="recstream-emit", daemon=True)
        finisher.start()
        last_msg = time.monotonic()
        try:
            while not self.stop_event.is_set():
                commit_done()
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
                self._lag(consumer, offsets)   # the consumer is this thread's: lag is read here
                events, dead, n_items, timings = self.pipeline.ingest(batch)
                timings["poll"] = t_poll
                snaps = self.pipeline.apply_profiles(events, timings)
                handoff.put((len(batch), events, snaps, dead, n_items, timings, offsets, ts))
        except KafkaException as exc:
            raise BrokerError(f"worker on {s.events_topic} at {s.brokers}: {exc}") from exc
        finally:
            handoff.put(None)
            finisher.join(60)
            try:
                if not failure:
                    commit_done()
            finally:
                producer.flush(10)
                consumer.close()   # sends LeaveGroup: the partitions move at once, not after the session timeout
                log.info("worker stopped after %d batches", self.batches)
        if failure:
            raise failure[0]

    def _finish(self, job, emitter: Emitter, done: queue.Queue) -> None:
        """Stages 3-6 and the emit for one batch; its offsets go back to the consuming thread."""
        n_msgs, events, snaps, dead, n_items, timings, offsets, ts = job
        result = self.pipeline.recommend(events, snaps, timings)
        result.dead_letters, result.items = dead, n_items
        t_emit = time.perf_counter()
        emitter.send(result)
        result.timings["emit"] = time.perf_counter() - t_emit
        done.put(offsets)
        now_ms = time.time() * 1000
        self.metrics.observe_batch(n_msgs, result, [(now_ms - x) / 1000 for x in ts if x > 0])
        self.batches += 1
        if self.on_batch:
            self.on_batch(result)

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
