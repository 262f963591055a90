"""The shared statistics (co-visitation, co-occurrence, trending, popularity, popularity per user stage, the
items' explicit ratings), added up per batch.

The per-user update (`update.apply_user`, computed in the worker, written to the user's keys only) gives,
for each applied, not bot-like event with an item, the event's *shared part* (the items it follows, the
items it co-occurs with). Here a batch's parts become increments, are summed per distinct (key, member)
and written by `lua/shared_add.lua`, pipelined: one round-trip per batch instead of about ten ZINCRBY per
event. On Redis Cluster a call carries one shard (all its keys under one hash tag); on a single Redis one call
carries up to about 2,000 increments of any shards (fewer calls: a 15-event batch's shared writes took
1.28 ms in 40-odd calls, 0.97 ms in one).

Exactly once, across crashes: each shard keeps a guard (input partition -> the newest offset whose
increments it holds), written in the same script call as the increments. A worker killed after the
profile writes and before (or during) the shared writes gets the batch again; the update sees its events
as applied and hands back their shared parts from the profile's outbox (offset -> part, kept until a
later batch of the user starts past it), and each shard adds only what is newer than its guard. This is
Kafka Streams' and quix-streams' choice (state tied to the input offsets it covers), per shard instead of
per store, because a Redis Cluster has no transaction across slots. Events without an input offset (a
backtest, a replay in process) are added unguarded.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import msgspec
import orjson
import redis

from stream.core.storage.store import Keys, Script, shard_of_key


@dataclass(frozen=True, slots=True)
class Fed:
    """One applied event's shared part: where its message came from, what it feeds."""
    source: str            # "topic|partition" ("" = no input offset)
    offset: int
    item: str
    category: str
    weight: int
    ts: int
    follows: tuple[str, ...]
    cooccurs: tuple[str, ...]
    stage: int = -1        # the user's recent items before the event (-1: an outbox entry written before it)
    rating: float | None = None     # the event's explicit rating (`rating_of`), if it has one

    @classmethod
    def decode(cls, source: str, offset: int, item: str, category: str, weight: int, ts: int, raw: bytes,
               rating: float | None = None) -> Fed:
        part = orjson.loads(raw)
        v, s = part.get("v"), part.get("s")        # cjson writes an empty list as {}
        return cls(source, offset, item, category, weight, ts, tuple(v) if isinstance(v, list) else (),
                   tuple(s) if isinstance(s, list) else (), int(part.get("h", -1)), rating)


RATING_LIMIT = 1e6     # a rating's magnitude at most this (a hostile 1e300 would swamp an item's mean)


def rating_of(context: dict | None) -> float | None:
    """An event's explicit rating, `context.rating` (a rating log's stars; the contract leaves context
    free-form): a finite number of magnitude at most `RATING_LIMIT`, else None (not counted).

    >>> rating_of({"rating": 4}), rating_of({"rating": "5"}), rating_of({"rating": True}), rating_of(None)
    (4.0, None, None, None)
    >>> rating_of({"rating": 1e300}), rating_of({"rating": float("nan")})
    (None, None)
    """
    r = (context or {}).get("rating")
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not abs(r) <= RATING_LIMIT:
        return None
    return float(r)


def stage_of(n_recent: int) -> int:
    """A user's stage from the length of their recent sequence: 0 (new), 1 (1-2 items), 2 (3-6), 3 (7-14),
    4 (15-30), 5 (31 or more). What users touch at the start of their history differs from what they touch
    later (a shop's landing page, a rating site's first questions): popularity is also counted per stage.

    >>> [stage_of(n) for n in (0, 1, 2, 3, 7, 15, 31, 50)]
    [0, 1, 1, 2, 3, 4, 5, 5]
    """
    return min(int(n_recent + 1).bit_length() - 1, 5)


CALL_INCREMENTS = 2_000     # on a single Redis, about this many increments a script call (so a call stays short)


