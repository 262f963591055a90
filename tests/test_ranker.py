"""The online ranker: features, the numpy mirror's parity with river, checkpoints (real Redis), the bot guard."""
import logging
import uuid

import numpy as np
import pytest

from stream.core.candidates import SOURCE_NAMES
from stream.core.ranking.checkpoint import RankerCheckpoint
from stream.core.ranking.feedback import Example
from stream.core.ranking.ranker import OnlineRanker, RankerConfig, mirror_params
from stream.core.scoring.features import FEATURE_NAMES, N_FEATURES, UserView, candidate_features
from stream.core.storage.store import Keys, profile_fields

HOUR = 3_600_000


def _user(**kw):
    base = dict(affinity={"c:shoes": 4.0, "c:hats": 1.0, "b:acme": 2.0}, aff_ts={"c:shoes": 10 * HOUR, "c:hats": 0},
                last_ts=11 * HOUR, prev_ts=11 * HOUR - 60_000, last_type="click", price_mean=float(np.log(50.0)),
                history=9)
    base.update(kw)
    return UserView(**base)


def test_features_hand_computed():
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    sources = np.zeros((3, len(SOURCE_NAMES)))
    sources[0, 0], sources[1, 0], sources[2, 2] = 0.5, 1.0, 0.7      # covisit a, b; trending c
    tr = np.array([1.0, np.nan, 3.0])
    base = np.array([2.0, 1.0, 0.5])
    meta = [("shoes", "acme", 100.0), ("hats", None, None), (None, None, 5.0)]
    now = 12 * HOUR
    X = candidate_features(sources, tr, base, meta, _user(), now, np.array([9.0, 0.0, 1.0]), np.array([0.2, 0, 1]))
    assert X.shape == (3, N_FEATURES) and np.isfinite(X).all()
    assert X[:, col["rank_covisit"]].tolist() == [0.5, 1.0, 0.0]
    assert X[:, col["n_sources"]].tolist() == [1, 1, 1]
    assert X[:, col["transformer_z"]].tolist() == [-1.0, 0.0, 1.0] and X[1, col["transformer_known"]] == 0
    assert X[:, col["base_rank"]].tolist() == [1.0, 0.5, 1 / 3]
    assert X[0, col["log_popularity"]] == pytest.approx(np.log(10.0))
    assert X[:, col["cat_affinity"]].tolist() == [1.0, 0.25, 0.0]
    assert X[0, col["brand_affinity"]] == 1.0
    assert X[0, col["cat_log_hours"]] == pytest.approx(np.log1p(2.0))    # shoes last touched 2 h ago
    assert X[:, col["cat_never"]].tolist() == [0, 0, 1]
    assert X[0, col["price_rel"]] == pytest.approx(np.log(2.0)) and X[1, col["price_known"]] == 0
    assert X[0, col["log_since_last_s"]] == pytest.approx(np.log1p(3600.0))
    assert X[0, col["log_gap_before_last_s"]] == pytest.approx(np.log1p(60.0))
    assert X[:, col["trigger_click"]].tolist() == [1, 1, 1] and X[0, col["trigger_view"]] == 0
    assert X[:, col["content_known"]].tolist() == [0, 0, 0]
    X = candidate_features(sources, tr, base, meta, _user(), now, np.zeros(3), np.zeros(3),
                           content_sim=np.array([0.5, np.nan, -0.1]))
    assert X[:, col["content_sim"]].tolist() == [0.5, 0.0, -0.1] and X[:, col["content_known"]].tolist() == [1, 0, 1]
    assert X[:, col["pop_rel"]].tolist() == [0, 0, 0]                     # no recent items' popularity known
    # how mainstream the user is: popularity against the mean over their recent items; when they touched them
    user = _user(pop_mean=float(np.log1p(3.0)), recent_ts=[11 * HOUR, 2 * HOUR])
    X = candidate_features(sources, tr, base, meta, user, now, np.array([9.0, 0.0, 3.0]), np.zeros(3),
                           items=["a", "b", "c"], history=["b", "a"])
    assert X[:, col["pop_rel"]] == pytest.approx([np.log(10 / 4), -np.log(4), 0.0])
    assert X[:, col["hist_log_hours"]] == pytest.approx([np.log1p(10.0), np.log1p(1.0), 0.0])
    assert X[:, col["hist_recency"]].tolist() == [0.5, 1.0, 0.0]
    assert X[:, col["hist_bought"]].tolist() == [0, 0, 0]                 # no purchases known
    X = candidate_features(sources, tr, base, meta, _user(bought=["c", "x"]), now, np.zeros(3), np.zeros(3),
                           items=["a", "b", "c"], history=["b", "a"])
    assert X[:, col["hist_bought"]].tolist() == [0, 0, 1]


