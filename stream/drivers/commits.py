"""Committing a worker's input offsets: between batches without waiting, before a rebalance and at the end
waiting for the broker's answer.

The worker commits a batch's offsets only after its output was acknowledged (`Emitter`), so every commit
is safe to make; waiting for its answer is not needed for correctness and cost the consuming thread a
round trip to the broker per batch (1.6 ms at 1,000 events/s, about a tenth of that thread's cycle there). So
between batches the commit is asynchronous; its answer comes to `on_commit` on the consuming thread
during a later `consume`. A refused commit is made again with the next one, unless a later commit of the
same partition was sent since (never moving a committed offset back). A refusal because the group moved
on (the partitions went elsewhere) is dropped: the batch is redelivered there (at-least-once). Before the
partitions move (`on_revoke`) and at the end the commit waits, through the worker's `Retrier`.
"""
from __future__ import annotations

import logging

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from stream.drivers.kafka import REBALANCE_CODES, BrokerError
from stream.drivers.resilience import Retrier, Stopping

log = logging.getLogger("recstream.worker")


def fmt_parts(parts) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in parts) or "nothing"


class Committer:
    def __init__(self, retry: Retrier):
        self.retry = retry
        self.sent: dict = {}          # (topic, partition) -> the last offset sent for commit
        self.again: dict = {}         # refused commits still the latest of their partition: sent with the next

    def on_commit(self, err, parts) -> None:
        """The consumer's `on_commit` callback: a commit's answer (served on the consuming thread)."""
        refused = [p for p in parts if p.error is not None] if err is None else list(parts)
        if not refused:
            return
        why = err if err is not None else refused[0].error
        if isinstance(why, KafkaError) and why.code() in REBALANCE_CODES:
            log.warning("commit of %s dropped (%s): the partitions moved; their batch is redelivered",
                        fmt_parts(refused), why)
            return
        latest = {(p.topic, p.partition): p.offset for p in refused
                  if self.sent.get((p.topic, p.partition)) == p.offset}
        if latest:
            log.warning("commit of %s refused (%s): made again with the next commit", fmt_parts(refused), why)
            self.again.update(latest)

    def forget(self) -> None:
        """The partitions moved: nothing of theirs is committed again from here."""
        self.sent.clear()
        self.again.clear()

    def commit(self, consumer: Consumer, offsets: dict, *, asynchronous: bool) -> None:
        offsets = {**self.again, **offsets}
        if not offsets:
            return
        self.again = {}
        self.sent.update(offsets)
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

        def commit() -> None:
            try:
                consumer.commit(offsets=tps, asynchronous=asynchronous)
            except KafkaException as exc:
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if err is not None and err.code() in REBALANCE_CODES:
                    log.warning("commit of %s dropped (%s): the partitions moved; their batch is redelivered",
                                fmt_parts(tps), err)
                    return
                fatal = err is not None and err.fatal()
                broken = BrokerError(f"commit {fmt_parts(tps)}: {'fatal: ' if fatal else ''}{exc}")
                broken.transient = not fatal
                raise broken from exc

        try:
            self.retry.call("commit", commit)
        except Stopping:
            log.warning("stopping with %s uncommitted: that batch is redelivered (idempotent)", fmt_parts(tps))
