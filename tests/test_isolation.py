"""Failure isolation on the stage values: a stage that keeps failing on a batch runs per user; the users
that still fail are dead-lettered with the stage and their topic[partition]@offset, the rest go on."""
import threading

from schemas import Event
from stream.core.stages import BatchResult, Ingested
from stream.core.validate import InMessage
from stream.drivers.isolation import POISON_RETRIES, guarded
from stream.drivers.resilience import Health, Retrier


def _ingested(users):
    evs = [Event(event_id=f"e{n}", user_id=u, type="view", ts=1_700_000_000_000 + n, item_id="i1")
           for n, u in enumerate(users)]
    return Ingested(evs, [InMessage(b"{}", u.encode(), "events", 2, 100 + n) for n, u in enumerate(users)])


def _run(fn, whole):
    stop = threading.Event()
    return guarded("recommend", whole, fn, Retrier(Health(), stop, first=0.001), stop)


def test_happy_path_runs_once():
    calls = []
    out, dead = _run(lambda ing: calls.append(ing) or BatchResult([], [], events=len(ing.events)), _ingested("abc"))
    assert len(calls) == 1 and out.events == 3 and dead == []


def test_a_poison_user_is_dead_lettered_with_stage_and_offset_the_rest_go_on():
    calls = []

    def fn(ing):
        calls.append({e.user_id for e in ing.events})
        if "b" in calls[-1]:
            raise ValueError("corrupt key for b")
        return BatchResult([], [], events=len(ing.events))
    out, dead = _run(fn, _ingested(["a", "b", "b", "c"]))
    assert calls[:POISON_RETRIES] == [{"a", "b", "c"}] * POISON_RETRIES          # whole batch, retried
    assert out.events == 2                                                        # a and c, one part each
    assert [(d.partition, d.offset, d.stage) for d in dead] == [(2, 101, "recommend"), (2, 102, "recommend")]
    assert all("corrupt key for b" in d.reason for d in dead)


def test_a_batch_failing_only_as_a_whole_loses_nothing():
    """Each user alone succeeds (the failure needed them together): no dead letter, every user's part kept."""
    def fn(ing):
        if len({e.user_id for e in ing.events}) > 1:
            raise RuntimeError("only together")
        return BatchResult([], [], events=len(ing.events))
    out, dead = _run(fn, _ingested(["a", "b", "c"]))
    assert dead == [] and out.events == 3
