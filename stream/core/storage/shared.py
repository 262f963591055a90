"""The shared statistics (co-visitation, co-occurrence, trending, popularity), added up per batch.

The per-user script (`lua/apply_events.lua`) touches only the user's keys; for each applied, not bot-like
event with an item it returns the event's *shared part* (the items it follows, the items it co-occurs
with). Here a batch's parts become increments, are summed per distinct (key, member) and written with one
script call per shard (`lua/shared_add.lua`, all keys of a call under one hash tag, so it runs on Redis
Cluster), pipelined: one round-trip per batch instead of about ten ZINCRBY per event inside the user script.

Exactly once, across crashes: each shard keeps a guard (input partition -> the newest offset whose
increments it holds), written in the same script call as the increments. A worker killed after the user
scripts and before (or during) the shared writes gets the batch again; the user scripts see its events as
applied and hand back their shared parts from the user's outbox (`U:out`, kept until the batch's offsets
are committed), and each shard adds only what is newer than its guard. This is Kafka Streams' and
quix-streams' choice (state tied to the input offsets it covers), per shard instead of per store, because
a Redis Cluster has no transaction across slots. Events without an input offset (a backtest, a replay in
process) are added unguarded.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import orjson
import redis

from stream.core.storage.store import Keys, Script, shard



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

    @classmethod
    def decode(cls, source: str, offset: int, item: str, category: str, weight: int, ts: int, raw: bytes) -> Fed:
        part = orjson.loads(raw)
        v, s = part.get("v"), part.get("s")        # cjson writes an empty list as {}
        return cls(source, offset, item, category, weight, ts, tuple(v) if isinstance(v, list) else (),
                   tuple(s) if isinstance(s, list) else ())


class SharedStats:
    def __init__(self, client: redis.Redis, prefix: str, trend_half_life_s: float, cap: int = 100):
        """`cap`: a cv:/cs: set keeps its `cap` strongest members, cut back when a batch leaves it past 2 x cap."""
        self.client, self.keys, self.cap = client, Keys(prefix), cap
        self.hl = trend_half_life_s * 1000
        self.epoch_ms = 64 * self.hl                 # trending's forward-decay epoch (see candidates/trending.py)
        self._script = Script(client, "shared_add")

    def increments(self, f: Fed):
        """(shard, key, member, amount, mode) for one event: mode "t" trims the set, "e" expires it."""
        k, item, w = self.keys, f.item, f.weight
        for p in f.follows:
            yield shard(p), k.covis(p), item, w, "t"
        for p in f.cooccurs:
            yield shard(p), k.cooccur(p), item, 1, "t"
            yield shard(item), k.cooccur(item), p, 1, "t"
        epoch = math.floor(f.ts / self.epoch_ms)
        boost = w * 2.0 ** ((f.ts - epoch * self.epoch_ms) / self.hl)
        yield shard("tr"), k.trend(epoch), item, boost, "e"
        if f.category:
            yield shard("c:" + f.category), k.trend(epoch, f.category), item, boost, "e"
            yield shard("c:" + f.category), k.pop(f.category), item, w, "-"
        yield shard("pop"), k.pop(), item, w, "-"

    def write(self, fed: list[Fed], newest: dict[str, int]) -> int:
        """Add the batch's increments, once per input offset. `newest`: source -> the batch's newest offset
        there. Returns the script calls made."""
        rows: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))   # shard -> source -> rows
        for f in fed:
            for sh, key, member, amount, mode in self.increments(f):
                rows[sh][f.source].append((f.offset, key, member, amount, mode))
        calls = 0
        while rows:
            order = sorted(rows)
            replies = self._script.execute([self._call(sh, rows[sh], newest) for sh in order])
            calls += len(order)
            again: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
            for sh, refused in zip(order, replies):
                for i in range(0, len(refused), 2):           # the guard lies inside this section's range
                    src, g = refused[i].decode(), int(refused[i + 1])
                    keep = [r for r in rows[sh][src] if r[0] > g]
                    if keep:
                        again[sh][src] = keep
            rows = again
        return calls

    def _call(self, sh: int, sections: dict[str, list], newest: dict[str, int]) -> tuple[list, list]:
        keys, index, modes = [self.keys.guard(sh)], {}, []
        argv: list = [len(sections)]
        for src, rs in sorted(sections.items()):
            summed: dict[tuple[str, str], float] = {}
            for _, key, member, amount, mode in rs:
                if key not in index:
                    index[key] = len(keys) + 1
                    keys.append(key)
                    modes.append(mode)
                summed[(key, member)] = summed.get((key, member), 0) + amount
            offs = [r[0] for r in rs]
            argv += [src, min(offs), max(offs), newest.get(src, max(offs)), len(summed)]
            for (key, member), amount in summed.items():
                argv += [index[key], member, repr(amount) if isinstance(amount, float) else amount]
        argv += [self.cap, int(3 * self.epoch_ms), *modes]
        return keys, argv
