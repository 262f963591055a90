"""The baseline contract: every baseline of the backtest passes the same checks (fresh instance; same
seed, same output; empty input; a replayed batch changes nothing; what is excluded is never returned)."""
import random

import pytest

from schemas import Event
from stream.evaluation.baselines import CoVisitKNN, CoVisitSymmetric, MostPopular, RecentItems, RiverMF, TrendingPopular

BASELINES = {
    "most_popular": lambda: MostPopular(),
    "trending": lambda: TrendingPopular(),
    "covisit_knn": lambda: CoVisitKNN(fallback=MostPopular()),
    "covisit_sym": lambda: CoVisitSymmetric(fallback=MostPopular()),
    "recent_items": lambda: RecentItems(),
    "river_mf": lambda: RiverMF(seed=7, pool=50),
}


def _events(n=600, seed=1):
    rng = random.Random(seed)
    return [Event(event_id=f"e{k}", user_id=f"u{rng.randint(0, 20)}", type=rng.choice(["view", "click", "purchase"]),
                  ts=1_700_000_000_000 + k * 1000, item_id=f"i{min(rng.randint(0, 80), rng.randint(0, 80))}")
            for k in range(n)]


def _answers(model, users=("u1", "u2", "u3", "nobody")):
    return {u: model.recommend(u, 10, 1_700_001_000_000) for u in users}


@pytest.fixture(params=sorted(BASELINES))
def make(request):
    return BASELINES[request.param]


def test_fresh_instance_answers_with_nothing_or_a_list(make):
    got = _answers(make())
    assert all(isinstance(v, list) and v == [] for v in got.values())


def test_same_seed_same_output(make):
    a, b = make(), make()
    for ev in _events():
        a.learn(ev)
        b.learn(ev)
    assert _answers(a) == _answers(b)


def test_lists_are_top_k_without_duplicates(make):
    m = make()
    for ev in _events():
        m.learn(ev)
    for items in _answers(m).values():
        assert len(items) <= 10 and len(set(items)) == len(items)


def test_replayed_batch_changes_nothing(make):
    """At-least-once delivery replays events: a baseline learns each event id once, as recstream's profile
    stage does."""
    once, twice = make(), make()
    evs = _events()
    for ev in evs:
        once.learn(ev)
        twice.learn(ev)
    for ev in evs[-100:]:
        twice.learn(ev)
    assert _answers(once) == _answers(twice)


def test_excluded_items_are_never_returned(make):
    m = make()
    for ev in _events():
        m.learn(ev)
    full = m.recommend("u1", 10, 1_700_001_000_000)
    if full:
        drop = frozenset(full[:3])
        assert not drop & set(m.recommend("u1", 10, 1_700_001_000_000, drop))