def _examples(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = rng.normal(size=N_FEATURES)
        out.append(Example(x, bool(x[0] + 0.5 * x[1] > 0), 1.0 + (x[2] > 1)))
    return out


@pytest.mark.parametrize("model", ["lr", "fm"])
def test_numpy_mirror_matches_river(model):
    r = OnlineRanker(RankerConfig(model=model, seed=3))
    r.learn(_examples(400))
    X = np.random.default_rng(9).normal(size=(25, N_FEATURES))
    mine = r.predict_proba(X)
    river = [r.model.predict_proba_one(r.as_input(x))[True] for x in X]
    assert np.abs(mine - np.array(river)).max() < 1e-9
    assert mine.std() > 0.01          # it learned something: the mirror is not trivially flat


def test_ranker_learns_the_planted_signal():
    r = OnlineRanker(RankerConfig(model="lr"))
    r.learn(_examples(3000))
    test = _examples(500, seed=1)
    p = r.predict_proba(np.stack([e.x for e in test]))
    acc = np.mean([(pi > 0.5) == e.y for pi, e in zip(p, test)])
    assert acc > 0.85


def test_background_trees_fit_now_for_a_warm_start():
    """A benchmark's warm-up fits the worker's background trees and waits (bench/catchup.py): before it the
    trees are not fitted (no rows to fit yet, or one class only), after it they separate the planted signal."""
    from stream.core.ranking.gbdt import WindowedGBDT
    m = WindowedGBDT(N_FEATURES, background=True, min_rows=10**9)   # never due by itself
    assert not m.fit_now() and not m.fitted                           # nothing held
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, N_FEATURES)).astype(np.float32)
    X[:, 0] = -np.abs(X[:, 0])
    m.learn_many(X, np.zeros(3000), np.ones(3000))
    assert not m.fit_now() and not m.fitted                           # negatives only
    X = rng.normal(size=(3000, N_FEATURES)).astype(np.float32)
    m.learn_many(X, (X[:, 0] > 0).astype(float), np.ones(3000))
    assert m.fit_now() and m.fitted
    Z = rng.normal(size=(500, N_FEATURES)).astype(np.float32)
    Z[rng.random(Z.shape) < 0.2] = np.nan                            # a model's masked columns: missing
    assert np.mean((m.logits(Z) > 0) == (np.nan_to_num(Z[:, 0]) > 0)) > 0.9


