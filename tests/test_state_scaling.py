"""State that scales: the per-user script touches only the user's slot, the shared statistics are added per
batch, once per input offset (crash, redelivery, a second writer), and the same pipeline gives the same
state and the same recommendations on a single redis-server and on a real 3-master Redis Cluster."""
import pytest

from schemas import validate_event, validate_item
from stream.core.pipeline import Pipeline
from stream.core.stages import Ingested
from stream.core.storage.catalog import Catalog
from stream.core.storage.store import connect, shared_differences, shared_dump, user_profile_dump
from stream.core.validate import InMessage
from stream.data.synth import SynthConfig, SynthShop

pytestmark = pytest.mark.integration


def _shop(n=3000, seed=5):
    sh = SynthShop(SynthConfig(n_users=150, n_items=600, n_events=n, seed=seed))
    return sh, [validate_event(e) for e in sh.events()]


def _origins(events, first=0, partition=0):
    return [InMessage(b"", None, "events", partition, first + n) for n in range(len(events))]


def _state(client, prefix, events):
    users = sorted({e.user_id for e in events})
    return {u: user_profile_dump(client, prefix, u) for u in users}, shared_dump(client, prefix)


def _same(got, want) -> bool:
    """Profiles identical; shared statistics identical but for trending's float rounding."""
    return got[0] == want[0] and not shared_differences(got[1], want[1])


def _run(client, prefix, events, batches):
    """Apply `events` as the given (start, end) message batches (offsets = positions), sharing each batch."""
    p = Pipeline(client, prefix)
    for a, b in batches:
        p.apply(Ingested(events[a:b], _origins(events[a:b], a)))
    return p


def test_a_batch_redelivered_after_a_crash_before_its_shared_writes_counts_once(redis_client):
    _, events = _shop()
    ref = "rs:st-ref:"
    _run(redis_client, ref, events, [(0, 1000), (1000, 2000), (2000, 3000)])
    want = _state(redis_client, ref, events)

    got = "rs:st-crash:"
    p = Pipeline(redis_client, got)
    p.apply(Ingested(events[:1000], _origins(events[:1000])))
    p.apply(Ingested(events[1000:1600], _origins(events[1000:1600], 1000)), share=False)   # killed here
    # redelivered from the committed offset, in other batch boundaries; a second writer repeats one
    p.apply(Ingested(events[1000:2500], _origins(events[1000:2500], 1000)))
    p.apply(Ingested(events[1000:2500], _origins(events[1000:2500], 1000)))
    p.apply(Ingested(events[2500:], _origins(events[2500:], 2500)))
    assert _same(_state(redis_client, got, events), want)


def test_a_redelivery_that_overlaps_a_partly_written_batch_adds_only_the_new_offsets(redis_client):
    """The guard of a shard lies inside a redelivered batch's range: the script refuses, the caller drops
    the increments at or below the guard and sends the rest (the refusal path)."""
    _, events = _shop(2000, seed=7)
    ref = "rs:st-ref2:"
    _run(redis_client, ref, events, [(0, 2000)])
    want = _state(redis_client, ref, events)
    got = "rs:st-part:"
    _run(redis_client, got, events, [(0, 700), (0, 1300), (300, 2000)])
    assert _same(_state(redis_client, got, events), want)


def test_the_outbox_is_emptied_once_a_later_batch_starts_past_it(redis_client):
    from stream.core.storage.store import Keys
    from stream.core.storage.update import decode
    _, events = _shop(1200, seed=3)
    prefix = "rs:st-out:"
    p = Pipeline(redis_client, prefix)
    p.apply(Ingested(events[:600], _origins(events[:600])))
    users = {e.user_id for e in events[:600]}
    def outbox(u: str) -> dict:                      # the profile's outbox, as stored
        return decode(redis_client.hget(Keys(prefix).user(u), "b")).out
    held = sum(len(outbox(u)) for u in users)
    assert held > 0                                   # parts kept until their offsets are committed
    p.apply(Ingested(events[600:], _origins(events[600:], 600)))
    again = {e.user_id for e in events[600:]} & users
    assert again and all(int(f) >= 600 for u in again for f in outbox(u))


