"""The Kafka worker (confluent-kafka driver, the default): consume micro-batches, run the pipeline
core, emit recommendations and dead letters, then commit.

Delivery is at-least-once: offsets are committed only after the batch's Redis writes happened
and every produced message was acknowledged. A crash between the two redelivers the batch;
the profile stage skips event ids it has applied, and recommendation ids are derived from the
trigger event, so a redelivery changes no state and duplicates no recommendation id.

Nothing stops a partition (docs/worker.md, "Reliability"):
* bad input never reaches here as an exception: validation turns it into a dead letter;
* a transient outage (Redis unreachable or restarting, the broker down) is waited out with bounded
  backoff, committing nothing meanwhile; one log line when it starts and one when it ends;
* a store that lost its data (its marker key is gone) is not written to: the worker waits, saying so,
  until `recstream rebuild` has restored it;
* any other failure of a batch (a bug, a corrupt key) is retried `POISON_RETRIES` times; then the batch
  is split by user, and the events of the users that still fail go to the DLQ with the stage and the
  error, so the rest of the batch, and the partition, go on.

SIGTERM/SIGINT: finish the batch in hand, commit, leave the group, exit 0.
"""
from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from stream.config.settings import Settings
from stream.core.pipeline import Pipeline
from stream.core.stages import Applied, BatchResult
from stream.core.storage.serving import put_status
from stream.core.storage.store import server_advice
from stream.core.validate import InMessage
from stream.drivers.emitter import Emitter, worker_id
from stream.drivers.isolation import at_edge, guarded
from stream.drivers.commits import Committer, fmt_parts as _fmt
from stream.drivers.kafka import BrokerError, consumer_conf, producer_conf
from stream.drivers.metrics import WorkerMetrics
from stream.drivers.resilience import Health, Retrier, Stopping, stop_on_signals

log = logging.getLogger("recstream.worker")
STATUS_EVERY_S = 2.0                   # the worker's status in Redis (`{P}workers`): a heartbeat with numbers
DRAIN = object()                       # for the emitting thread: wait for every acknowledgement, release the offsets
# between batches the emitting thread looks for delivery reports this often (a wait in the handoff queue);
# a batch's own reports are served when the next one is sent. Polling every 2 ms instead raised the p99 at
# 1,000 events/s in a trial run (75 against 29-40 ms added): each wake-up asks the other thread for the GIL
ACK_POLL_S = 0.05


@dataclass(frozen=True)
class Job:
    """What the consuming thread hands the finishing thread: one batch after stages 1-2."""
    n_msgs: int
    applied: Applied                   # with validation's dead letters, and any the profile stage made
    offsets: dict                      # (topic, partition) -> next offset, committed once emitted
    event_ts: list[int]                # Kafka timestamps of the batch's events (latency)
    taken_ms: float                    # wall clock when the consumer handed the batch over (intake latency)
    handed: float                      # perf_counter when the batch was ready for the emitting thread


