"""The Kafka side of emitting: recommendations and dead letters produced, failed deliveries produced
again, and the headers a dead letter carries (why, where from, which stage)."""
from __future__ import annotations

import os
import socket
import threading

from confluent_kafka import Producer

from stream.config.settings import Settings
from stream.core.stages import BatchResult
from stream.core.validate import DeadLetter
from stream.drivers.resilience import Health, Stopping


def worker_id() -> str:
    """host:pid, in a header of everything this worker produces."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, bytes]]:
    return [("recstream.reason", d.reason.encode("utf-8", "replace")), ("recstream.source.topic", d.topic.encode()),
            ("recstream.source.partition", str(d.partition).encode()),
            ("recstream.source.offset", str(d.offset).encode()), ("recstream.stage", d.stage.encode())]


class Emitter:
    """Produces a batch's output and waits until the broker acknowledged all of it. A message whose
    delivery failed (the broker was down past the producer's timeout) is produced again, alone: nothing
    is lost, and what was acknowledged is not sent twice."""

    def __init__(self, producer: Producer, settings: Settings, health: Health | None = None,
                 stop: threading.Event | None = None):
        self.producer, self.s = producer, settings
        self.health, self.stop = health or Health(), stop or threading.Event()
        self.failed: list[tuple] = []
        self.headers = [("recstream.worker", worker_id().encode())]

    def send(self, result: BatchResult) -> None:
        todo = [(self.s.recs_topic, rec.to_json(), rec.user_id.encode(), self.headers)
                for rec in result.recommendations]
        todo += [(self.s.dlq_topic, d.value, d.key, dead_letter_headers(d)) for d in result.dead_letters]
        while todo:
            for msg in todo:
                self._produce(*msg)
            while self.producer.flush(5):        # still unacknowledged after 5 s: the broker is away
                self.health.fail("broker", f"emit to {self.s.recs_topic}/{self.s.dlq_topic}: "
                                 f"{len(self.producer)} messages unacknowledged")
                if self.stop.is_set():
                    raise Stopping("emit")
            todo, self.failed = self.failed, []
            if todo:
                self.health.fail("broker", f"emit: {len(todo)} deliveries failed; producing them again")
                if self.stop.wait(1.0):
                    raise Stopping("emit")
        self.health.ok("broker")

    def _produce(self, topic, value, key, headers=None):
        def cb(err, msg, _m=(topic, value, key, headers)):
            if err is not None:
                self.failed.append(_m)
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=cb)
                return
            except BufferError:
                self.producer.poll(0.05)
