"""The candidate-source contract: every source (co-visitation, co-occurrence, the user's history, trending,
category, content, the transformer's own top items, the item linear model's, popular at the user's stage)
passes the same checks on a real redis-server: a fresh store proposes nothing; the same state gives the same
candidates; no users, no candidates; a replayed batch changes nothing; scores are in (0, 1] and land in the
source's own column only."""
import random
import uuid

import pytest
from conftest import register_model

from schemas import Event, validate_item
from stream.core.candidates import (
    SOURCE_NAMES,
    BatchContext,
    CategoryPopular,
    CoOccurrence,
    CoVisitation,
    StagePopular,
    Trending,
    UserHistory,
)
from stream.core.pipeline import Pipeline

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def _items():
    return [validate_item({"item_id": f"i{n}", "title": f"{'running shoe' if n % 2 else 'kitchen knife'} model {n}",
                           "category": ["shoes" if n % 2 else "kitchen"], "price": 10.0 + n}) for n in range(1, 41)]


def _events(n=400, seed=3):
    rng = random.Random(seed)
    return [Event(event_id=f"e{k}", user_id=f"u{rng.randint(0, 15)}", type=rng.choice(["view", "click", "add_to_cart"]),
                  ts=T0 + k * 5000, item_id=f"i{rng.randint(1, 40)}") for k in range(n)]


def _content(redis_client, prefix, encoder_dir):
    from stream.core.content import ContentEncoder, ContentSimilar, ContentStore
    store = ContentStore(redis_client, prefix, ContentEncoder(encoder_dir[0]))
    store.upsert(_items())
    return ContentSimilar(store)


def _model(tiny, tmp_path_factory):
    from stream.core.scoring.transformer import ModelRetrieval, OnnxScorer
    reg, v = register_model(tmp_path_factory.mktemp("reg"), *tiny)
    return ModelRetrieval(OnnxScorer(reg.path(v)), n=10)


def _linear(tmp_path_factory):
    from models.data import Interaction, Vocab
    from models.linear import fit_linear
    from stream.core.scoring.linear import ItemLinear, LinearRetrieval
    vocab = Vocab([f"i{k}" for k in range(1, 41)])
    lin = fit_linear([Interaction(e.user_id, e.item_id, e.ts) for e in _events()], vocab, k=10)
    path = lin.save(tmp_path_factory.mktemp("lin") / "linear.npz")
    return LinearRetrieval(ItemLinear(path, vocab.index), n=10)


SOURCES = {
    "covisit": lambda ctx: CoVisitation(ctx["prefix"]),
    "recent": lambda ctx: UserHistory(),
    "trending": lambda ctx: Trending(ctx["prefix"], ctx["half_life_s"]),
    "category": lambda ctx: CategoryPopular(ctx["prefix"]),
    "content": lambda ctx: _content(ctx["client"], ctx["prefix"], ctx["encoder_dir"]),
    "model": lambda ctx: _model(ctx["tiny"], ctx["tmp"]),
    "cooccur": lambda ctx: CoOccurrence(ctx["prefix"]),
    "linear": lambda ctx: _linear(ctx["tmp"]),
    "stage": lambda ctx: StagePopular(ctx["prefix"]),
}


@pytest.fixture(params=sorted(SOURCES))
def setup(request, redis_client, encoder_dir, tiny, tmp_path_factory):
    prefix = f"rs:c{uuid.uuid4().hex[:8]}:"
    pipeline = Pipeline(redis_client, prefix)
    pipeline.catalog.upsert(_items())
    ctx = {"prefix": prefix, "client": redis_client, "half_life_s": pipeline.profiles.cfg.trend_half_life_s, "encoder_dir": encoder_dir, "tiny": tiny,
           "tmp": tmp_path_factory}
    yield request.param, (lambda: SOURCES[request.param](ctx)), pipeline
    for k in redis_client.scan_iter(match=prefix + "*", count=10_000):
        redis_client.unlink(k)


def propose(source, client, snaps, now_ts):
    ctx = BatchContext(snaps, now_ts=now_ts)
    pipe = client.pipeline(transaction=False)
    collect = source.plan(ctx, pipe)
    collect(pipe.execute() if pipe.command_stack else [])
    return {u: dict(c) for u, c in ctx.cands.items() if c}


def seeded(pipeline):
    """The pipeline after the test events: (their users, the time of the last one)."""
    evs = _events()
    pipeline.process_events(evs)
    return sorted({e.user_id for e in evs}), evs[-1].ts


