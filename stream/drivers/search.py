"""The search side's processes: re-ranking by request/reply over Kafka, and the trends publisher.

`recstream search-service`: a consumer group on the requests topic (`RECSTREAM_SEARCH_REQUESTS_TOPIC`);
each request (schemas/search.py, `request_id` required) is re-ranked by the same `SearchReranker` as
`POST /v1/search/rerank` and answered on the results topic, keyed by user, carrying the request id. A bad
request is answered with `{"request_id", "error": {"loc", "msg"}}` naming the field when its id can be
read, and dead-lettered (reason in the headers) otherwise. Offsets are committed after the replies were
acknowledged: a crash answers a request again (the shop keeps the first reply per request id).

`recstream trends run`: a consumer group of its own on the events topic feeds a `TrendTracker` (event
time; stream/core/search/trends.py) and publishes its snapshot every `RECSTREAM_TRENDS_EVERY_S` seconds
to the trends topic and to Redis (`{P}trends`, what `GET /v1/trends` serves). The tracker's state is
checkpointed in Redis *with the input offsets it covers*, in one write, and a restarted process seeks to
those offsets: every event is counted exactly once across restarts (the Kafka Streams way of tying state
to input offsets; the group's committed offsets are only for monitoring).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import replace

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from schemas import Rejected, validate_search_request
from stream.config.compose import assemble
from stream.config.settings import Settings
from stream.core.search.rerank import RerankConfig, SearchReranker
from stream.core.search.trends import TrendTracker
from stream.core.storage.catalog import Catalog
from stream.core.storage.serving import store_now
from stream.core.storage.store import connect
from stream.core.validate import InMessage, validate_with_origins
from stream.drivers.kafka import BrokerError, consumer_conf, producer_conf
from stream.drivers.resilience import Health, Retrier, stop_on_signals
from stream.errors import TRANSIENT_REDIS, translate_redis
from stream.secrets import Pseudonymiser

log = logging.getLogger("recstream.search")
TRENDS_KEY = "{trends}"                 # one hash tag: the publish script writes all four (Redis Cluster)
TRENDS_STATE = "{trends}:state"
TRENDS_LEASE = "{trends}:lease"
TRENDS_WRITER = "{trends}:writer"       # who wrote the state last (it may take a lapsed lease back)


def read_only_reranker(s: Settings) -> SearchReranker:
    """A re-ranker over the store as the worker keeps it (the API and the search service build this)."""
    pipeline = assemble(connect(s.redis_url), s.key_prefix, encoder_dir=s.encoder_dir, explore=False,
                        model_dir=s.model_dir, init_store=False, guard=False)
    return SearchReranker(pipeline, RerankConfig(window_s=s.search_window_s, holdout=s.search_holdout))


def rerank_request(reranker: SearchReranker, req, prefix: str) -> dict:
    """Answer one validated request (the store's clock is the search's event time when it names none)."""
    now = req.ts or store_now(reranker.p.client, prefix) or int(time.time() * 1000)
    out = reranker.rerank(req.user_id, req.query, req.items, req.engine_scores, req.k, now_ts=now)
    if req.request_id is not None:
        out["request_id"] = req.request_id
    return out


def _fatal(msgs) -> list:
    good = []
    for m in msgs:
        err = m.error()
        if err is None:
            good.append(m)
        elif err.code() != KafkaError._PARTITION_EOF and err.fatal():
            raise BrokerError(f"{m.topic()}[{m.partition()}]: fatal: {err}")
    return good


class SearchService:
    def __init__(self, s: Settings, reranker: SearchReranker | None = None):
        self.s, self.stop_event = s, threading.Event()
        self.reranker = reranker or read_only_reranker(s)
        self.pseudo = Pseudonymiser(s.pseudonymise_key.encode()) if s.pseudonymise_key else None
        self.retrier = Retrier(Health(), self.stop_event)
        self.answered = self.refused = 0

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop_event, log, "answering the requests in hand, leaving the group")

    def answer_retrying(self, value: bytes | None):
        """`answer`, waiting out a Redis outage with backoff (nothing is committed meanwhile)."""
        def once():
            try:
                return self.answer(value)
            except TRANSIENT_REDIS as exc:
                raise translate_redis(exc, "search re-rank") from exc
        return self.retrier.call("re-rank", once)

    def answer(self, value: bytes | None) -> tuple[str, bytes | None, bytes, str | None]:
        """(topic, key, reply, dead-letter reason or None) for one request message."""
        req = validate_search_request(value, need_id=True)
        if isinstance(req, Rejected):
            self.refused += 1
            try:
                obj = orjson.loads(value or b"")
                rid, user = obj.get("request_id"), obj.get("user_id")
            except (orjson.JSONDecodeError, AttributeError):
                rid = user = None
            if isinstance(rid, str) and rid:
                err = {"request_id": rid, "error": {"loc": ["body", *req.field.split(".")], "msg": req.reason}}
                return self.s.search_results_topic, str(user).encode() if user else None, orjson.dumps(err), None
            return self.s.dlq_topic, None, value or b"", req.reason
        self.answered += 1
        user = req.user_id
        if self.pseudo is not None:            # profiles are kept under pseudonyms; the reply names the caller's id
            req = replace(req, user_id=self.pseudo.user(user))
        out = {**rerank_request(self.reranker, req, self.s.key_prefix), "user_id": user}
        return self.s.search_results_topic, user.encode("utf-8", "surrogatepass"), orjson.dumps(out), None

    def run(self, max_idle_s: float | None = None) -> None:
        s = self.s
        consumer = Consumer(consumer_conf(s.brokers, f"{s.group_id}-search", session_timeout_ms=s.session_timeout_ms))
        producer = Producer(producer_conf(s.brokers))
        last, assigned = time.monotonic(), []

        def on_assign(c, parts):
            nonlocal last
            assigned.append(1)
            last = time.monotonic()            # --max-idle counts from the group join

        consumer.subscribe([s.search_requests_topic], on_assign=on_assign)
        log.info("answering re-rank requests on %s -> %s", s.search_requests_topic, s.search_results_topic)
        try:
            while not self.stop_event.is_set():
                msgs = _fatal(consumer.consume(200, 0.1))
                if not msgs:
                    if assigned and max_idle_s is not None and time.monotonic() - last > max_idle_s:
                        break
                    continue
                last = time.monotonic()
                for m in msgs:
                    topic, key, reply, reason = self.answer_retrying(m.value())
                    headers = [("recstream.reason", reason.encode()), ("recstream.source.topic", m.topic().encode()),
                               ("recstream.source.offset", str(m.offset()).encode())] if reason else None
                    producer.produce(topic, reply, key, headers=headers)
                if producer.flush(30):
                    raise BrokerError(f"replies to {s.search_results_topic} not acknowledged in 30 s")
                consumer.commit(asynchronous=False)
        except KafkaException as exc:
            raise BrokerError(f"search service on {s.search_requests_topic} at {s.brokers}: {exc}") from exc
        finally:
            consumer.close()
            log.info("search service stopped: %d answered, %d refused", self.answered, self.refused)


# the snapshot and the state (with its offsets) written only by the lease's holder, which extends it; one
# slowed past its lease takes it back if nobody holds it and nobody else wrote the state since.
_PUBLISH = """
local cur, took = redis.call("GET", KEYS[1]), 1
if cur ~= ARGV[1] then
  if cur or redis.call("GET", KEYS[4]) ~= ARGV[1] then return 0 end
  took = 2
