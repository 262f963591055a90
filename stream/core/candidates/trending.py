"""Trending: decayed popularity, global and in the user's top categories.

Scores are stored with forward decay (see storage/shared.py): inside an epoch of 64
half-lives an event adds w * 2^((ts - epoch_start) / half_life); reading at time `now` scales
the epoch's scores by 2^(-(now - epoch_start) / half_life). The current and previous epochs are read.
"""
from __future__ import annotations

import math

from stream.core.candidates.base import BatchContext, pairs, zrevrange
from stream.core.storage.store import Keys


class Trending:
    name = "trending"

    def __init__(self, prefix: str, half_life_s: float, n_global: int = 30, n_category: int = 10, n_cats: int = 2):
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.hl = half_life_s * 1000
        self.epoch_ms = 64 * self.hl
        self.n_global, self.n_category, self.n_cats = n_global, n_category, n_cats

    def _keys(self, now: int, cat: str | None) -> list[tuple[str, int]]:
        e = math.floor(now / self.epoch_ms)
        return [(self.keys.trend(ep, cat), int(ep * self.epoch_ms)) for ep in (e, e - 1)]

    def _merge(self, now: int, keys, replies) -> list[tuple[str, float]]:
        acc: dict[str, float] = {}
        for (_, start), rows in zip(keys, replies):
            scale = 2.0 ** (-(now - start) / self.hl)
            for k, s in pairs(rows):
                acc[k] = acc.get(k, 0.0) + s * scale
        ranked = sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))
        top = ranked[0][1] if ranked and ranked[0][1] > 0 else 1.0
        return [(k, v / top) for k, v in ranked]

    def plan(self, ctx: BatchContext, pipe):
        now = ctx.now_ts
        gkeys = self._keys(now, None)
        for k, _ in gkeys:
            zrevrange(pipe, k, self.n_global)
        user_cats = {uid: [c for c, _ in snap.top("c", self.n_cats)] for uid, snap in ctx.snapshots.items()}
        cats = sorted({c for cs in user_cats.values() for c in cs})
        ckeys = {c: self._keys(now, c) for c in cats}
        for c in cats:
            for k, _ in ckeys[c]:
                zrevrange(pipe, k, self.n_category)

        def collect(replies: list) -> None:
            glob = self._merge(now, gkeys, replies[:2])
            per_cat = {c: self._merge(now, ckeys[c], replies[2 + 2 * i: 4 + 2 * i]) for i, c in enumerate(cats)}
            for uid, cs in user_cats.items():
                # users with known tastes get a few global items; new users get the whole list
                ctx.add_all(uid, self.name, [(item, 0.5 * s) for item, s in glob[: 5 if cs else self.n_global]])
                for c in cs:
                    ctx.add_all(uid, self.name, per_cat[c])
        return collect
