"""The gate between the learned order and the base order (stream/core/ranking/gate.py): judged on the
users' next events, prequentially, persisted with the ranker."""
from types import SimpleNamespace

import numpy as np
from test_contract_scorers import _batch

from stream.core.ranking.cascade import RankedScorer
from stream.core.ranking.feedback import Example, FeedbackJoin
from stream.core.ranking.gate import OrderGate, list_gains
from stream.core.ranking.rank import RankConfig
from stream.core.ranking.ranker import OnlineRanker, RankerConfig
from stream.core.scoring import FallbackScorer
from stream.core.scoring.features import FEATURE_NAMES, N_FEATURES


def test_list_gains_are_the_lists_each_order_would_show():
    """Both lists follow the shown list's rules: excluded items and the per-category cap apply, and an
    item's gain is NDCG's 1 / log2(position + 2) in each list (0 on a list it is not on)."""
    items = ["a", "b", "c", "d"]
    cats = {"a": "x", "b": "x", "c": "y", "d": "y"}
    g = list_gains(items, np.array([4.0, 3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0, 4.0]), exclude={"d"},
                   category_of=cats, cfg=RankConfig(k=3, max_per_category=1))
    second = 1 / np.log2(3)
    assert g == {"a": (1.0, 0.0), "b": (0.0, second), "c": (second, 1.0)}   # d excluded; a, b: one category


def test_trees_serve_until_enough_judgements_and_while_the_base_does_not_clearly_lead():
    gate = OrderGate(window=50, min_judged=10)
    for _ in range(9):
        gate.judge((0.0, 1.0))                    # the base list had the touched item, the trees' not
    assert gate.trees_lead                        # too few judgements: the learned order serves
    gate.judge(None)
    gate.judge((0.0, 0.0))                        # on neither list: no information, not counted
    assert gate.trees_lead and gate.n_judged == 9
    gate.judge((0.5, 0.6))
    assert not gate.trees_lead and gate.serve(3) is False and gate.stats()["lists_by_base"] == 3
    for _ in range(26):
        gate.judge((1.0, 0.0))                    # the trees learn: 26 > 9.6 over the window
    assert gate.trees_lead
    for _ in range(50):
        gate.judge((0.3, 0.4))                    # the window forgets the old judgements
    assert not gate.trees_lead and len(gate.judged) == 50 and gate.n_judged == 86


def test_noise_does_not_hand_the_order_back():
    """The base order must lead by three standard errors: 110 wins against 100 is not enough."""
    gate = OrderGate(window=1000, min_judged=10)
    for n in range(210):
        gate.judge((1.0, 0.0) if n % 21 < 10 else (0.0, 1.0))
    assert gate.trees_lead
    for _ in range(60):
        gate.judge((0.0, 1.0))                    # 170 against 100 is
    assert not gate.trees_lead


