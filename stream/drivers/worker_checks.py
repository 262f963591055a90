"""The worker's checks beside the event path: its heartbeat in Redis (the API's readiness, the dashboard)
and, at start, whether the store it writes to is the one its committed offsets belong to."""
from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from stream.core.storage.serving import put_status
from stream.drivers.emitter import worker_id
from stream.drivers.isolation import at_edge
from stream.drivers.kafka import BrokerError

log = logging.getLogger("recstream.worker")
STATUS_EVERY_S = 2.0                   # the worker's status in Redis (`{P}workers`): a heartbeat with numbers


class WorkerChecks:
    """Mixed into `ConfluentWorker` (uses its settings, pipeline, metrics, retrier and group id)."""

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