def test_the_workers_compiled_trees_score_as_lightgbm_does():
    """In the worker (background fits, in a child process) each booster is compiled (lleaves) and that
    scores: the same raw scores as LightGBM's predict, missing values and a column-major batch included, and
    after a checkpoint's restore too (compiled again as it is restored, before the worker's first batch)."""
    import pickle
    from stream.core.ranking.gbdt import WindowedGBDT
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4000, N_FEATURES)).astype(np.float32)
    X[rng.random(X.shape) < 0.2] = np.nan
    y = (np.nan_to_num(X[:, 0]) + np.isnan(X[:, 1]) > 0.8).astype(float)
    m = WindowedGBDT(N_FEATURES, background=True, min_rows=10**9)
    assert m.compile
    m.learn_many(X, y, np.ones(len(y)))
    assert m.fit_now() and m._compiled is not None and m._compiled[0] is m.booster
    Z = np.asfortranarray(X[:700])                                    # the feature table is filled column-major
    reference = m.booster.predict(np.ascontiguousarray(Z), raw_score=True, num_threads=1)
    assert np.allclose(m.logits(Z), reference, rtol=0, atol=1e-9)
    import lightgbm as lgb                           # fitted in a child process: the trees this process would fit
    from stream.core.ranking.gbdt import PARAMS
    here = lgb.train({**PARAMS, "seed": m.seed, "num_threads": 1}, lgb.Dataset(X, y, weight=np.ones(len(y))),
                     m.rounds)
    assert np.array_equal(here.predict(np.ascontiguousarray(Z), raw_score=True, num_threads=1), reference)
    restored = pickle.loads(pickle.dumps(m))
    assert restored._compiled is not None and restored._compiled[0] is restored.booster
    assert np.allclose(restored.logits(Z), reference, rtol=0, atol=1e-9)
    inline = WindowedGBDT(N_FEATURES)                                 # the backtest: LightGBM scores, no compile
    assert not inline.compile


def test_a_restored_model_serves_until_the_window_holds_as_many_rows_as_it_was_fitted_on():
    """After a restart the window is empty: the restored trees (fitted on the whole window before it) are not
    replaced by a fit on the first few thousand rows after it, but once the window is as full again."""
    import pickle
    from stream.core.ranking.gbdt import WindowedGBDT
    rng = np.random.default_rng(5)

    def rows(n):
        X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
        return X, (X[:, 0] > 0).astype(float), np.ones(n)
    m = WindowedGBDT(N_FEATURES, min_rows=2_000, refit_every=2_000)
    m.learn_many(*rows(12_000))
    assert m.fitted and m.fitted_rows == 12_000
    restored = pickle.loads(pickle.dumps(m))
    assert restored.fitted_rows == 12_000 and restored.filled == 0
    kept = restored.booster
    for _ in range(5):                                                # 10,000 rows: the window is not as full
        restored.learn_many(*rows(2_000))
        assert restored.booster is kept
    restored.learn_many(*rows(2_000))                                 # 12,000: refitted on them
    assert restored.booster is not kept and restored.fitted_rows == 12_000
    fresh = WindowedGBDT(N_FEATURES, min_rows=2_000, refit_every=2_000)
    fresh.learn_many(*rows(2_000))
    assert fresh.fitted and fresh.fitted_rows == 2_000                # no restore: the first fit as before


def test_checkpoint_restores_identical_predictions_and_rejects_corruption(redis_client, caplog):
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    for model in ("lr", "fm"):
        a = OnlineRanker(RankerConfig(model=model))
        a.learn(_examples(500))
        ck = RankerCheckpoint(redis_client, prefix, "g", model)
        assert ck.save(a) == 1 and ck.save(a) == 2          # versioned
        X = np.random.default_rng(2).normal(size=(50, N_FEATURES))
        b = OnlineRanker(RankerConfig(model=model))
        assert ck.restore(b) is True
        assert b.n_learned == a.n_learned
        assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
        more = _examples(100, seed=5)                       # and they keep learning identically
        a.learn(more)
        b.learn(more)
        assert np.array_equal(a.predict_proba(X), b.predict_proba(X))

        payload = redis_client.hget(ck.key, "payload")
        redis_client.hset(ck.key, "payload", payload[:-7] + b"garbage")
        c = OnlineRanker(RankerConfig(model=model))
        with caplog.at_level(logging.ERROR, logger="recstream.ranker"):
            assert ck.restore(c) is False
        assert "rejected" in caplog.text and "checksum" in caplog.text and ck.key in caplog.text
        assert c.n_learned == 0 and mirror_params(c.model) is None       # from scratch
        caplog.clear()
    redis_client.hset(ck.key, mapping={"format": "something-else/9"})
    with caplog.at_level(logging.ERROR, logger="recstream.ranker"):
        assert ck.restore(OnlineRanker(RankerConfig(model="fm"))) is False
    assert "format" in caplog.text