def test_the_decision_is_the_windows_paired_test_through_wraparound_and_a_restore():
    """The gate keeps the window's differences in a ring (read every batch): it decides as the paired test
    over the last `window` judgements does, as the window wraps, and after a restore mid-ring."""
    rng = np.random.default_rng(3)
    gate = OrderGate(window=40, min_judged=10, z=1.0)

    def exact(g: OrderGate) -> bool:
        d = np.array([b - t for t, b in g.judged])
        return len(d) < g.min_judged or not d.mean() > g.z * d.std(ddof=1) / np.sqrt(len(d))
    decisions = []
    for step in range(300):
        lean = 0.3 if (step // 60) % 2 else -0.3          # the base order leads, then the trees, in turn
        t, b = rng.uniform(0, 1, 2)
        gate.judge((float(t), float(np.clip(b + lean, 0, 1))))
        assert gate.trees_lead == exact(gate)
        decisions.append(gate.trees_lead)
        if step == 137:
            restored = OrderGate(window=40, min_judged=10, z=1.0)
            restored.load_state(gate.state())
            assert restored.trees_lead == gate.trees_lead
            gate = restored
    assert True in decisions and False in decisions     # both outcomes were exercised
    wider = OrderGate(window=100, min_judged=10, z=1.0)        # a restart with another window: the same rows
    wider.load_state(gate.state())
    assert wider.judged == gate.judged and wider.trees_lead == exact(wider)
    for _ in range(70):                                         # fills up, wraps, and still decides exactly
        wider.judge((float(rng.uniform()), float(rng.uniform())))
        assert wider.trees_lead == exact(wider) and len(wider.judged) == min(100, 40 + wider.n_judged - 300)


def test_join_judges_each_set_by_the_event_that_labels_it():
    """The next item event after the set (not its trigger, not another user's, not a late one) is its
    label: its gains in the two lists are one judgement, also when it is on neither list."""
    j = FeedbackJoin(window_ms=60_000, negatives=1, close_on_next=True)
    gains = {"a": (1.0, 0.5), "b": (0.0, 1.0)}
    j.impression("u", 1000, "rec:e0", ["a", "b", "c"], np.zeros((3, 2)), trigger_id="e0", gains=gains)
    j.observe("u", "e0", "view", "a", 1000)
    j.observe("v", "x", "view", "a", 1100)
    j.observe("u", "late", "view", "a", 900)
    assert j.judged == []
    j.observe("u", "e1", "view", "b", 2000)
    assert j.judged == [(0.0, 1.0)]
    j.impression("u", 3000, "rec:e1", ["a"], np.zeros((1, 2)), trigger_id="e1", gains=gains)
    j.observe("u", "e2", "view", "z", 4000)
    assert j.judged == [(0.0, 1.0), None]


def _inverted_ranker(**kw) -> OnlineRanker:
    """A whole-set ranker that learned the opposite of the base order: positives had low base scores."""
    r = OnlineRanker(RankerConfig.for_spec("lr:learned", min_examples=10, **kw))
    rng = np.random.default_rng(3)
    col = FEATURE_NAMES.index("base_z")
    xs = rng.normal(size=(400, N_FEATURES))
    r.learn([Example(x, bool(x[col] < 0), 1.0) for x in xs])
    return r


def _snaps(user, event_id, item, ts):
    ev = SimpleNamespace(ts=ts, event_id=event_id, type="view", item_id=item)
    return {user: SimpleNamespace(fresh=[ev], bot=False)}


def test_a_ranker_worse_than_the_base_order_hands_the_order_back_and_the_judgement_survives_a_restart():
    """Users touch the base order's top item; the ranker learned the opposite. Each set is recorded with
    both orders' lists as the pipeline records them; after `min_judged` labels the base order serves. A
    ranker restored from the state serves the same order."""
    r = _inverted_ranker()
    r.gate.min_judged = 20
    scorer = RankedScorer(FallbackScorer(), r)
    rank_cfg = RankConfig(k=10)
    first = None
    for n in range(25):
        batch = _batch(n, users=2, empty_user=False)
        got = scorer.score(batch)
        assert got.judge is not None
        items, (trees, base) = batch.items[0], got.judge[0]
        if first is None:
            first = got.final[0]
            np.testing.assert_array_equal(np.argsort(-first), np.argsort(-trees))   # the trees serve at first
        gains = list_gains(items, trees, base, exclude=set(), category_of={}, cfg=rank_cfg)
        r.record("u", 1000 * n, f"k{n}", items, got.rows[0], f"t{n}", gains)
        r.feedback(_snaps("u", f"e{n}", items[int(np.argmax(base))], 1000 * n + 1))
    assert r.gate.n_judged == 25 and not r.gate.trees_lead
    batch = _batch(99, users=2, empty_user=False)
    got = scorer.score(batch)
    np.testing.assert_array_equal(got.final[0], FallbackScorer().score(_batch(99, users=2, empty_user=False)).final[0])
    restored = _inverted_ranker()
    restored.gate.min_judged = 20
    restored.load_state(r.state())
    assert list(restored.gate.judged) == list(r.gate.judged) and not restored.gate.trees_lead
    assert r.gate.stats()["lists_by_base"] == 2 * 5 + 2     # from the 21st set on: 5 batches and the last


def test_ungated_and_cascade_rankers_have_no_gate_and_are_not_judged():
    assert OnlineRanker(RankerConfig.for_spec("gbdt:ungated")).gate is None
    assert OnlineRanker(RankerConfig.for_spec("lr")).gate is None
    r = OnlineRanker(RankerConfig.for_spec("lr"))
    r.learn([Example(np.ones(N_FEATURES), True, 1.0)] * 300)
    assert RankedScorer(FallbackScorer(), r).score(_batch(1)).judge is None


def test_each_variant_explores_on_its_own(redis_client):
    """The deployment's scorer uses the pipeline's exploration slot; any other scorer (an experiment's
    variant, a backtest row) one of its own, the same one every batch, so rows compared side by side do not
    learn from each other's slots."""
    import uuid

    from stream.core.pipeline import Pipeline
    from stream.core.ranking.explore import FreshExplorer
    p = Pipeline(redis_client, f"rs:t{uuid.uuid4().hex[:8]}:")
    assert p.explorer_for(p.scorer) is None                       # no slot without content
    p.explorer = FreshExplorer()
    a = RankedScorer(p.scorer, OnlineRanker(RankerConfig.for_spec("gbdt")))
    b = RankedScorer(p.scorer, OnlineRanker(RankerConfig.for_spec("gbdt:ungated")))
    assert p.explorer_for(p.scorer) is p.explorer
    assert p.explorer_for(a) is p.explorer_for(a) and p.explorer_for(a) not in (p.explorer, p.explorer_for(b))
