"""The base order's transformer weight, learned from the users' next events (pure logic)."""
import numpy as np

from stream.core.scoring.blendweight import BlendWeight, batch_weight_gains, standardised, weight_gains


def _run(blend: BlendWeight, informative: str, n_users: int = 600, seed: int = 3) -> float:
    """Users whose next item is the candidate the informative score ranks first; the other score is noise."""
    rng = np.random.default_rng(seed)
    items = [f"i{j}" for j in range(30)]
    for rnd in range(3):
        for u in range(n_users):
            uid = f"u{u}"
            fb, tr = rng.normal(size=30), rng.normal(size=30)
            good = fb if informative == "fallback" else tr
            blend.record(uid, items, weight_gains(fb, tr, np.zeros(30, bool), 10, blend.weights))
            blend.observe(uid, items[int(np.argmax(good))])
        blend.choose()
    return blend.weight


def test_a_noisy_transformer_loses_its_weight_and_a_good_one_keeps_it():
    noisy = BlendWeight(start=1.0)
    assert _run(noisy, informative="fallback") == 0.0 and noisy.moves and noisy.n_judged > 1000
    good = BlendWeight(start=1.0)
    assert _run(good, informative="transformer") == 2.0          # the largest weight the grid offers
    assert good.stats()["blend_weight"] == 2.0


def test_no_move_before_enough_judgements_and_none_on_noise():
    few = BlendWeight(start=1.0, min_judged=5000)
    assert _run(few, informative="fallback") == 1.0 and not few.moves
    rng = np.random.default_rng(0)
    tie = BlendWeight(start=1.0)
    items = [f"i{j}" for j in range(30)]
    for u in range(3000):                 # the next item has nothing to do with either score: no weight leads
        blend_gains = weight_gains(rng.normal(size=30), rng.normal(size=30), np.zeros(30, bool), 10, tie.weights)
        tie.record(f"u{u}", items, blend_gains)
        tie.observe(f"u{u}", items[int(rng.integers(30))])
        tie.choose()
    assert tie.weight == 1.0


def test_only_the_users_next_item_event_judges_and_excluded_items_are_never_listed():
    b = BlendWeight(start=1.0, weights=(0.0, 1.0))
    g = weight_gains(np.array([3.0, 2.0, 1.0]), np.array([0.0, 0.0, 5.0]), np.array([True, False, False]), 1,
                     b.weights)
    assert set(g) == {1, 2}                       # item 0 is excluded from every list
    b.record("u", ["a", "b", "c"], g)
    b.observe("u", "c")
    b.observe("u", "b")                           # the list was judged by the first event: nothing more
    assert b.n_judged == 1 and list(b.judged[0]) == [0.0, 1.0]
    b.record("v", ["a", "b", "c"], g)
    b.observe("v", "zzz")                         # on no list: no information, not counted
    b.restart()
    assert b.n_judged == 1 and not b.judged and not b.pending


def test_the_lists_are_what_a_stable_sort_would_serve_ties_and_exclusions_included():
    """`weight_gains` cuts each list with argpartition; a plain stable sort per weight is the reference."""
    rng = np.random.default_rng(11)
    weights = (0.0, 0.25, 0.5, 1.0, 2.0)

    def reference(fb, z, excluded, k):
        scores = fb[None, :] + np.asarray(weights)[:, None] * z[None, :]
        scores = np.where(np.isfinite(scores) & ~excluded[None, :], scores, -np.inf)
        out = {}
        for w, row in enumerate(np.argsort(-scores, axis=1, kind="stable")[:, :k]):
            for pos, i in enumerate(row.tolist()):
                if np.isfinite(scores[w, i]):
                    out.setdefault(i, np.zeros(len(weights)))[w] = 1 / np.log2(pos + 2)
        return out

    batch = []
    for trial in range(1500):
        c = int(rng.integers(0, 40))
        fb = np.round(rng.normal(size=c), 0 if trial % 3 == 0 else 1)         # many ties
        tr = rng.normal(size=c)
        tr[rng.random(c) < (1.0 if trial % 5 == 0 else 0.3)] = np.nan       # unknown to the model
        excluded, k = rng.random(c) < 0.2, int(rng.integers(1, 12))
        z = standardised(tr)
        got, want = weight_gains(fb, z, excluded, k, weights), reference(fb, z, excluded, k)
        assert got.keys() == want.keys() and all(np.allclose(got[i], want[i]) for i in got), trial
        batch.append((fb, z, excluded, k, got))
    # the batched form (every user of a worker batch at once, rows padded): the same lists, user by user
    for kk in (1, 5, 11):
        group = [b for b in batch if b[3] == kk]
        together = batch_weight_gains([b[0] for b in group], [b[1] for b in group], [b[2] for b in group], kk, weights)
        assert len(together) == len(group) > 50
        for (fb, z, excluded, k, one), two in zip(group, together):
            assert one.keys() == two.keys() and all(np.array_equal(one[i], two[i]) for i in one)