class SharedStats:
    def __init__(self, client: redis.Redis, prefix: str, trend_half_life_s: float, cap: int = 100):
        """`cap`: a cv:/cs: set keeps its `cap` strongest members, cut back when a batch leaves it past 2 x cap."""
        self.client, self.keys, self.cap = client, Keys(prefix), cap
        self.hl = trend_half_life_s * 1000
        self.epoch_ms = 64 * self.hl                 # trending's forward-decay epoch (see candidates/trending.py)
        self._script = Script(client, "shared_add")
        self.cluster = isinstance(client, redis.RedisCluster)
        # "cv" / "cs": item -> (shard, its co-visitation / co-occurrence key); "other": the rest's
        self._names: dict[str, dict] = {"cv": {}, "cs": {}, "other": {}}
        self._pop = (shard_of_key(self.keys.pop()), self.keys.pop())
        self._rating = [(shard_of_key(k), k) for k in self.keys.rating()]

    def _name(self, kind: str, ident, make, *args) -> tuple[int, str]:
        """`make(*args)` (a `Keys` method) and its shard, cached under `ident` in `kind`'s table: the same
        items recur batch after batch."""
        cache = self._names[kind]
        if len(cache) > 200_000:
            cache.clear()
        got = cache[ident] = shard_of_key(name := make(*args)), name
        return got

    def increments(self, f: Fed) -> list[tuple[tuple[int, str], str, float]]:
        """((shard, key), member, amount) for one event."""
        k, item, w, name = self.keys, f.item, f.weight, self._name
        cv, cs, other = self._names["cv"], self._names["cs"], self._names["other"]
        out = [(cv.get(p) or name("cv", p, k.covis, p), item, w) for p in f.follows]
        if f.cooccurs:
            mine = cs.get(item) or name("cs", item, k.cooccur, item)
            for p in f.cooccurs:
                out.append((cs.get(p) or name("cs", p, k.cooccur, p), item, 1))
                out.append((mine, p, 1))
        epoch = math.floor(f.ts / self.epoch_ms)
        boost = w * 2.0 ** ((f.ts - epoch * self.epoch_ms) / self.hl)
        out.append((other.get(("tr", epoch)) or name("other", ("tr", epoch), k.trend, epoch), item, boost))
        if cat := f.category:
            out.append((other.get(("tr", epoch, cat)) or name("other", ("tr", epoch, cat), k.trend, epoch, cat),
                        item, boost))
            out.append((other.get(("pop", cat)) or name("other", ("pop", cat), k.pop, cat), item, w))
        out.append((self._pop, item, w))
        if f.rating is not None:      # an item's rating sum and count; member "" holds every item's together
            out += [(self._rating[0], item, f.rating), (self._rating[1], item, 1),
                    (self._rating[0], "", f.rating), (self._rating[1], "", 1)]
        if f.stage >= 0:
            stage = stage_of(f.stage)
            out.append((other.get(("ps", stage)) or name("other", ("ps", stage), k.stage_pop, stage), item, w))
        return out

    def write(self, fed: list[Fed], newest: dict[str, int]) -> int:
        """Add the batch's increments, once per input offset. `newest`: source -> the batch's newest offset
        there. Returns the script calls made."""
        only: dict[tuple[int, str], int] | None = None      # after a refusal: (shard, source) -> guard
        calls = 0
        while True:
            groups: dict[int, dict[str, list]] = {}          # shard -> source -> [lo, hi, {key: {member: sum}}]
            for f in fed:
                src, off = f.source, f.offset
                for (sh, key), member, amount in self.increments(f):
                    if only is not None and only.get((sh, src), off) >= off:
                        continue
                    by_src = groups.get(sh)
                    if by_src is None:
                        by_src = groups[sh] = {}
                    g = by_src.get(src)
                    if g is None:
                        g = by_src[src] = [off, off, {}]
                    elif off < g[0]:
                        g[0] = off
                    elif off > g[1]:
                        g[1] = off
                    per = g[2].get(key)
                    if per is None:
                        per = g[2][key] = {}
                    per[member] = per.get(member, 0) + amount
            if not groups:
                return calls
            planned = self._calls(groups, newest)
            replies = self._script.execute([(keys, args) for keys, args, _ in planned])
            calls += len(planned)
            only = {}
            for (_, _, shard_at), refused in zip(planned, replies):
                for i in range(0, len(refused), 3):          # the guard lies inside this section's range
                    only[(shard_at[int(refused[i])], refused[i + 1].decode())] = int(refused[i + 2])
            if not only:
                return calls
            fed = [f for f in fed if any(src == f.source and f.offset > g for (_, src), g in only.items())]

    def _calls(self, groups: dict[int, dict[str, list]], newest: dict[str, int]) -> list[tuple[list, list, dict]]:
        """The script calls for a batch's sections: on a cluster one per shard (a script's keys share a slot),
        on a single Redis as few as hold about `CALL_INCREMENTS` increments each (measured: 40 calls of a few
        increments cost 1.3 ms for a 15-event batch). Each: (keys, args, guard's index in keys -> shard)."""
        out, keys, index, body, shard_at = [], [], {}, [], {}
        for sh in sorted(groups):
            if body and (self.cluster or len(body) > 3 * CALL_INCREMENTS):
                out.append(self._pack(keys, body, shard_at))
                keys, index, body, shard_at = [], {}, [], {}
            keys.append(self.keys.guard(sh))
            gi = len(keys)                             # KEYS are 1-based in the script
            shard_at[gi] = sh
            for src, (lo, hi, per_key) in sorted(groups[sh].items()):
                head = len(body)
                body += [gi, src, lo, hi, newest.get(src, hi), 0]
                for key, members in per_key.items():
                    k = index.get(key)
                    if k is None:
                        k = index[key] = len(keys) + 1
                        keys.append(key)
                    for m, a in members.items():
                        body += (k, m, a)
                body[head + 5] = (len(body) - head - 6) // 3
        if body:
            out.append(self._pack(keys, body, shard_at))
        return out

    def _pack(self, keys: list[str], body: list, shard_at: dict[int, int]) -> tuple[list, list, dict]:
        modes = "".join("g" if i + 1 in shard_at else _mode(k) for i, k in enumerate(keys))
        return keys, [self.cap, int(3 * self.epoch_ms), modes, msgspec.msgpack.encode(body)], shard_at


def _mode(key: str) -> str:
    """What `shared_add.lua` does after adding to a key: "t" trims a co-visitation/co-occurrence set, "e"
    expires a trending epoch, "-" nothing (popularity)."""
    return "t" if "}cv:" in key or "}cs:" in key else "e" if "}tr:" in key else "-"
