"""Category-popular: the all-time most popular items of the user's top categories,
weighted by the user's affinity share for each category."""
from __future__ import annotations

from stream.core.candidates.base import BatchContext, normalised, zrevrange
from stream.core.storage.store import Keys


class CategoryPopular:
    name = "category"

    def __init__(self, prefix: str, n: int = 15, n_cats: int = 3):
        self.prefix, self.n, self.n_cats = prefix, n, n_cats
        self.keys = Keys(prefix)

    def plan(self, ctx: BatchContext, pipe):
        user_cats = {uid: snap.top("c", self.n_cats) for uid, snap in ctx.snapshots.items()}
        cats = sorted({c for cs in user_cats.values() for c, _ in cs})
        for c in cats:
            zrevrange(pipe, self.keys.pop(c), self.n)

        def collect(replies: list) -> None:
            pop = dict(zip(cats, (normalised(r) for r in replies)))
            for uid, cs in user_cats.items():
                add = ctx.adder(uid, self.name)
                total = sum(v for _, v in cs) or 1.0
                for c, v in cs:
                    share = v / total
                    for item, s in pop[c]:
                        add(item, share * s)
        return collect