def test_bot_like_users_train_neither_ranker_nor_covisitation(redis_client):
    """A user far above the event-rate norm (100 clicks in 50 s; the guard is 40 a minute): every event
    is applied and counted, but past the guard they record no impression, label nothing, and add no
    co-visitation or popularity. A human beside them does all three."""
    from schemas import Event
    from stream.core.pipeline import Pipeline
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    p = Pipeline(redis_client, prefix)
    ranker = OnlineRanker(RankerConfig(min_examples=0))
    p.attach_ranker(ranker)
    t0 = 1_700_000_000_000

    def ev(uid, n, item, ts, etype="click"):
        return Event(event_id=f"{uid}-{n}", user_id=uid, type=etype, ts=ts, item_id=item)

    p.process_events([ev(f"seed{i}", 0, it, t0 - 600_000) for i, it in enumerate("aab")])
    p.process_events([ev("human", 0, "z", t0, "view")])
    p.process_events([ev("human", 1, "a", t0 + 60_000)])
    for n in range(100):
        p.process_events([ev("bot", n, ("p", "q")[n % 2], t0 + 120_000 + n * 500)])

    keys = Keys(prefix)
    bot = profile_fields(redis_client, prefix, ["bot"])[0]
    assert bot["n:click"] == "100" and bot["n:bot_flagged"] == "60"
    # p -> q co-visitation: 20 of the first 40 events (weight 2 each); the 30 flagged ones add nothing
    assert redis_client.zscore(keys.covis("p"), "q") == 40.0
    assert redis_client.zscore(keys.pop(), "q") == 40.0
    assert ranker.join.stats.impressions == 3 + 2 + 40                  # none once flagged
    human = ranker.join.open["human"]
    assert any(imp.hits for imp in human)                                 # the human's click labelled a list
    open_bot = ranker.join.open["bot"]      # its last lists from before the guard, still in their window
    assert any("p" in imp.items or "q" in imp.items for imp in open_bot)
    labelled_by = {e for imp in open_bot for e in imp.labelled_by}
    assert not {f"bot-{n}" for n in range(40, 100)} & labelled_by


def test_batch_features_equal_per_user_features():
    """The batched (segment-wise) computation gives every user exactly what the per-user one gives,
    including empty users, ties, NaNs and users without a price history."""
    from stream.core.scoring.features import batch_features
    from stream.core.scoring.segments import rank_inverse, zscore
    rng = np.random.default_rng(4)
    col = {n: i for i, n in enumerate(FEATURE_NAMES)}
    args = []
    for c in (5, 0, 1, 12, 7):
        src = rng.choice([0.0, 0.5, 1.0, 0.25], size=(c, len(SOURCE_NAMES)))          # ties on purpose
        tr = np.where(rng.random(c) < 0.3, np.nan, rng.normal(size=c))
        base = rng.choice([1.0, 2.0, 0.5], size=c)
        meta = [(rng.choice(["shoes", "hats", None]), None, float(rng.integers(1, 90)) if rng.random() < .5 else None)
                for _ in range(c)]
        user = _user(price_mean=None) if c == 7 else _user()
        args.append((src, tr, base, meta, user, rng.random(c) * 9, rng.random(c), rng.normal(size=c)))
    now = 12 * HOUR
    together = batch_features(*[list(x) for x in zip(*[(a[0], a[1], a[2], a[3], a[4]) for a in args])], now,
                              [a[5] for a in args], [a[6] for a in args], [a[7] for a in args])
    for a, Xb in zip(args, together):
        X1 = candidate_features(a[0], a[1], a[2], a[3], a[4], now, a[5], a[6], a[7])
        assert Xb.shape == X1.shape and np.allclose(Xb, X1, atol=1e-12)
        if len(a[2]):
            assert np.allclose(Xb[:, col["rank_covisit"]], rank_inverse(a[0][:, 0]))
            assert np.allclose(Xb[:, col["transformer_z"]], zscore(a[1]))
            assert np.allclose(Xb[:, col["base_z"]], zscore(a[2]))
            assert np.allclose(Xb[:, col["base_rank"]], rank_inverse(a[2] - a[2].min() + 1.0))


