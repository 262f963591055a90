"""Read a topic: the building block of `recstream consume` and of the tests.

End of data is detected by partition EOF, never by latest offsets (the local broker
under-reports them). Without a group, a throwaway group reads from the beginning; "tail"
mode skips what was there before EOF was first reached on each partition.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message

from stream.drivers.kafka import BrokerError, consumer_conf


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict
    timestamp_ms: int


def records(topic: str, brokers: str, *, group: str | None = None, from_beginning: bool = True,
            max_records: int | None = None, until_eof: bool = False, idle_timeout: float | None = None,
            timeout: float | None = None, session_timeout_ms: int = 6000, commit: bool | None = None,
            stop=None, ready=None) -> Iterator[Record]:
    """Yield records until `max_records`, EOF on every partition (`until_eof`), `idle_timeout`
    seconds without a record, `timeout` seconds in all, or `stop()` returning True.
    `ready` (a threading.Event) is set once partitions are assigned."""
    commit = group is not None if commit is None else commit
    conf = consumer_conf(brokers, group or f"recstream-consume-{uuid.uuid4().hex[:8]}",
                         session_timeout_ms=session_timeout_ms)
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    n = 0
    eof: set[int] = set()
    assigned: set[int] = set()
    skipping = not from_beginning and group is None
    t0 = last = time.monotonic()
    try:
        while True:
            now = time.monotonic()
            if timeout is not None and now - t0 > timeout:
                return
            if idle_timeout is not None and now - last > idle_timeout:
                return
            if stop is not None and stop():
                return
            # poll() returns as soon as one message is there; then drain whatever else is already fetched
            first = consumer.poll(0.1)
            msgs = [] if first is None else [first, *consumer.consume(499, 0)]
            if not assigned:
                assigned = {tp.partition for tp in consumer.assignment()}
                if assigned and ready is not None:
                    ready.set()
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition())
                        if skipping and assigned and eof >= assigned:
                            skipping = False
                        continue
                    raise BrokerError(f"{topic}[{msg.partition()}]: {err}")
                last = time.monotonic()
                eof.discard(msg.partition())
                if skipping:
                    continue
                yield _record(msg)
                n += 1
                if max_records is not None and n >= max_records:
                    return
            if commit and msgs:
                consumer.commit(asynchronous=True)
            if until_eof and assigned and eof >= assigned:
                return
    except KafkaException as exc:
        raise BrokerError(f"consume {topic} at {brokers}: {exc}") from exc
    finally:
        if commit:
            try:
                consumer.commit(asynchronous=False)
            except KafkaException:
                pass  # nothing to commit
        consumer.close()


def _record(msg: Message) -> Record:
    headers = {k: v for k, v in (msg.headers() or [])}
    return Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers,
                  msg.timestamp()[1])
