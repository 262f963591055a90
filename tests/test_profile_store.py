"""The profile stage on a real redis-server: a replayed batch changes nothing, and the Lua script
survives the server forgetting it (SCRIPT FLUSH, as after a restart)."""
import uuid

import pytest

from schemas import Event
from stream.core.storage.profile import ProfileStore
from stream.core.storage.store import user_profile_dump

pytestmark = pytest.mark.integration


def _events(uid: str, n: int, t0: int = 1_700_000_000_000) -> list[Event]:
    return [Event(event_id=f"{uid}-{i}", user_id=uid, type=("view", "click", "add_to_cart")[i % 3],
                  ts=t0 + i * 30_000, item_id=f"i{i % 5}", context={"category": f"c{i % 2}"}) for i in range(n)]


def test_replay_is_a_no_op_and_a_flushed_script_is_reloaded(redis_client):
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    store = ProfileStore(redis_client, prefix)
    first = store.apply(_events("u1", 6))
    assert first["u1"].applied == 6 and first["u1"].recent[:2] == ["i0", "i4"]
    before = user_profile_dump(redis_client, prefix, "u1")

    redis_client.script_flush()                  # the server forgets every script
    again = store.apply(_events("u1", 6))        # the same events again, after the flush
    assert again["u1"].applied == 0
    assert user_profile_dump(redis_client, prefix, "u1") == before

    more = store.apply(_events("u1", 8)[6:])     # new events still apply
    assert more["u1"].applied == 2 and more["u1"].recent[0] == "i2"


def test_touch_times_follow_the_recent_items(redis_client):
    """Each recent item carries when the user last touched it: a new item pushes its time, the newest item
    touched again (a view -> click -> cart funnel) moves its time forward, and a later `read` agrees."""
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    store = ProfileStore(redis_client, prefix)
    t0 = 1_700_000_000_000

    def ev(i: int, item: str, kind: str = "view") -> Event:
        return Event(event_id=f"e{i}", user_id="u1", type=kind, ts=t0 + i * 60_000, item_id=item)

    snap = store.apply([ev(0, "a"), ev(1, "b"), ev(2, "b", "click")])["u1"]
    assert snap.recent == ["b", "a"] and snap.recent_ts == [t0 + 120_000, t0]
    snap = store.apply([ev(3, "a"), ev(4, "c"), ev(5, "c", "add_to_cart")])["u1"]
    assert snap.recent == ["c", "a", "b", "a"]
    assert snap.recent_ts == [t0 + 300_000, t0 + 180_000, t0 + 120_000, t0]
    assert store.read(["u1"])["u1"].recent_ts == snap.recent_ts


def test_two_workers_holding_the_same_user_never_lose_an_update(redis_client):
    """Each worker computes a user's update on its own copy of the profile; a copy that another worker's
    write made stale (a rebalance moved the user and back) is refused by the version check, read again and
    computed again: the profile ends as one worker applying every batch would leave it."""
    prefix, ref = f"rs:t{uuid.uuid4().hex[:8]}:", f"rs:r{uuid.uuid4().hex[:8]}:"
    a, b, one = ProfileStore(redis_client, prefix), ProfileStore(redis_client, prefix), ProfileStore(redis_client, ref)
    evs = _events("u1", 12)
    for i in range(0, 12, 3):
        got = (a if i % 6 == 0 else b).apply(evs[i:i + 3])["u1"]
        assert got.applied == 3 and one.apply(evs[i:i + 3])["u1"].recent == got.recent
    assert a.apply(evs[:6])["u1"].applied == 0                    # its stale copy does not re-apply old events
    assert user_profile_dump(redis_client, prefix, "u1") == user_profile_dump(redis_client, ref, "u1")


def test_profiles_that_keep_changing_under_a_worker_are_a_transient_failure():
    """After its attempts a worker whose writes keep meeting newer versions raises a failure the worker
    retries with backoff (StoreUnavailable), never one that dead-letters the batch's events."""
    from stream.core.storage.cache import VersionConflicts
    from stream.errors import StoreUnavailable, translate_redis
    assert isinstance(translate_redis(VersionConflicts("5 profiles"), "apply profiles"), StoreUnavailable)


def test_the_profile_cache_is_bounded_by_the_ids_it_holds(redis_client):
    """A user at the seen cap holds thousands of event ids in the worker: the cache evicts the least recently
    used users once the ids it holds pass `cache_ids`, and an evicted user is read back from Redis with the
    same result as a cache that kept everyone."""
    from stream.core.storage.profile import ProfileConfig
    small_p, big_p = (f"rs:t{uuid.uuid4().hex[:8]}:" for _ in range(2))
    small = ProfileStore(redis_client, small_p, ProfileConfig(seen_cap=40, cache_ids=100))
    big = ProfileStore(redis_client, big_p, ProfileConfig(seen_cap=40))
    users = [f"u{k}" for k in range(6)]
    for rnd in range(4):                      # each round: 15 new events for every user (batches of two users)
        for a in range(0, len(users), 2):
            batch = [ev for u in users[a:a + 2] for ev in _events(u, 15 * (rnd + 1))[15 * rnd:]]
            got_small, got_big = small.apply(batch), big.apply(batch)
            assert {u: (s.applied, s.recent) for u, s in got_small.items()} == \
                   {u: (s.applied, s.recent) for u, s in got_big.items()}
            held = small.cache.held
            assert small.cache.ids == sum(len(st.seen) for st, _, _ in held.values()) <= 100
    assert len(big.cache.held) == 6 and big.cache.ids == 6 * 40       # nothing evicted there: 240 ids
    assert 0 < len(small.cache.held) < 6                                # here some users were read back
    for u in users:
        assert user_profile_dump(redis_client, small_p, u) == user_profile_dump(redis_client, big_p, u)