def test_the_same_events_give_the_same_state_and_recommendations_on_a_cluster(redis_client, cluster_url):
    sh, events = _shop(2500, seed=11)
    items = [validate_item(i) for i in sh.items]
    cluster = connect(cluster_url)
    out = {}
    for name, client in (("redis", redis_client), ("cluster", cluster)):
        prefix = f"rs:st-{name}:"
        Catalog(client, prefix).upsert(items)
        p = Pipeline(client, prefix)
        recs = []
        for a in range(0, len(events), 500):
            res = p.recommend(p.apply(Ingested(events[a:a + 500], _origins(events[a:a + 500], a))))
            recs += [(r.user_id, [i.item_id for i in r.items]) for r in res.recommendations]
        profiles, shared = _state(client, prefix, events)
        out[name] = (profiles, shared, recs, p.ask(sorted({e.user_id for e in events})[:20], events[-1].ts))
    assert out["cluster"][0] == out["redis"][0]
    assert not shared_differences(out["cluster"][1], out["redis"][1]) and out["redis"][1]
    assert out["cluster"][2] == out["redis"][2] and len(out["redis"][2]) > 100
    assert out["cluster"][3] == out["redis"][3]


def test_candidates_gathered_ahead_give_the_same_lists_and_a_model_swap_gathers_again(redis_client, tiny, tmp_path):
    """The worker's consuming thread gathers a batch's candidates right after its writes (`Pipeline.prepare`),
    with their item statistics, and runs the observers; `recommend` then uses them: the lists (ordered by a
    learned ranker) are those of doing it all in `recommend` (the backtest's way), and each observer sees
    each batch once. Candidates gathered before a model swap are not used after it: `recommend` gathers again."""
    from conftest import register_model

    from stream.core.ranking.ranker import OnlineRanker, RankerConfig
    from stream.core.scoring.transformer import BlendedScorer, OnnxScorer
    sh, events = _shop(1500, seed=13)
    items = [validate_item(i) for i in sh.items]
    lists, seen = {}, {}
    for ahead in (False, True):
        prefix = f"rs:ahead-{ahead}:"
        Catalog(redis_client, prefix).upsert(items)
        p = Pipeline(redis_client, prefix)
        p.attach_ranker(OnlineRanker(RankerConfig.for_spec("lr:learned", min_examples=10)))
        seen[ahead] = []
        p.observers.append(type("Counting", (), {"observe": lambda self, snaps, s=seen[ahead]: s.append(len(snaps))})())
        lists[ahead] = []
        for a in range(0, len(events), 300):
            applied = p.apply(Ingested(events[a:a + 300], _origins(events[a:a + 300], a)))
            if ahead:
                applied = p.prepare(applied)
                assert applied.prepared[0] is p.scorer and "candidates" in applied.timings and applied.observed == 1
                assert applied.prepared[2].item_stats                  # read ahead: the ranker's features need them
            res = p.recommend(applied)
            lists[ahead] += [(r.user_id, [i.item_id for i in r.items]) for r in res.recommendations]
    assert lists[True] == lists[False] and len(lists[True]) > 100
    assert seen[True] == seen[False] and len(seen[True]) == 5
    assert p.ranker.active, p.ranker.n_learned                 # the learned order ranked the later batches

    # an observer that fails ahead is called again by `recommend`, from that one on: none sees a batch twice
    calls: list = []

    class Observer:
        def __init__(self, name: str, fail_first: bool = False):
            self.name, self.fail_first = name, fail_first

        def observe(self, snaps) -> None:
            calls.append(self.name)
            if self.fail_first and calls.count(self.name) == 1:
                raise ConnectionError("redis away")
    p.observers[:] = [Observer("first"), Observer("flaky", fail_first=True)]
    more = events[-80:-40]
    applied = p.prepare(p.apply(Ingested(more, _origins(more, 4000))))
    assert applied.observed == 1 and applied.prepared is not None       # the candidates were still read ahead
    p.recommend(applied)
    assert calls == ["first", "flaky", "flaky"]

    reg, version = register_model(tmp_path, *tiny)
    gathered = []
    real = p._candidates
    p._candidates = lambda *a, **kw: gathered.append(1) or real(*a, **kw)
    more = events[-40:]
    applied = p.prepare(p.apply(Ingested(more, _origins(more, 5000))))
    p.set_scorer(BlendedScorer(OnnxScorer(reg.path(version))))              # a swap between the two threads
    res = p.recommend(applied)
    assert len(gathered) == 2 and res.recommendations
    assert all(version in r.model_versions["scorer"] for r in res.recommendations)