def test_batched_last_item_columns_equal_the_per_candidate_reference():
    """The newest-item columns, computed in numpy over the whole batch (object-array comparisons, one log
    per price), equal `last_item_features`, the per-candidate reference, for every user: unknown
    categories, brands and prices on either side, zero prices, users with no newest item."""
    from stream.core.scoring.features import batch_features, last_item_features
    rng = np.random.default_rng(9)
    pick = lambda xs: xs[int(rng.integers(0, len(xs)))]       # noqa: E731
    metas = [[(pick(["shoes", "hats", None]), pick(["acme", "zed", None]), pick([None, 0.0, 5, 19.5, 80.0]))
              for _ in range(c)] for c in (6, 0, 9, 4, 7)]
    lasts = [pick(m) if m else None for m in metas[:-1]] + [None]
    sizes = [len(m) for m in metas]
    X = batch_features([np.zeros((c, len(SOURCE_NAMES))) for c in sizes], None, [np.zeros(c) for c in sizes],
                       metas, [_user()] * 5, 12 * HOUR, [np.zeros(c) for c in sizes], [np.zeros(c) for c in sizes],
                       last_meta=lasts)
    start = FEATURE_NAMES.index("last_same_cat")
    for Xu, m, last in zip(X, metas, lasts):
        np.testing.assert_allclose(Xu[:, start:start + 4], last_item_features(m, last).reshape(-1, 4), atol=1e-12)


def test_the_item_table_path_equals_the_per_candidate_lists():
    """The ranker reads each item's metadata and statistics once per batch (`batch_table`) and every candidate
    by its row; that gives exactly the features of building them candidate by candidate (`batch_features`):
    items missing from the metadata or the statistics, empty and missing categories and brands, newest items
    that are no candidate, recent purchases, affinities to categories no candidate has."""
    from stream.core.scoring.features import batch_features, table_features
    from stream.core.scoring.itemtable import batch_table
    rng = np.random.default_rng(11)
    pick = lambda xs: xs[int(rng.integers(0, len(xs)))]       # noqa: E731
    pool = [f"i{j}" for j in range(40)]
    meta = {i: (pick(["shoes", "hats", "", None, "bags"]), pick(["acme", "zed", "", None]), pick([None, 0.0, 5, 19.5]))
            for i in pool[:34]}                                  # i34..i39: no metadata
    stats = {i: (float(rng.integers(0, 50)), float(rng.random() * 3), float(rng.normal()), float(rng.integers(0, 9)))
             for i in pool if rng.random() < 0.8}
    sizes = (6, 0, 9, 4, 12)
    items = [[pick(pool) for _ in range(c)] for c in sizes]      # repeats across and within users
    users = [_user(affinity={"c:shoes": 4.0, "c:socks": 9.0, "b:zed": 1.0, "c:": 2.0}, aff_ts={"c:bags": HOUR},
                   bought=[pick(pool), *items[u][:1]] if u % 2 == 0 else None) for u in range(len(sizes))]
    lasts = [meta.get(pick(pool)) for _ in sizes[:-1]] + [("ties", "", 3.0)]
    src = [rng.choice([0.0, 0.5, 1.0], size=(c, len(SOURCE_NAMES))) for c in sizes]
    base, tr = [rng.normal(size=c) for c in sizes], [rng.normal(size=c) for c in sizes]
    hist = [[pick(pool) for _ in range(5)] for _ in sizes]
    trend_max = max(t for _, t, _, _ in stats.values())
    lists = batch_features(src, tr, base, [[meta.get(i, (None, None, None)) for i in it] for it in items], users,
                           12 * HOUR, [np.array([stats.get(i, (0.0, 0.0))[0] for i in it]) for it in items],
                           [np.array([stats.get(i, (0.0, 0.0))[1] for i in it]) / trend_max for it in items],
                           None, items, hist, lasts)
    table, rows = batch_table(meta, stats, items)
    via_table = table_features(src, tr, base, users, 12 * HOUR, table, rows, None, items, hist, lasts)
    assert len(via_table) == len(lists) == len(sizes)
    r = FEATURE_NAMES.index("item_rating")          # the per-candidate lists carry no ratings: read from `stats`
    for a, b, it in zip(via_table, lists, items):
        rating = np.array([stats.get(i, (0.0,) * 4)[2:] for i in it]).reshape(-1, 2)
        b[:, r], b[:, r + 1] = rating[:, 0], np.log1p(rating[:, 1])
        np.testing.assert_array_equal(a, b)
    assert sum(x[:, FEATURE_NAMES.index("hist_bought")].sum() for x in lists) > 0      # the cases were exercised
    assert sum(x[:, FEATURE_NAMES.index("last_same_cat")].sum() for x in lists) > 0