def test_fresh_store_proposes_nothing(setup, redis_client):
    name, make, pipeline = setup
    snaps = pipeline.profiles.read(["nobody", "nobody2"])
    assert propose(make(), redis_client, snaps, T0) == {}


def test_no_users_no_candidates(setup, redis_client):
    name, make, pipeline = setup
    seeded(pipeline)
    assert propose(make(), redis_client, {}, T0) == {}


def test_same_state_same_candidates_from_fresh_instances(setup, redis_client):
    name, make, pipeline = setup
    users, now = seeded(pipeline)
    first = propose(make(), redis_client, pipeline.profiles.read(users), now)
    assert first, f"{name} proposed nothing for {len(users)} users with histories"
    assert propose(make(), redis_client, pipeline.profiles.read(users), now) == first


def test_replayed_batch_changes_nothing(setup, redis_client):
    name, make, pipeline = setup
    users, now = seeded(pipeline)
    before = propose(make(), redis_client, pipeline.profiles.read(users), now)
    replay = pipeline.process_events(_events()[-150:])        # at-least-once: the tail delivered again
    assert replay.applied == 0
    assert propose(make(), redis_client, pipeline.profiles.read(users), now) == before


def test_scores_in_range_and_in_own_column(setup, redis_client):
    name, make, pipeline = setup
    users, now = seeded(pipeline)
    src = make()
    col = SOURCE_NAMES.index(src.name)
    got = propose(src, redis_client, pipeline.profiles.read(users), now)
    for cands in got.values():
        for row in cands.values():
            assert 0.0 < row[col] <= 1.0 + 1e-9
            assert all(v == 0.0 for j, v in enumerate(row) if j != col)


def test_stage_popularity_counts_what_users_touch_at_each_stage_of_their_history(redis_client):
    from stream.core.storage.store import Keys
    prefix = f"rs:c{uuid.uuid4().hex[:8]}:"
    pipeline = Pipeline(redis_client, prefix)
    pipeline.catalog.upsert(_items())
    ev = [("a", "view", "i1"), ("a", "view", "i2"), ("a", "view", "i3"), ("a", "view", "i4"),   # stages 0 1 1 2
          ("b", "click", "i1"), ("b", "view", "i1"),     # stage 0 (weight 2), then the same item again: still 1
          ("c", "view", "i5"), ("c", "view", "i1")]      # stages 0 1
    pipeline.process_events([Event(event_id=f"e{k}", user_id=u, type=t, ts=T0 + k * 1000, item_id=i)
                             for k, (u, t, i) in enumerate(ev)])
    keys = Keys(prefix)

    def stage(n):
        return {m.decode(): s for m, s in redis_client.zrange(keys.stage_pop(n), 0, -1, withscores=True)}
    assert stage(0) == {"i1": 3.0, "i5": 1.0}
    assert stage(1) == {"i2": 1.0, "i3": 1.0, "i1": 2.0}
    assert stage(2) == {"i4": 1.0}
    # a new user is offered stage 0's items, best first; a user with one item, stage 1's
    got = propose(StagePopular(prefix), redis_client, pipeline.profiles.read(["new", "c"]), T0 + 10_000)
    col = SOURCE_NAMES.index("stage")
    assert {i: r[col] for i, r in got["new"].items()} == {"i1": 1.0, "i5": 1 / 3}
    assert max(got["c"].items(), key=lambda kv: kv[1][col])[0] == "i1"
    for k in redis_client.scan_iter(match=prefix + "*", count=10_000):
        redis_client.unlink(k)


def test_history_source_proposes_the_whole_kept_history_but_nothing_excluded():
    """The user's own items as far back as the profile keeps them (shoppers return to items further back
    than the newest few), newest scoring highest; an item the user may not be shown is not proposed."""
    from stream.core.storage.profile import Snapshot
    recent = [f"i{k}" for k in range(30)]                 # newest first
    snap = Snapshot("u", recent=recent, affinity={}, bought=[], last_ts=T0)
    ctx = BatchContext({"u": snap}, now_ts=T0, exclude={"u": {"i3"}})
    UserHistory().plan(ctx, None)([])
    col = SOURCE_NAMES.index("recent")
    got = {item: row[col] for item, row in ctx.cands["u"].items()}
    assert set(got) == set(recent) - {"i3"}
    assert got["i0"] == 1.0 and got["i29"] == 1.0 / 30 and got["i1"] > got["i2"]