def test_the_workers_item_statistics_cache_reads_only_what_is_stale_and_stays_exact_when_fresh(redis_client):
    """The worker's ItemStatsCache: fresh reads equal `item_stats`; within its age a changed count is not
    read again (only new items are); past it, or in a new trend epoch, everything is read afresh."""
    import time

    from stream.core.candidates.gather import ItemStatsCache, item_stats
    from stream.core.storage.store import Keys
    keys, hl = Keys("rs:isc:"), 3600.0
    redis_client.delete(keys.pop(), *redis_client.keys("rs:isc:*"))
    now = 1_700_000_000_000
    epoch = int(now // (64 * hl * 1000))
    redis_client.zadd(keys.pop(), {"a": 3.0, "b": 1.0})
    redis_client.zadd(keys.trend(epoch), {"a": 2.0})
    cache = ItemStatsCache(max_age_s=0.3)
    first = cache.read(redis_client, keys, hl, ["a", "b", "c"], now)
    assert first == item_stats(redis_client, keys, hl, ["a", "b", "c"], now)
    assert first["a"][0] == 3.0 and first["c"] == (0.0, 0.0, 0.0, 0.0)
    redis_client.zadd(keys.pop(), {"a": 9.0, "d": 4.0})
    later = now + 60_000                                   # the trend decays with the batch's time, cached or not
    got = cache.read(redis_client, keys, hl, ["a", "d"], later)
    assert got["a"] == (3.0, item_stats(redis_client, keys, hl, ["a"], later)["a"][1], 0.0, 0.0)   # not read yet
    assert got["d"] == (4.0, 0.0, 0.0, 0.0) and got["a"][1] < first["a"][1]                    # a new item is read
    time.sleep(0.35)
    assert cache.read(redis_client, keys, hl, ["a", "d"], later) == item_stats(redis_client, keys, hl, ["a", "d"], later)
    redis_client.zadd(keys.pop(), {"a": 12.0})
    next_epoch = (epoch + 1) * 64 * hl * 1000 + 1          # a new epoch's key: nothing of the old one is kept
    assert cache.read(redis_client, keys, hl, ["a"], next_epoch) == {"a": (12.0, 0.0, 0.0, 0.0)}


def test_a_backtests_item_statistics_cache_stays_exact_as_its_pipeline_writes(redis_client):
    """`keep_item_stats(None)`: every read equals reading afresh (`item_stats`) as the pipeline's own shared
    writes move popularity, trend and the ratings' totals; only items nobody wrote are served from memory."""
    from dataclasses import replace

    from stream.core.candidates.gather import item_stats
    prefix = "rs:isx:"
    redis_client.delete(*redis_client.keys(prefix + "*") or ["-"])
    sh, events = _shop(1200, seed=8)
    events = [replace(e, context={**(e.context or {}), "rating": float(1 + n % 5)}) for n, e in enumerate(events)]
    p = Pipeline(redis_client, prefix)
    p.keep_item_stats(None)
    keys, hl = p.profiles.keys, p.profiles.cfg.trend_half_life_s
    items = sorted({e.item_id for e in events if e.item_id})
    reads = []
    for a in range(0, len(events), 200):
        p.apply(Ingested(events[a:a + 200], _origins(events[a:a + 200], a)))
        now = events[min(a + 200, len(events)) - 1].ts
        got = p.stats_cache.read(redis_client, keys, hl, items, now)
        assert got == item_stats(redis_client, keys, hl, items, now)
        reads.append(got)
    assert reads[-1] != reads[0] and any(v[2] != 0.0 for v in reads[-1].values())   # counts and ratings moved
    redis_client.zincrby(keys.pop(), 5.0, items[0])           # a write not made through the pipeline ...
    cached = p.stats_cache.read(redis_client, keys, hl, items[:1], now)[items[0]]
    assert cached[0] == reads[-1][items[0]][0]                # ... is not seen: the entry came from memory