@pytest.mark.parametrize("model", ["gbdt", "lr"])
def test_learned_order_puts_near_zero_weight_on_a_random_transformer(model):
    """Each event is a label against its whole candidate set. Here the touched item follows the user's
    own history (repeat consumption) and the transformer's scores are noise: the learned model ends up
    with almost no weight on them, by itself, and ranks the whole set by what predicts (the weight: the
    trees' share of split gain, or |weight| on standardised inputs for the linear model)."""
    from stream.core.candidates import SOURCE_NAMES
    from stream.core.ranking.feedback import Example
    from stream.core.scoring.features import batch_features
    rng = np.random.default_rng(11)
    r = OnlineRanker(RankerConfig.for_spec(model + ":learned", min_examples=100))
    user = _user()
    for _ in range(400):
        items = [f"i{k}" for k in range(30)]
        history = list(rng.permutation(items)[:8])
        sources = rng.random((30, len(SOURCE_NAMES))) * (rng.random((30, len(SOURCE_NAMES))) < 0.3)
        transformer = rng.normal(size=30)                           # random: knows nothing
        X = batch_features([sources], [transformer], [sources.sum(axis=1)], [[(None, None, None)] * 30], [user],
                           12 * HOUR, [np.zeros(30)], [np.zeros(30)], None, [items], [history])[0]
        touched = items.index(history[int(rng.integers(0, 3))])    # one of the three newest
        negatives = rng.choice([k for k in range(30) if k != touched], size=8, replace=False)
        r.learn([Example(X[touched], True, 1.0)] + [Example(X[k], False, 1.0) for k in negatives])
    share = r.importance()
    assert share["transformer_z"] < 0.1 * share["hist_recency"], (share["transformer_z"], share["hist_recency"])
    assert share["transformer_z"] + share["transformer_known"] < 0.05, share
    assert r.active and r.whole_set
    # and the order it learned puts the user's three newest items (each touched equally often) in its top 5
    X = batch_features([sources], [transformer], [sources.sum(axis=1)], [[(None, None, None)] * 30], [user],
                       12 * HOUR, [np.zeros(30)], [np.zeros(30)], None, [items], [history])[0]
    order = np.argsort(-r.logits(X)).tolist()
    assert {items.index(h) for h in history[:3]} <= set(order[:5])


