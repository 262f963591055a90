"""Differential: the per-user update in the worker (`stream.core.storage.update.apply_user`, through the
profile cache) against the former per-user Lua script (`lua/apply_events.lua`) on a real redis-server,
call by call, on the same arguments: the same replies, and the same profiles afterwards."""
import json
import random
import uuid
from collections import Counter

import pytest

from schemas import Event, validate_event
from stream.core.storage.profile import ProfileConfig, ProfileStore
from stream.core.storage.store import Script, user_profile_dump
from stream.core.validate import InMessage
from stream.data.synth import SynthConfig, SynthShop

pytestmark = pytest.mark.integration


def _norm(x):
    if isinstance(x, bytes):
        return x.decode()
    if isinstance(x, list):
        return [_norm(y) for y in x]
    return str(x) if isinstance(x, (int, float)) else x


def _part(raw: str) -> tuple:
    p = json.loads(raw)
    v, s = p.get("v"), p.get("s")
    return (v if isinstance(v, list) else [], s if isinstance(s, list) else [], p.get("h"))


def _same_reply(lua: list, py: list) -> None:
    lua, py = _norm(lua), _norm(py)
    assert lua[0] == py[0]                               # flags
    assert lua[1] == py[1]                               # recent items
    assert dict(zip(lua[2][::2], lua[2][1::2])) == dict(zip(py[2][::2], py[2][1::2]))   # affinities
    assert lua[3] == py[3]                               # bought
    assert float(lua[4]) == float(py[4])                 # last_ts
    assert [float(lua[5][0]), *lua[5][1:]] == [float(py[5][0]), *py[5][1:]]
    assert lua[6][::2] == py[6][::2] and list(map(_part, lua[6][1::2])) == list(map(_part, py[6][1::2]))


def _former_keys(u: str) -> list[str]:
    """The script's KEYS for the user whose profile key is `u`: the per-user keys before the profile cache."""
    return [u + s for s in ("", ":seq", ":aff", ":bought", ":seen", ":out")]


def _script_dump(client, keys: list) -> dict:
    """What the script left in the former per-user keys (the layout before the profile cache)."""
    k, seq, aff, bought, seen, _ = keys
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(k)
    pipe.lrange(seq, 0, -1)
    pipe.hgetall(aff)
    pipe.zrange(bought, 0, -1, withscores=True)
    pipe.zrange(seen, 0, -1, withscores=True)
    h, seq, aff, bought, seen = pipe.execute()
    return {"profile": h, "seq": seq, "aff": aff, "bought": bought, "seen": seen}


def _events(seed: int) -> list[Event]:
    """The synthetic shop's events, then hostile shapes: duplicates, events out of time order, bursts
    past the bot rule, funnels on one item, prices, queries, many categories and brands."""
    rnd = random.Random(seed)
    shop = SynthShop(SynthConfig(n_users=40, n_items=300, n_events=3000, seed=seed))
    evs = [e for e in map(validate_event, shop.events()) if isinstance(e, Event)]
    out = []
    for e in evs:
        out.append(e)
        r = rnd.random()
        if r < 0.05:
            out.append(e)                                            # a duplicate
        elif r < 0.08:
            out.append(Event(event_id=e.event_id + "-late", user_id=e.user_id, type="purchase", item_id=e.item_id,
                             ts=e.ts - rnd.randrange(1, 3_600_000), price=rnd.choice([None, 9.99, 120.0])))
        elif r < 0.10:
            for k in range(rnd.randrange(5, 60)):                    # a burst within a minute
                out.append(Event(event_id=f"{e.event_id}-b{k}", user_id=e.user_id, type="view",
                                 item_id=f"x{rnd.randrange(400)}", ts=e.ts + k * 500,
                                 context={"category": f"k{rnd.randrange(90)}", "brand": f"b{rnd.randrange(90)}"}))
        elif r < 0.12:
            out.append(Event(event_id=e.event_id + "-q", user_id=e.user_id, type="search", item_id=None,
                             query="red shoes", ts=e.ts + 1))
    return out


@pytest.mark.parametrize("seed,seen_cap,batch", [(1, 2000, 50), (2, 40, 7), (3, 15, 200)])
def test_the_update_in_the_worker_matches_the_former_script_call_by_call(redis_client, monkeypatch, seed,
                                                                          seen_cap, batch):
    prefix, ref = f"rs:t{uuid.uuid4().hex[:8]}:", f"rs:r{uuid.uuid4().hex[:8]}:"
    store = ProfileStore(redis_client, prefix, ProfileConfig(seen_cap=seen_cap, max_affinities=24, bot_per_min=20))
    script = Script(redis_client, "apply_events")
    apply, flags, users = store.cache.apply, Counter(), {}

    def both(calls, cap):
        theirs = script.execute([(_former_keys(keys[0].replace(prefix, ref, 1)), args) for keys, args in calls])
        ours, states = apply(calls, cap)
        for lua, py in zip(theirs, ours):
            _same_reply(lua, py)
            flags.update(py[0])
        return ours, states
    monkeypatch.setattr(store.cache, "apply", both)
    evs = _events(seed)
    for i in range(0, len(evs), batch):
        part = evs[i:i + batch]
        store.apply(part, [InMessage(b"", None, "t", 0, i + k) for k in range(len(part))])
        users.update((e.user_id, _former_keys(store.keys.user(e.user_id).replace(prefix, ref, 1))) for e in part)
    # every path was taken: duplicates, bot-like bursts, prices, a full affinity table, a full seen set
    assert len(users) >= 30 and flags["0"] and flags["2"] and flags["1"]
    dumps = {uid: user_profile_dump(redis_client, prefix, uid) for uid in users}
    assert any(b"plog" in d["profile"] for d in dumps.values()) and any(len(d["aff"]) == 24 for d in dumps.values())
    assert any(len(d["seen"]) == seen_cap for d in dumps.values()) == (seen_cap < 100)
    for uid, keys in users.items():
        assert dumps[uid] == _script_dump(redis_client, keys), uid
