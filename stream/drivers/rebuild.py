"""`recstream rebuild`: restore a store that lost its data from the retained topics.

Reads the items topic, then the events topic, from their first retained offsets to the end (partition
EOF), with a throwaway consumer group that commits nothing. Items are upserted into the catalog (and
embedded, when a text encoder is configured); events go through the same validation and profile script
as in the worker (`Pipeline.ingest`, `ProfileStore.apply`), with the emptied-store guard off. Then the
store's marker is written, and a waiting worker resumes by itself.

Idempotent: the profile script skips events it has applied, so running it twice, or while a worker
replays the same events, changes nothing. Per-user order is the partition order, as in the worker. What it
cannot restore: the online ranker's checkpoint (a running worker saves its in-memory ranker again within
`RECSTREAM_RANKER_CHECKPOINT_S`), and events past the topics' retention (the event archive of the
continuous-training issue will extend this).
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from stream.core.validate import InMessage
from stream.drivers.kafka import consumer_conf
from stream.errors import BrokerError

log = logging.getLogger("recstream.rebuild")


@dataclass
class RebuildReport:
    items: int = 0
    events: int = 0
    applied: int = 0
    rejected: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"rebuilt in {self.seconds:.1f} s: {self.items:,} catalog items, {self.events:,} events read, "
                f"{self.applied:,} applied ({self.events - self.applied:,} already there), "
                f"{self.rejected:,} invalid (skipped; the DLQ has them)")


def _read_all(s, topic: str, kind: str, batch_size: int, on_batch, progress=None) -> None:
    """Every retained message of `topic`, from the beginning to EOF on each partition, in batches."""
    conf = consumer_conf(s.brokers, f"recstream-rebuild-{uuid.uuid4().hex[:8]}", session_timeout_ms=6000)
    c = Consumer(conf)
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            raise BrokerError(f"rebuild: topic {topic} not found at {s.brokers}")
        parts = sorted(md.partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        open_parts = set(parts)
        idle_since = time.monotonic()
        while open_parts:
            msgs = c.consume(batch_size, 0.5)
            batch = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        open_parts.discard(m.partition())
                        continue
                    if err.fatal():
                        raise BrokerError(f"rebuild {topic}[{m.partition()}]: {err}")
                    continue
                batch.append(InMessage(m.value(), m.key(), m.topic(), m.partition(), m.offset(), kind))
            if batch:
                on_batch(batch)
                idle_since = time.monotonic()
                if progress is not None:
                    progress.update(len(batch))
            elif time.monotonic() - idle_since > 60:
                raise BrokerError(f"rebuild: no data and no end of {topic} for 60 s (partitions {sorted(open_parts)})")
    except KafkaException as exc:
        raise BrokerError(f"rebuild {topic} at {s.brokers}: {exc}") from exc
    finally:
        c.close()


def rebuild(s, pipeline, *, batch_size: int = 2000, progress: bool = False) -> RebuildReport:
    """Replay the items and events topics into `pipeline`'s store (built with guard=False), then mark it live."""
    rep = RebuildReport()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(unit=" msgs", desc="rebuild", mininterval=0.5)

    def items(batch):
        ing = pipeline.ingest(batch)
        rep.items += ing.items
        rep.rejected += len(ing.dead_letters)

    def events(batch):
        ing = pipeline.ingest(batch)
        rep.rejected += len(ing.dead_letters)
        rep.events += len(ing.events)
        if ing.events:
            snaps = pipeline.profiles.apply(ing.events)
            rep.applied += sum(sn.applied for sn in snaps.values())

    _read_all(s, s.items_topic, "item", batch_size, items, bar)
    _read_all(s, s.events_topic, "event", batch_size, events, bar)
    pipeline.profiles.mark_live()
    if bar is not None:
        bar.close()
    rep.seconds = time.perf_counter() - t0
    log.info("%s; the store's marker %s is set", rep.summary(), pipeline.profiles.keys.marker)
    return rep