@pytest.mark.parametrize("model", ["gbdt", "lr"])
def test_whole_set_ranker_restored_from_a_checkpoint_ranks_the_same(redis_client, model):
    """The learned order survives a restart: a ranker restored from its checkpoint orders a candidate
    set exactly as the one that wrote it, through the same cascade the pipeline uses."""
    from test_contract_scorers import _batch

    from stream.core.ranking.cascade import RankedScorer
    from stream.core.scoring import FallbackScorer
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    cfg = RankerConfig.for_spec(model + ":learned", min_examples=10)
    a = OnlineRanker(cfg)
    a.learn(_examples(300 if model == "lr" else 3000))
    ck = RankerCheckpoint(redis_client, prefix, "g", model)
    ck.save(a)
    b = OnlineRanker(cfg)
    assert ck.restore(b) and b.active
    batch = (lambda: _batch(4, users=8))       # 7 users with 5 to 11 candidates (the last one none)
    sa, sb = RankedScorer(FallbackScorer(), a).score(batch()), RankedScorer(FallbackScorer(), b).score(batch())
    for x, y in zip(sa.final, sb.final):
        np.testing.assert_array_equal(x, y)
    base = FallbackScorer().score(batch()).final
    assert any(len(x) > 1 and not np.array_equal(np.argsort(-x), np.argsort(-f)) for x, f in zip(sa.final, base))


def test_model_columns_are_learned_only_after_the_models_training_window():
    """A model scores its own training events better than anything new (there it has seen the very
    transition it is asked about). Rows asked before the model's `trained_until` are learned from with
    the model's columns missing (`features.in_sample`), so the trees judge the model only by what it
    does after its training window. Planted: in-sample the transformer always puts the touched item
    first, afterwards it is noise and the user's history predicts. Learned as is, the in-sample rows make
    the trees lean on the transformer; masked, they do not."""
    from stream.core.scoring.features import batch_features, in_sample
    rng = np.random.default_rng(5)
    user = _user()

    def rows(leaky: bool):
        items = [f"i{k}" for k in range(30)]
        history = list(rng.permutation(items)[:8])
        touched = items.index(history[int(rng.integers(0, 3))])
        sources = rng.random((30, len(SOURCE_NAMES))) * (rng.random((30, len(SOURCE_NAMES))) < 0.3)
        transformer = rng.normal(size=30)
        if leaky:
            transformer[touched] = 10.0
        X = batch_features([sources], [transformer], [sources.sum(axis=1)], [[(None, None, None)] * 30], [user],
                           12 * HOUR, [np.zeros(30)], [np.zeros(30)], None, [items], [history])[0]
        negatives = rng.choice([k for k in range(30) if k != touched], size=8, replace=False)
        return X, touched, negatives

    sets = [rows(leaky=True) for _ in range(300)] + [rows(leaky=False) for _ in range(60)]
    share = {}
    for mask in (False, True):
        r = OnlineRanker(RankerConfig.for_spec("gbdt", min_examples=100))
        for n, (X, touched, negatives) in enumerate(sets):
            X = in_sample(X, base_has_model=False) if mask and n < 300 else X
            r.learn([Example(X[touched], True, 1.0)] + [Example(X[k], False, 1.0) for k in negatives])
        r.model.refit()
        share[mask] = r.importance()
    assert share[False]["transformer_z"] > 0.5, share[False]          # the leak decides the unmasked order
    assert share[True]["transformer_z"] < 0.1 * share[True]["hist_recency"], share[True]