def test_a_crawler_touching_a_new_category_and_brand_every_time_keeps_at_most_the_affinity_cap(redis_client):
    """Each event of a catalogue crawler brings two new affinity fields: the profile still keeps at most
    `max_affinities` (it had dropped only one field an event, so the table grew by one an event)."""
    from stream.core.storage.profile import ProfileConfig
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    store = ProfileStore(redis_client, prefix, ProfileConfig(max_affinities=10, bot_per_min=1000))
    events = [Event(event_id=f"e{i}", user_id="crawler", type="view", ts=1_700_000_000_000 + i * 1000,
                    item_id=f"i{i}", context={"category": f"c{i}", "brand": f"b{i}"}) for i in range(60)]
    for a in range(0, 60, 7):
        snap = store.apply(events[a:a + 7])["crawler"]
        assert len(snap.affinity) <= 10
    assert set(snap.affinity) >= {"c:c59", "b:b59"}        # the newest fields are the strongest, so kept


def test_the_snapshot_of_an_update_equals_a_read_of_what_it_stored(redis_client):
    """`apply`'s snapshots read the affinities from the worker's numbers (`UserState.affn`), `read` parses
    the stored texts: the same values and touch times to the last bit, with the affinity table at its cap."""
    from stream.core.storage.profile import ProfileConfig
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    store = ProfileStore(redis_client, prefix, ProfileConfig(max_affinities=12))
    events = [Event(event_id=f"e{i}", user_id=f"u{i % 3}", type=("view", "click", "purchase")[i % 3],
                    ts=1_700_000_000_000 + i * 7_777_777, item_id=f"i{i % 17}",
                    context={"category": f"c{i % 9}", "brand": f"b{(i * 5) % 11}"}) for i in range(240)]
    for a in range(0, 240, 20):
        got = store.apply(events[a:a + 20])
        again = store.read(sorted(got))
        for uid, snap in got.items():
            assert snap.affinity == again[uid].affinity and snap.aff_ts == again[uid].aff_ts
    assert len(snap.affinity) == 12


def test_explicit_ratings_are_counted_once_per_item_and_read_as_a_shrunk_mean(redis_client):
    """`context.rating` (a rating log's stars) feeds each item's rating sum and count, once per event: a
    batch whose profile writes landed before its shared writes (a crash between them) is redelivered, its
    shared parts come back from the outbox with their ratings, and a third delivery adds nothing. A rating
    that is not a finite number is not counted. `item_stats` reads the item's mean against all items'."""
    from stream.core.candidates.gather import RATING_PRIOR, item_stats
    from stream.core.validate import InMessage
    prefix = f"rs:t{uuid.uuid4().hex[:8]}:"
    store = ProfileStore(redis_client, prefix)
    t0 = 1_700_000_000_000
    rated = [("u1", "m1", 5), ("u2", "m1", 4), ("u1", "m2", 1), ("u2", "m2", "5"), ("u3", "m2", True),
             ("u3", "m3", None)]
    events = [Event(event_id=f"e{n}", user_id=u, item_id=i, type="view", ts=t0 + n * 1000,
                    context={"rating": r} if r is not None else None) for n, (u, i, r) in enumerate(rated)]
    origins = [InMessage(b"", None, "events", 0, 10 + n) for n in range(len(events))]
    store.apply(events, origins, share=False)            # the profiles written, the shared writes lost
    rsum, rn = store.keys.rating()
    assert redis_client.zcard(rsum) == 0
    for _ in range(2):                                   # redelivered, then once more: counted once
        store.apply(events, origins)
        assert redis_client.zscore(rsum, "m1") == 9.0 and redis_client.zscore(rn, "m1") == 2.0
        assert redis_client.zscore(rsum, "m2") == 1.0 and redis_client.zscore(rn, "m2") == 1.0
        assert redis_client.zscore(rn, "") == 3.0 and redis_client.zscore(rn, "m3") is None
    stats = item_stats(redis_client, store.keys, 3600.0, ["m1", "m2", "m3"], t0 + 10_000)
    mean = 10.0 / 3
    assert stats["m1"][2:] == pytest.approx(((9.0 - 2 * mean) / (2 + RATING_PRIOR), 2.0))
    assert stats["m2"][2] < 0 < stats["m1"][2] and stats["m3"][2:] == (0.0, 0.0)