end
redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
redis.call("MSET", KEYS[2], ARGV[3], KEYS[3], ARGV[4], KEYS[4], ARGV[1])
return took
"""


class LeaseLost(RuntimeError):
    """Another trends process holds the lease: this one must not write (it was paused past the lease)."""


class TrendsPublisher:
    """One per deployment: its state is one Redis key, so a lease (`{P}trends:lease`, extended at every
    publish, `max(2 s, 3 x RECSTREAM_TRENDS_EVERY_S)`) lets one process count and write; a second waits. A
    holder paused past its lease stops without writing, or takes it back if nobody did and wrote since."""

    def __init__(self, s: Settings, *, n: int = 20):
        self.s, self.n, self.stop_event = s, n, threading.Event()
        self.client = connect(s.redis_url)
        self.tracker = TrendTracker(window_s=s.trends_window_s)
        self.offsets: dict[str, int] = {}              # "topic:partition" -> next offset, saved with the state
        self.published = 0
        self.retrier = Retrier(Health(), self.stop_event)
        self.catalog = Catalog(self.client, s.key_prefix)
        self.holder = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.lease_ms = int(max(2.0, 3 * s.trends_every_s) * 1000)
        self._publish = self.client.register_script(_PUBLISH)

    def acquire(self) -> bool:
        """Take the lease if it is free (or ours already)."""
        key = self.s.key_prefix + TRENDS_LEASE
        return bool(self.client.set(key, self.holder, nx=True, px=self.lease_ms)) or \
            self.client.get(key) == self.holder.encode()

    def release(self) -> None:
        key = self.s.key_prefix + TRENDS_LEASE
        if self.client.get(key) == self.holder.encode():
            self.client.delete(key)

    def restore(self) -> None:
        """The checkpointed state and the offsets it covers (read after the lease is held)."""
        raw = self.client.get(self.s.key_prefix + TRENDS_STATE)
        if raw:
            saved = orjson.loads(raw)
            self.tracker.load(saved["tracker"])
            self.offsets = saved["offsets"]
            log.info("trends restored at event time %d, offsets %s", self.tracker.now, self.offsets)

    def install_signal_handlers(self) -> None:
        stop_on_signals(self.stop_event, log, "publishing and checkpointing the trends")

    def publish_retrying(self, producer: Producer | None) -> dict:
        """`publish`, waiting out a Redis outage with backoff (the events read meanwhile stay in memory, the
        checkpoint is written once Redis is back)."""
        def once():
            try:
                return self.publish(producer)
            except TRANSIENT_REDIS as exc:
                raise translate_redis(exc, "trends checkpoint") from exc
        return self.retrier.call("trends", once)

    def publish(self, producer: Producer | None) -> dict:
        snap = self.tracker.snapshot(self.n)
        body = orjson.dumps(snap)
        state = orjson.dumps({"tracker": self.tracker.state(), "offsets": self.offsets}, option=orjson.OPT_SERIALIZE_NUMPY)
        p = self.s.key_prefix                                   # the snapshot, the state and its offsets: one write
        done = self._publish(keys=[p + TRENDS_LEASE, p + TRENDS_KEY, p + TRENDS_STATE, p + TRENDS_WRITER],
                             args=[self.holder, self.lease_ms, body, state])
        if not done:
            raise LeaseLost(f"{p}{TRENDS_LEASE} is held by another trends process; this one stops without writing")
        if done == 2:
            log.warning("trends: lease %s%s lapsed (over %d ms between publishes); nobody took it: taken back",
                        p, TRENDS_LEASE, self.lease_ms)
        if producer is not None:
            producer.produce(self.s.trends_topic, body, b"trends")
            producer.flush(10)
        self.published += 1
        return snap

    def run(self, max_idle_s: float | None = None) -> None:
        s = self.s
        waited = False
        while not self.acquire():
            if not waited:
                log.warning("another trends process holds %s%s: waiting for it (one per deployment)",
                            s.key_prefix, TRENDS_LEASE)
                waited = True
            if self.stop_event.wait(0.5):
                return
        self.restore()
        consumer = Consumer(consumer_conf(s.brokers, f"{s.group_id}-trends", session_timeout_ms=s.session_timeout_ms))
        producer = Producer(producer_conf(s.brokers))

        assigned = []

        def on_assign(c, parts):               # resume where the checkpointed state ends, not where the group did
            nonlocal last
            for p in parts:
                p.offset = self.offsets.get(f"{p.topic}:{p.partition}", p.offset)
            c.assign(parts)
            assigned.append(1)
            last = time.monotonic()            # --max-idle counts from the group join

        consumer.subscribe([s.events_topic], on_assign=on_assign)
        log.info("trends of %s every %.0fs (window %.0fs) -> %s and Redis %s%s", s.events_topic, s.trends_every_s,
                 s.trends_window_s, s.trends_topic, s.key_prefix, TRENDS_KEY)
        due, last = time.monotonic() + s.trends_every_s, time.monotonic()
        try:
            while not self.stop_event.is_set():
                msgs = _fatal(consumer.consume(1000, 0.2))
                if msgs:
                    last = time.monotonic()
                    batch = [InMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset(), "event") for m in msgs]
                    events, _, _, _ = validate_with_origins(batch)
                    meta = self.catalog.meta({ev.item_id for ev in events if ev.item_id})   # one read per batch
                    self.tracker.observe(events, lambda item: meta[item][0])
                    for m in msgs:
                        self.offsets[f"{m.topic()}:{m.partition()}"] = m.offset() + 1
                if time.monotonic() >= due:
                    self.publish_retrying(producer)
                    due = time.monotonic() + s.trends_every_s
                if not msgs and assigned and max_idle_s is not None and time.monotonic() - last > max_idle_s:
                    break
        except KafkaException as exc:
            raise BrokerError(f"trends on {s.events_topic} at {s.brokers}: {exc}") from exc
        finally:
            try:
                self.publish(producer)
                self.release()
            except Exception:  # the last checkpoint stands; the consumer must still leave the group
                log.exception("trends: the final publish failed; the last checkpoint stands")
            if self.offsets:                   # for monitoring only: the state's own offsets are what counts
                parts = [TopicPartition(topic, int(part), o)
                         for (topic, _, part), o in ((k.rpartition(":"), o) for k, o in self.offsets.items())]
                try:
                    consumer.commit(offsets=parts, asynchronous=False)
                except KafkaException as exc:
                    log.warning("group offsets not committed (%s); the checkpoint has them", exc)
            consumer.close()
            log.info("trends stopped: published %d times, event time %d", self.published, self.tracker.now)