# ---- the state in Redis: a restart resumes it, the API follows it ---------------------------------------------

def _model_pipeline(redis_client, prefix, reg, version, group="g"):
    from stream.core.pipeline import Pipeline
    from stream.core.scoring.blendstore import BlendKeeper, BlendStore
    from stream.core.scoring.transformer import BlendedScorer, OnnxScorer
    p = Pipeline(redis_client, prefix)
    keeper = BlendKeeper(p, BlendStore(redis_client, prefix, group), every_s=3600)
    p.set_scorer(BlendedScorer(OnnxScorer(reg.path(version))))
    return p, keeper


def test_the_learned_weight_survives_a_restart_and_the_api_follows_it(redis_client, tiny, tmp_path, caplog):
    """A pipeline judges its lists (a random transformer over the tiny model's items), saves; a pipeline
    started afresh on the same store and version resumes the same state (weight, judgements, moves); another
    version starts afresh; the API's follower serves the saved weight; a corrupted state is refused."""
    import uuid

    import orjson
    from conftest import register_model

    from schemas import Event
    from stream.core.pipeline import Pipeline
    from stream.core.scoring.blendstore import BlendFollower, BlendStore
    from stream.core.scoring.transformer import BlendedScorer, OnnxScorer
    prefix = f"rs:blend{uuid.uuid4().hex[:6]}:"
    reg, v1 = register_model(tmp_path, *tiny)
    p, keeper = _model_pipeline(redis_client, prefix, reg, v1)
    rng = np.random.default_rng(5)
    t0 = 1_700_000_000_000
    for step in range(40):                          # 40 users, 40 batches: each batch is every user's next event
        p.process_events([Event(event_id=f"e{step}-{u}", user_id=f"u{u}", type="click", ts=t0 + step * 60_000 + u,
                                item_id=f"i{int(rng.integers(1, 60))}") for u in range(40)])
    blend = p.blend
    assert blend.n_judged > 50 and blend.version.endswith(v1)
    blend.current = blend.weights.index(0.25)       # as if it had moved: the restart must keep what it learned
    blend.moves.append((blend.n_judged, 0.25))
    keeper.save()

    again, _ = _model_pipeline(redis_client, prefix, reg, v1)
    assert again.blend.state()["weight"] == 0.25 == again.base_scorer.weight
    a, b = blend.state(), again.blend.state()
    assert a.pop("judged").tolist() == b.pop("judged").tolist() and a == b

    other, _ = _model_pipeline(redis_client, prefix, reg, v1, group="another-deployment")
    assert other.blend.n_judged == 0 and other.base_scorer.weight == 1.0      # nothing saved for that group

    api = Pipeline(redis_client, prefix)
    api.learn_blend = False
    api.set_scorer(BlendedScorer(OnnxScorer(reg.path(v1))))
    assert api.base_scorer.weight == 1.0 and api.blend is None
    BlendFollower(api, BlendStore(redis_client, prefix, "g"))()
    assert api.base_scorer.weight == 0.25

    key = BlendStore(redis_client, prefix, "g").key(blend.version)
    st = orjson.loads(redis_client.hget(key, "state"))
    redis_client.hset(key, "state", orjson.dumps({**st, "weights": [0.0, 0.5, 1.0, 2.0, 4.0]}))  # another grid
    other_grid, _ = _model_pipeline(redis_client, prefix, reg, v1)            # refused, never raised
    assert other_grid.blend.n_judged == 0 and other_grid.base_scorer.weight == 1.0 and "weight grid" in caplog.text
    redis_client.hset(key, "state", orjson.dumps(st))
    redis_client.hset(key, "judged", b"\0" * 16)
    broken, _ = _model_pipeline(redis_client, prefix, reg, v1)
    assert broken.blend.n_judged == 0 and broken.base_scorer.weight == 1.0
    assert "rejected" in caplog.text and "checksum" in caplog.text
