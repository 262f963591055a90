"""Failure isolation on the stage values: a stage that keeps failing on a batch runs per user; the users
that still fail are dead-lettered with the stage and their topic[partition]@offset, the rest go on, and the
result is the whole batch's (its validation dead letters and catalog count kept)."""
import threading

from schemas import Event
from stream.core.stages import Applied, BatchResult, Ingested
from stream.core.validate import DeadLetter, InMessage
from stream.drivers.isolation import POISON_RETRIES, guarded
from stream.drivers.resilience import Health, Retrier

INVALID = DeadLetter.of(InMessage(b"junk", None, "events", 2, 99), "not JSON", "validate")


def _applied(users):
    """A batch after the profile stage: one event per entry of `users`, one invalid message, 3 catalog items."""
    evs = [Event(event_id=f"e{n}", user_id=u, type="view", ts=1_700_000_000_000 + n, item_id="i1")
           for n, u in enumerate(users)]
    ing = Ingested(evs, [InMessage(b"{}", u.encode(), "events", 2, 100 + n) for n, u in enumerate(users)],
                   [INVALID], 3)
    return Applied(ing, {u: None for u in users})


def _run(fn, whole):
    stop = threading.Event()
    return guarded("recommend", whole, fn, Retrier(Health(), stop, first=0.001), stop)


def _recommend(fail_if):
    calls = []

    def fn(applied):
        users = {e.user_id for e in applied.events}
        calls.append(users)
        if fail_if(users):
            raise ValueError(f"corrupt key for {sorted(users)}")
        return BatchResult([], applied.ingested.dead_letters + applied.dead_letters, events=len(applied.events),
                           items=applied.ingested.items)
    return fn, calls


def test_happy_path_runs_once():
    fn, calls = _recommend(lambda users: False)
    out, dead = _run(fn, _applied("abc"))
    assert len(calls) == 1 and out.events == 3 and dead == [] and out.dead_letters == [INVALID] and out.items == 3


def test_a_poison_user_is_dead_lettered_with_stage_and_offset_the_rest_go_on():
    fn, calls = _recommend(lambda users: "b" in users)
    out, dead = _run(fn, _applied(["a", "b", "b", "c"]))
    assert calls[:POISON_RETRIES] == [{"a", "b", "c"}] * POISON_RETRIES          # whole batch, retried
    assert out.events == 2                                                        # a and c, one part each
    assert [(d.partition, d.offset, d.stage) for d in dead] == [(2, 101, "recommend"), (2, 102, "recommend")]
    assert all("corrupt key for ['b']" in d.reason for d in dead)
    assert out.dead_letters == [INVALID] and out.items == 3                      # the whole batch's, kept


def test_a_batch_failing_only_as_a_whole_loses_nothing():
    """Each user alone succeeds (the failure needed them together): no dead letter, every user's part kept,
    and the batch's validation dead letters and catalog count too."""
    fn, _ = _recommend(lambda users: len(users) > 1)
    out, dead = _run(fn, _applied(["a", "b", "c"]))
    assert dead == [] and out.events == 3 and out.dead_letters == [INVALID] and out.items == 3
