"""The label join (stream/core/ranking/feedback.py) on hand-made event sequences: event time only."""
import numpy as np

from stream.core.ranking.feedback import FeedbackJoin

MIN = 60_000


def X(n):
    return np.arange(n * 2, dtype=float).reshape(n, 2)     # row r = [2r, 2r+1]: identifies the item


def labels(examples):
    return sorted((int(e.x[0] // 2), e.y, e.weight) for e in examples)


def test_click_cart_purchase_weights_and_sampled_negatives():
    j = FeedbackJoin(window_ms=30 * MIN, negatives=2, seed=1)
    j.impression("u", 1000, "rec:e0", ["a", "b", "c", "d", "e"], X(5), trigger_id="e0")
    assert j.observe("u", "e1", "click", "b", 2000) == []
    assert j.observe("u", "e2", "add_to_cart", "b", 3000) == []      # the stronger label wins
    assert j.observe("u", "e3", "purchase", "d", 4000) == []
    out = j.advance(1000 + 30 * MIN + 1)                                # window over: the impression closes
    got = labels(out)
    assert [g for g in got if g[1]] == [(1, True, 2.0), (3, True, 3.0)]
    negs = [g for g in got if not g[1]]
    assert len(negs) == 2 and all(i in (0, 2, 4) for i, _, _ in negs)
    assert j.n_open == 0 and j.stats.with_positive == 1


def test_weights_order_click_below_cart_below_purchase():
    from stream.core.ranking.feedback import LABEL_WEIGHTS
    assert LABEL_WEIGHTS["click"] < LABEL_WEIGHTS["add_to_cart"] < LABEL_WEIGHTS["purchase"]


def test_late_event_and_trigger_do_not_label():
    j = FeedbackJoin(window_ms=10 * MIN, negatives=0)
    j.impression("u", 5000, "rec:e0", ["a", "b"], X(2), trigger_id="e0")
    j.observe("u", "e0", "click", "a", 5000)          # the trigger itself (redelivered)
    j.observe("u", "late", "click", "b", 4000)        # happened before we showed anything
    assert j.stats.late_events == 1
    assert j.advance(5000 + 10 * MIN + 1) == []       # no positive: nothing to learn
    assert j.stats.closed == 1 and j.stats.with_positive == 0


def test_out_of_window_event_closes_without_labelling():
    j = FeedbackJoin(window_ms=10 * MIN, negatives=1)
    j.impression("u", 0, "k1", ["a", "b"], X(2))
    j.observe("u", "e1", "click", "a", 60_000)                     # inside: positive
    j.impression("u", 100_000, "k2", ["a", "b"], X(2))
    out = j.observe("u", "e2", "click", "b", 10 * MIN + 1)        # past k1's window, inside k2's
    assert labels(out) == [(0, True, 1.0), (1, False, 1.0)]         # k1 closed: b was not clicked in time
    out = j.advance(100_000 + 10 * MIN + 1)
    assert labels(out) == [(0, False, 1.0), (1, True, 1.0)]         # k2: b clicked inside its window


def test_replayed_events_and_impressions_change_nothing():
    def run(replay: bool):
        j = FeedbackJoin(window_ms=10 * MIN, negatives=1, seed=3)
        j.impression("u", 0, "rec:e0", ["a", "b", "c"], X(3), trigger_id="e0")
        if replay:
            j.impression("u", 0, "rec:e0", ["a", "b", "c"], X(3), trigger_id="e0")
        j.observe("u", "e1", "click", "a", 1000)
        if replay:
            j.observe("u", "e1", "add_to_cart", "a", 1000)   # same event id again (even if altered)
        out = j.advance(10 * MIN + 1)
        if replay:   # the closed impression comes back (a redelivered batch after it closed)
            j.impression("u", 0, "rec:e0", ["a", "b", "c"], X(3), trigger_id="e0")
            out += j.advance(20 * MIN + 2)
        return labels(out), j.stats.replayed

    plain, r0 = run(False)
    again, r1 = run(True)
    assert plain == again and plain[0] == (0, True, 1.0)
    assert (r0, r1) == (0, 2)


def test_memory_is_bounded_and_counted():
    j = FeedbackJoin(window_ms=10 * MIN, negatives=1, max_per_user=2, max_open=3)
    for n in range(3):
        j.impression("u", n, f"u{n}", ["a", "b"], X(2))
    assert j.stats.superseded == 1 and len(j.open["u"]) == 2
    j.impression("v", 10, "v0", ["a"], X(1))
    j.impression("w", 11, "w0", ["a"], X(1))
    assert j.n_open == 3 and j.stats.dropped == 1
    assert sum(len(v) for v in j.open.values()) == j.n_open


def test_negative_sample_is_deterministic_per_impression():
    def sample(seed):
        j = FeedbackJoin(window_ms=MIN, negatives=3, seed=seed)
        j.impression("u", 0, "k", list("abcdefgh"), X(8))
        j.observe("u", "e", "click", "a", 10)
        return labels(j.advance(MIN + 1))
    assert sample(7) == sample(7)
    assert len(sample(7)) == 4



def test_close_on_next_every_event_labels_the_set_ranked_just_before_it():
    """The learned modes: an impression is the candidate set ranked before the user's next event, and
    that event closes it at once: a positive if it touched a candidate, otherwise counted and not
    learned from. The trigger, a search, an event of another user, a late event and a replayed event
    id close nothing."""
    j = FeedbackJoin(window_ms=30 * MIN, negatives=2, seed=1, close_on_next=True)
    j.impression("u", 1000, "rec:e0", ["a", "b", "c", "d"], X(4), trigger_id="e0")
    assert j.observe("u", "e0", "view", "a", 1000) == []              # its own trigger
    assert j.observe("u", "s1", "search", None, 1500) == []           # no item: labels nothing
    assert j.observe("v", "e9", "view", "b", 1600) == []              # another user
    assert j.observe("u", "late", "view", "b", 900) == []             # before the set was ranked
    assert j.n_open == 1
    out = j.observe("u", "e1", "add_to_cart", "c", 2000)              # the next item event: the label
    got = labels(out)
    assert [g for g in got if g[1]] == [(2, True, 2.0)]
    assert len([g for g in got if not g[1]]) == 2 and j.n_open == 0
    assert j.observe("u", "e2", "view", "d", 3000) == []              # closed: nothing more to label
    j.impression("u", 4000, "rec:e2", ["a", "b"], X(2), trigger_id="e2")
    assert j.observe("u", "e3", "view", "z", 5000) == []              # not a candidate: closes, no positive
    assert j.n_open == 0 and j.stats.closed == 2 and j.stats.with_positive == 1
    assert j.observe("u", "e1", "view", "a", 6000) == []              # a replayed event id: nothing open