def test_rows_are_masked_only_while_the_model_had_trained_on_them():
    """The cascade hands the pipeline masked rows (for learning) for a batch at or before the model's
    `trained_until`, and the rows it scored with otherwise; the order itself is never computed from
    masked rows. `recorded` leaves out masked rows that only the model's own sources proposed."""
    from types import SimpleNamespace

    from test_contract_scorers import _batch

    from stream.core.ranking.cascade import RankedScorer
    from stream.core.scoring import FallbackScorer
    from stream.core.scoring.features import in_sample
    r = OnlineRanker(RankerConfig.for_spec("gbdt", min_examples=10))
    r.learn(_examples(3000))

    class Base(FallbackScorer):
        transformer = SimpleNamespace(trained_until=None)

    base = Base()
    for until, masked in ((19_999, False), (20_000, True), (None, False)):
        base.transformer.trained_until = until
        got = RankedScorer(base, r).score(_batch(4, users=4))
        plain = RankedScorer(FallbackScorer(), r).score(_batch(4, users=4))
        for a, b in zip(got.final, plain.final):
            np.testing.assert_array_equal(a, b)
        X = got.rows[0]
        assert np.isnan(X[:, FEATURE_NAMES.index("transformer_z")]).all() == masked
        assert not np.isnan(X[:, FEATURE_NAMES.index("src_covisit")]).any()
    only_model = np.zeros((3, N_FEATURES))
    only_model[:, FEATURE_NAMES.index("n_sources")] = 1
    only_model[0, SOURCE_NAMES.index("model")] = 0.9            # row 0: the model's source alone
    only_model[1:, SOURCE_NAMES.index("covisit")] = 0.5
    kept = r.recorded([0], np.array([3.0, 2.0, 1.0]), in_sample(only_model, True))
    assert kept == [1, 2]
    assert r.recorded([0], np.array([3.0, 2.0, 1.0]), only_model) == [0, 1, 2]


def test_bought_items_stay_candidates_unless_the_shop_excludes_them(redis_client):
    """Shoppers come back to what they bought (the Taobao slice and the REES46 head, twentieth session): by
    default a purchase stays among the user's candidates, flagged `hist_bought` for the learned ranker;
    `RankConfig(exclude_bought=True)` (`RECSTREAM_EXCLUDE_BOUGHT=1`) restores the rule that drops it."""
    from schemas import Event
    from stream.core.pipeline import Pipeline
    from stream.core.ranking.rank import RankConfig
    t0 = 1_700_000_000_000
    lists = {}
    for exclude in (False, True):
        p = Pipeline(redis_client, f"rs:t{uuid.uuid4().hex[:8]}:",
                     rank_cfg=RankConfig(k=10, exclude_trigger=False, exclude_bought=exclude))
        p.process_events([Event(event_id="e0", user_id="u", type="purchase", ts=t0, item_id="bag", price=20.0)])
        res = p.process_events([Event(event_id="e1", user_id="u", type="view", ts=t0 + 60_000, item_id="hat")])
        lists[exclude] = [r.item_id for r in res.recommendations[0].items]
    assert "bag" in lists[False] and "bag" not in lists[True]


def test_a_spec_without_features_never_learns_or_scores_them():
    from stream.config.compose import make_ranker
    col = FEATURE_NAMES.index("hist_bought")
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, N_FEATURES))
    y = X[:, col] > 0                                     # the label is that one column
    examples = [Example(x, bool(t), 1.0) for x, t in zip(X, y)]
    with_it, without = make_ranker("gbdt"), make_ranker("gbdt:without=hist_bought+pop_rel")
    assert without.cfg.without == ("hist_bought", "pop_rel") and without.cfg.weight is None
    for r in (with_it, without):
        r.learn(examples)
    assert with_it.importance()["hist_bought"] > 0.5
    assert without.importance()["hist_bought"] == 0 and without.importance()["pop_rel"] == 0
    flipped = X[:50].copy()
    flipped[:, col] *= -1
    assert np.array_equal(without.logits(X[:50]), without.logits(flipped))
    assert not np.array_equal(with_it.logits(X[:50]), with_it.logits(flipped))
    with pytest.raises(ValueError, match="unknown features.*nope"):
        make_ranker("gbdt:without=nope")
