"""confluent-kafka client settings and helpers, shaped by the local broker's measured gaps.

See ../shared/notes/broker.md (summarised in docs/stack.md): Tansu under-reports the latest
offset, has no working transactions, makes a group join wait half the session timeout, and
does not wake a waiting fetch. So every client here:
  * finds the end of data by partition EOF, never by latest/watermark offsets;
  * uses `auto.offset.reset=earliest` and committed offsets, never `latest`;
  * uses a short session timeout (6 s; 2 s in tests) and no `group.instance.id`;
  * sets `fetch.wait.max.ms` low and `linger.ms` small, for latency;
  * closes consumers cleanly so they leave the group.
The same settings are correct against Apache Kafka.
"""
from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from stream.errors import BrokerError

__all__ = ["BrokerError", "check_brokers", "consumer_conf", "create_topics", "delete_topics", "producer_conf",
           "take_batch"]


_SECURITY: dict[str, str] = {}


# A commit refused because the group moved on: the partitions went elsewhere and their batch is redelivered
# there (at-least-once), so the committing loop drops the commit and goes on.
REBALANCE_CODES = frozenset({KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                             KafkaError.REBALANCE_IN_PROGRESS, KafkaError._STATE})

def configure_security(conf: dict[str, str]) -> None:
    """Security settings (security.protocol, SASL, TLS: `Settings.kafka_security()`) that every client made
    by this module's helpers gets. The CLI sets them once from RECSTREAM_KAFKA_* at start."""
    _SECURITY.clear()
    _SECURITY.update(conf)


def admin_conf(brokers: str) -> dict:
    return {"bootstrap.servers": brokers, **_SECURITY}


def producer_conf(brokers: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": brokers,
        "enable.idempotence": True,      # works on Tansu; transactions do not
        "linger.ms": 2,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000,
        "message.max.bytes": 2_000_000,  # the DLQ keeps original bytes, which may be large
        **_SECURITY,
    }
    conf.update(extra)
    return conf


def consumer_conf(brokers: str, group_id: str, *, session_timeout_ms: int = 6000, **extra) -> dict:
    conf = {
        "bootstrap.servers": brokers,
        "group.id": group_id,
        "auto.offset.reset": "earliest",     # never `latest`: the broker under-reports it
        "enable.auto.commit": False,         # we commit after the batch's writes succeeded
        "enable.partition.eof": True,        # the only trustworthy end-of-data signal here
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(250, session_timeout_ms // 6),
        "fetch.wait.max.ms": 10,             # a waiting fetch is not woken by new data: keep it short
        "partition.assignment.strategy": "range",
        **_SECURITY,
    }
    conf.update(extra)
    return conf


def take_batch(consumer, n: int, wait_s: float) -> list:
    """Up to `n` messages (and events: errors, partition ends) without waiting for more than are there: what
    the client has already fetched, or, when it holds nothing, the first to arrive within `wait_s` and what
    came with it. `consume(n, wait_s)` itself waits out the whole `wait_s` unless `n` arrive (librdkafka's
    batch call; measured here at a message a millisecond: every call took the full 5 ms, the messages
    waited 10.1 ms at p50 against 6.4 with this, twenty-eighth session).

    The latency bench's relay (the broker's two-hop floor) takes its messages this way. The worker does
    not: at 1,000 events/s its batches then shrank to what came during the last one, and each batch's fixed
    cost (about 1.2 ms on the consuming thread and 0.9 ms on the emitting one, under one GIL) saturated the
    process: p50 45-49 ms against 29-34 with `consume`'s 5 ms wait (bench.run --only latency, two pairs)."""
    msgs = consumer.consume(n, 0)
    if msgs:
        return msgs
    first = consumer.poll(wait_s)
    return [] if first is None else [first, *consumer.consume(n - 1, 0)]


def check_brokers(brokers: str, timeout: float = 5.0) -> None:
    """Raise BrokerError unless a broker answers a metadata request within `timeout`."""
    admin = AdminClient(admin_conf(brokers))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"no Kafka broker answered at {brokers} within {timeout:g}s: {exc}") from exc


def create_topics(brokers: str, topics: list[str], partitions: int, timeout: float = 10.0) -> dict[str, str]:
    """Create topics with their final partition count; existing ones are left alone.

    Returns topic -> "created" | "exists (N partitions)". Idempotent.
    """
    admin = AdminClient(admin_conf(brokers))
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise BrokerError(f"list topics at {brokers}: {exc}") from exc
    result, todo = {}, []
    for t in topics:
        if t in existing and not existing[t].error:
            result[t] = f"exists ({len(existing[t].partitions)} partitions)"
        else:
            todo.append(NewTopic(t, num_partitions=partitions, replication_factor=1))
    if todo:
        for topic, fut in admin.create_topics(todo, operation_timeout=timeout).items():
            try:
                fut.result(timeout)
                result[topic] = "created"
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    result[topic] = "exists"
                else:
                    raise BrokerError(f"create topic {topic} at {brokers}: {exc}") from exc
    return result


def delete_topics(brokers: str, topics: list[str], timeout: float = 10.0) -> None:
    admin = AdminClient(admin_conf(brokers))
    for topic, fut in admin.delete_topics(topics, operation_timeout=timeout).items():
        try:
            fut.result(timeout)
        except KafkaException:
            pass  # already gone
