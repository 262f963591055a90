"""Category-popular: the all-time most popular items of the user's top categories,
weighted by the user's affinity share for each category."""
from __future__ import annotations

from stream.core.candidates.base import BatchContext, plan_weighted
from stream.core.storage.store import Keys


class CategoryPopular:
    name = "category"

    def __init__(self, prefix: str, n: int = 15, n_cats: int = 3):
        self.prefix, self.n, self.n_cats = prefix, n, n_cats
        self.keys = Keys(prefix)

    def plan(self, ctx: BatchContext, pipe):
        wanted = {}
        for uid, snap in ctx.snapshots.items():
            cs = snap.top("c", self.n_cats)
            total = sum(v for _, v in cs) or 1.0
            wanted[uid] = [(c, v / total) for c, v in cs]
        return plan_weighted(ctx, pipe, self.name, wanted, self.keys.pop, self.n)
