"""The emitter's bookkeeping of unacknowledged output (pure logic; the delivery reports come from a stand-in
for the producer that the test answers by hand): a batch's input offsets are released only when every message
of it and of every batch before it is acknowledged, and a failed delivery is produced again before its batch
counts as done; and the committer's (a refused commit is made again, never moving an offset back). The real
producer and consumer against the real broker are covered by the worker and fault tests."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

from stream.config.settings import Settings
from stream.drivers.emitter import Emitter
from stream.drivers.resilience import Stopping


class HandAnsweredProducer:
    """Holds each produced message's delivery callback until the test answers it."""

    def __init__(self, answer_on_poll_wait: bool = False):
        self.produced: list[tuple] = []          # (topic, value, callback)
        self.unanswered: list[int] = []
        self.answer_on_poll_wait = answer_on_poll_wait

    def produce(self, topic, value, key, headers=None, on_delivery=None):
        self.produced.append((topic, value, on_delivery))
        self.unanswered.append(len(self.produced) - 1)

    def answer(self, i: int, err=None) -> None:
        self.unanswered.remove(i)
        self.produced[i][2](err, None)

    def poll(self, timeout: float = 0) -> int:
        if timeout and self.answer_on_poll_wait:      # the broker answers whatever is waiting
            for i in list(self.unanswered):
                self.answer(i)
        return 0

    def __len__(self) -> int:
        return len(self.unanswered)


def batch(*users: str) -> SimpleNamespace:
    recs = [SimpleNamespace(user_id=u, to_json=lambda u=u: f'{{"user_id": "{u}"}}'.encode()) for u in users]
    return SimpleNamespace(recommendations=recs, dead_letters=[])


def test_offsets_are_released_in_order_once_everything_before_them_is_acknowledged():
    p = HandAnsweredProducer()
    em = Emitter(p, Settings())
    em.send(batch("a", "b"), {("ev", 0): 10})
    em.send(batch("c"), {("ev", 0): 11})
    assert len(p.produced) == 3 and em.acked() == {}
    p.answer(2)                                   # the second batch acknowledged first
    assert em.acked() == {}                       # its offset would cover the first batch's unacknowledged output
    p.answer(0)
    assert em.acked() == {}
    p.answer(1)
    assert em.acked() == {("ev", 0): 11}          # both released at once: the later offset covers both
    assert em.acked() == {} and not em.in_flight


def test_a_failed_delivery_is_produced_again_alone_and_its_batch_waits_for_it():
    p = HandAnsweredProducer()
    em = Emitter(p, Settings(), stop=threading.Event())
    em.stop.wait = lambda s: False                # no pause before producing again in a test
    em.send(batch("a", "b"), {("ev", 1): 5})
    p.answer(0)
    p.answer(1, err="timed out")
    assert em.acked() == {}                       # produced again here, not yet acknowledged
    assert len(p.produced) == 3 and p.produced[2][1] == p.produced[1][1]
    p.answer(2)
    assert em.acked() == {("ev", 1): 5}
    assert em.health.down == {}                   # recovered: the broker reads healthy again


def test_send_waits_while_too_many_batches_are_unacknowledged_and_drain_waits_for_all():
    p = HandAnsweredProducer(answer_on_poll_wait=True)
    em = Emitter(p, Settings(), max_in_flight=2)
    em.send(batch("a"), {("ev", 0): 1})
    em.send(batch("b"), {("ev", 0): 2})
    assert len(em.in_flight) == 2                 # a plain send does not wait for answers
    em.send(batch("c"), {("ev", 0): 3})           # over the bound: waited until the broker answered
    assert len(em.in_flight) == 0
    em.send(batch("d"), {("ev", 1): 4})
    assert em.drain() == {("ev", 0): 3, ("ev", 1): 4}
    assert not em.in_flight and len(p) == 0


def test_a_batch_with_no_output_is_released_with_the_batches_around_it():
    p = HandAnsweredProducer()
    em = Emitter(p, Settings())
    em.send(batch("a"), {("ev", 0): 1})
    em.send(batch(), {("ev", 0): 2})              # nothing to emit (all items, say)
    assert em.acked() == {}
    p.answer(0)
    assert em.acked() == {("ev", 0): 2}


def test_asked_to_stop_while_the_broker_is_away_the_wait_gives_up_and_releases_nothing(monkeypatch):
    import stream.drivers.emitter as emitter_mod
    clock = iter(range(0, 1000, 3))               # every look at the clock: 3 s later
    monkeypatch.setattr(emitter_mod.time, "monotonic", lambda: next(clock))
    p = HandAnsweredProducer()
    em = Emitter(p, Settings(), stop=threading.Event())
    em.send(batch("a"), {("ev", 0): 1})
    em.stop.set()
    with pytest.raises(Stopping):
        em.drain()
    assert "broker" in em.health.down and em.acked() == {}


class RecordingConsumer:
    def __init__(self):
        self.commits: list[tuple[dict, bool]] = []

    def commit(self, offsets, asynchronous):
        self.commits.append(({(tp.topic, tp.partition): tp.offset for tp in offsets}, asynchronous))


def test_a_refused_commit_is_made_again_with_the_next_unless_a_later_one_of_its_partition_was_sent():
    from confluent_kafka import KafkaError, TopicPartition

    from stream.drivers.commits import Committer
    from stream.drivers.resilience import Health, Retrier
    c, consumer = Committer(Retrier(Health(), threading.Event())), RecordingConsumer()
    c.commit(consumer, {("ev", 0): 10, ("ev", 1): 7}, asynchronous=True)
    c.commit(consumer, {("ev", 0): 12}, asynchronous=True)
    refused = KafkaError(KafkaError.REQUEST_TIMED_OUT)
    c.on_commit(refused, [TopicPartition("ev", 0, 10), TopicPartition("ev", 1, 7)])   # the first one's answer
    c.commit(consumer, {}, asynchronous=True)
    # partition 1's 7 is still its latest: made again; partition 0's 10 is not (12 was sent since: never back)
    assert consumer.commits[-1] == ({("ev", 1): 7}, True)
    c.on_commit(KafkaError(KafkaError.ILLEGAL_GENERATION), [TopicPartition("ev", 0, 12)])   # the group moved on
    c.commit(consumer, {}, asynchronous=False)
    assert len(consumer.commits) == 3                # nothing left to commit again: no call
    c.on_commit(None, [TopicPartition("ev", 0, 12)])   # answered without error
    assert c.again == {}
