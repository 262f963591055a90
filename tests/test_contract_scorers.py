"""The scorer contract: every scorer the pipeline can run (fallback, transformer blend, either under the
online ranker) passes the same checks. Pure: no Redis."""
import numpy as np
import pytest
from conftest import register_model

from stream.core.candidates import SOURCE_NAMES
from stream.core.ranking.cascade import RankedScorer
from stream.core.ranking.ranker import OnlineRanker, RankerConfig
from stream.core.scoring import CandidateBatch, FallbackScorer, Scored
from stream.core.storage.profile import Snapshot

W = len(SOURCE_NAMES)


def _batch(seed: int = 0, users: int = 3, empty_user: bool = True) -> CandidateBatch:
    rng = np.random.default_rng(seed)
    names = [f"u{n}" for n in range(users)]
    items, feats = [], []
    for n in range(users):
        c = 0 if (empty_user and n == users - 1) else 5 + n
        items.append([f"i{1 + (n * 7 + j) % 59}" for j in range(c)])
        feats.append(rng.random((c, W)) * (rng.random((c, W)) < 0.5))
    snaps = {u: Snapshot(u, recent=[f"i{k}" for k in range(1, 4)], affinity={"c:a": 1.0}, bought=[], last_ts=10_000,
                         prev_ts=5_000, last_type="view") for u in names}
    meta = {i: ("a", None, 10.0) for its in items for i in its}
    return CandidateBatch(names, items, feats, [snaps[u].recent for u in names], ["view"] * users, snapshots=snaps,
                          now_ts=20_000, meta=meta, item_stats={i: (3.0, 1.0, 0.0, 0.0) for i in meta})


def _trained_ranker() -> OnlineRanker:
    from stream.core.ranking.feedback import Example
    from stream.core.scoring.features import N_FEATURES
    r = OnlineRanker(RankerConfig(min_examples=10))
    rng = np.random.default_rng(1)
    r.learn([Example(x, bool(x[0] > 0), 1.0) for x in rng.normal(size=(50, N_FEATURES))])
    return r


def _blend(tiny, tmp_path_factory):
    from stream.core.scoring.transformer import BlendedScorer, OnnxScorer
    reg, v = register_model(tmp_path_factory.mktemp("reg"), *tiny)
    return BlendedScorer(OnnxScorer(reg.path(v)))


SCORERS = {
    "fallback": lambda tiny, tmp: FallbackScorer(),
    "blend": _blend,
    "fallback+ranker": lambda tiny, tmp: RankedScorer(FallbackScorer(), _trained_ranker()),
    "blend+ranker": lambda tiny, tmp: RankedScorer(_blend(tiny, tmp), _trained_ranker()),
}


@pytest.fixture(params=sorted(SCORERS))
def make(request, tiny, tmp_path_factory):
    return lambda: SCORERS[request.param](tiny, tmp_path_factory)


def test_declares_its_capabilities(make):
    sc = make()
    assert isinstance(sc.name, str) and isinstance(sc.version, str) and sc.version
    assert isinstance(sc.needs_item_stats, bool)
    assert sc.transformer is None or hasattr(sc.transformer, "predict")
    assert sc.ranker is None or isinstance(sc.ranker, OnlineRanker)


def test_one_score_per_candidate_with_its_components(make):
    b = _batch()
    out = make().score(b)
    assert isinstance(out, Scored)
    assert [len(f) for f in out.final] == [len(i) for i in b.items]
    name = make().name
    assert out.components[name] is out.final
    for comp in out.components.values():
        assert [len(c) for c in comp] == [len(i) for i in b.items]
    assert out.rows is None or [len(r) for r in out.rows] == [len(i) for i in b.items]
    assert all(np.isfinite(f).all() for f in out.final)


def test_fresh_instances_same_input_same_output(make):
    a, b = make().score(_batch(3)), make().score(_batch(3))
    for x, y in zip(a.final, b.final):
        np.testing.assert_array_equal(x, y)


def test_empty_input(make):
    sc = make()
    out = sc.score(CandidateBatch([], [], [], []))
    assert out.final == [] and all(v == [] for v in out.components.values())
    out = sc.score(_batch(users=1, empty_user=True))
    assert len(out.final) == 1 and len(out.final[0]) == 0


def test_scoring_again_changes_nothing(make):
    """Scoring is a pure function of the batch: a replayed batch gets the same scores, and the batch's
    source scores are left as they were."""
    sc, b = make(), _batch(5)
    before = [f.copy() for f in b.features]
    first = sc.score(b)
    again = sc.score(_batch(5))
    for x, y in zip(first.final, again.final):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(before, b.features):
        np.testing.assert_array_equal(x, y)