class ConfluentWorker:
    """The default driver: a consumer-group member on the events and items topics that runs the pipeline
    per micro-batch, emits recommendations and dead letters, and commits only what was fully handled.

    Two threads overlap consecutive batches (see `run`); every Redis and Kafka call goes through
    `self.retry` (transient outages waited out) and every stage through `guarded` (persistent failures
    isolated to the users that cause them). `self.health` is what a readiness probe reports.
    """

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
        self.health = Health(on_change=self.metrics.dependency)
        self.retry = Retrier(self.health, self.stop_event)
        self._status_at = -STATUS_EVERY_S

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop_event, log, "finishing the batch in hand, then committing and leaving the group")

    def run(self, max_idle_s: float | None = None) -> None:
        """Consume until stopped. Two threads overlap the work of consecutive batches: this one
        consumes, validates, applies profiles and shared statistics (mostly waiting on Redis) and
        gathers the batch's candidates (`Pipeline.prepare`), the other scores, ranks, emits and hands the
        offsets back to be committed here once the broker acknowledged the batch's output (`Emitter`).
        Candidates are gathered right after their own batch's writes, before the next batch's: what they
        read is what the backtest, which runs the stages in order, reads."""
        s = self.s
        committer = Committer(self.retry)
        consumer = Consumer(consumer_conf(s.brokers, self.group_id, session_timeout_ms=s.session_timeout_ms,
                                          on_commit=committer.on_commit))
        producer = Producer(producer_conf(s.brokers, **{"linger.ms": 1}))
        emitter = Emitter(producer, s, self.health, self.stop_event)
        handoff: queue.Queue = queue.Queue(maxsize=1)
        done: queue.Queue = queue.Queue()
        failure: list[BaseException] = []
        stopping: list[Stopping] = []

        def commit_done(drain: bool = False, wait: bool = False) -> None:
            if drain and finisher.is_alive():
                handoff.put(DRAIN)
                handoff.join()
            offsets: dict = {}
            while True:
                try:
                    offsets.update(done.get_nowait())
                except queue.Empty:
                    break
            committer.commit(consumer, offsets, asynchronous=not wait)

        def on_revoke(c, parts):
            commit_done(drain=True, wait=True)   # finish and commit what we hold before it moves
            committer.forget()
            log.info("revoked %s", _fmt(parts))

        def back_half() -> None:
            while True:
                try:      # while output is unacknowledged, look for its delivery reports between batches
                    job = handoff.get(timeout=ACK_POLL_S if emitter.in_flight else None)
                except queue.Empty:
                    if not failure and not stopping and (acked := emitter.acked()):
                        done.put(acked)
                    continue
                try:
                    if job is None or job is DRAIN:
                        if not failure and not stopping and (acked := emitter.drain()):
                            done.put(acked)
                        if job is None:
                            return
                    elif not failure and not stopping:
                        self._finish(job, emitter, done)
                except Stopping as stop:
                    stopping.append(stop)         # not a failure: the batch is left uncommitted
                except BaseException as exc:  # noqa: BLE001 - surfaced by the consuming thread
                    failure.append(exc)
                    self.stop_event.set()
                finally:
                    handoff.task_done()

        finisher = threading.Thread(target=back_half, name="recstream-emit", daemon=True)
        consumer.subscribe([s.events_topic, s.items_topic],
                           on_assign=lambda c, ps: log.info("assigned %s", _fmt(ps)), on_revoke=on_revoke)
        log.info("worker consuming %s and %s as group %s at %s (batch %d, wait %d ms, scorer %s)",
                 s.events_topic, s.items_topic, self.group_id, s.brokers, s.batch_size, s.batch_wait_ms,
                 self.pipeline.scorer.version)
        self._check_store(consumer)
        for advice in server_advice(self.pipeline.client):
            log.warning(advice)
        # fewer, cheaper GC passes: long-lived objects (catalog cache, clients) are frozen out of the
        # collector's scans, and young collections run less often (pauses showed up in p99 latency)
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        finisher.start()
        last_msg = time.monotonic()
        try:
            while not self.stop_event.is_set():
                commit_done()
                self._heartbeat()
                if self.between_batches:
                    self.between_batches()
                t_poll = time.perf_counter()
                msgs = consumer.consume(s.batch_size, s.batch_wait_ms / 1000)
                t_poll, taken_ms = time.perf_counter() - t_poll, time.time() * 1000
                batch, offsets, ts = [], {}, []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        if err.fatal():
                            raise BrokerError(f"{m.topic()}[{m.partition()}]: fatal: {err}")
                        # transport errors: librdkafka reconnects by itself; nothing was consumed
                        self.health.fail("broker", f"consume {m.topic() or s.events_topic}: {err}")
                        continue
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
                self.health.ok("broker")
                last_msg = time.monotonic()
                self._lag(consumer, offsets)   # the consumer is this thread's: lag is read here
                ing = self.retry.call("ingest", lambda: at_edge("ingest", lambda: self.pipeline.ingest(batch)))
                ing.timings["poll"] = t_poll
                applied, dead = guarded("profile", ing, lambda part: self.pipeline.apply(part, share=False),
                                        self.retry, self.stop_event)
                applied = replace(applied, dead_letters=applied.dead_letters + dead)
                # the whole batch's shared statistics, once per input offset (never split by user)
                self.retry.call("shared", lambda: at_edge("shared", lambda: self.pipeline.share(applied)))
                # the candidates too, here: this thread waits on Redis while the other scores the batch before
                handoff.put(Job(len(batch), self.pipeline.prepare(applied), offsets, ts, taken_ms, time.perf_counter()))
        except Stopping:
            log.info("stopped while waiting out an outage: the batch in hand stays uncommitted (redelivered later)")
        except KafkaException as exc:
            raise BrokerError(f"worker on {s.events_topic} at {s.brokers}: {exc}") from exc
        finally:
            handoff.put(None)
            finisher.join(60)
            try:
                if not failure:
                    commit_done(wait=True)
            finally:
                producer.flush(10)
                consumer.close()   # sends LeaveGroup: the partitions move at once, not after the session timeout
                log.info("worker stopped after %d batches", self.batches)
        if failure:
            raise failure[0]

    def _heartbeat(self) -> None:
        """Every STATUS_EVERY_S, busy or idle: this worker's numbers in Redis for the API's readiness and
        the dashboard. A failed write is skipped (readers then see the heartbeat go stale: not ready)."""
        if time.monotonic() - self._status_at < STATUS_EVERY_S:
            return
        self._status_at = time.monotonic()
        try:
            status = {**self.metrics.status(), "scorer": self.pipeline.scorer.version, "group": self.group_id,
                      "experiment": self.pipeline.experiment.name if self.pipeline.experiment else None}
        except Exception:  # noqa: BLE001 - a fault in the numbers must not stop the events (logged in full)
            log.exception("heartbeat skipped: the worker's numbers could not be computed")
            return
        try:
            put_status(self.pipeline.client, self.s.key_prefix, worker_id(), status)
        except Exception as exc:  # noqa: BLE001 - Redis away: the retrying stages report the outage
            log.debug("heartbeat skipped: %s", exc)

    def _check_store(self, consumer: Consumer) -> None:
        """A store without its marker is new (mark it) unless this group already committed offsets on the
        events topic: then Redis lost its data, and the worker waits for `recstream rebuild`."""
        profiles = self.pipeline.profiles
        if self.retry.call("check store", lambda: at_edge("check store", profiles.is_live)):
            return
        try:
            meta = consumer.list_topics(self.s.events_topic, timeout=10)
            parts = [TopicPartition(self.s.events_topic, p) for p in meta.topics[self.s.events_topic].partitions]
            committed = consumer.committed(parts, timeout=10) if parts else []
        except KafkaException as exc:
            raise BrokerError(f"read committed offsets of group {self.group_id}: {exc}") from exc
        if any(tp.offset >= 0 for tp in committed):
            log.error("the store at %s has no marker key %s but group %s has committed offsets: Redis lost its "
                      "data. Not serving from it; run `recstream rebuild` (this worker resumes by itself)",
                      self.pipeline.prefix, profiles.keys.marker, self.group_id)
        else:
            self.retry.call("mark store", lambda: at_edge("mark store", profiles.mark_live))

    def _finish(self, job: Job, emitter: Emitter, done: queue.Queue) -> None:
        """Stages 3-6 and the emit for one batch; the offsets of the batches whose output the broker has
        acknowledged by now (this one's usually with the next) go back to the consuming thread."""
        applied, waited = job.applied, time.perf_counter() - job.handed
        result, dead = guarded("recommend", applied, self.pipeline.recommend, self.retry, self.stop_event)
        result = result.with_dead_letters(dead)
        t_emit = time.perf_counter()
        emitter.send(result, job.offsets)
        result.timings["emit"] = time.perf_counter() - t_emit
        # each user's latest list (the HTTP API's cached read) and the experiment's outcome counts
        self.retry.call("publish", lambda: at_edge("publish", lambda: self.pipeline.publish(result, self.s.latest_ttl_s)))
        if acked := emitter.acked():
            done.put(acked)
        now_ms = time.time() * 1000
        self.metrics.observe_batch(job.n_msgs, result, [(now_ms - x) / 1000 for x in job.event_ts if x > 0],
                                   intake=[(job.taken_ms - x) / 1000 for x in job.event_ts if x > 0], handoff=waited)
        self.metrics.observe_ranker(self.pipeline.ranker)
        self.batches += 1
        if self.on_batch:      # the ranker's checkpoint: Redis again, so outages are waited out here too
            self.retry.call("after batch", lambda: at_edge("after batch", lambda: self.on_batch(result)))

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
