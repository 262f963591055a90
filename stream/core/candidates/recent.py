"""The user's own items, by recency and frequency: repeat consumption dominates shopping and session logs.

Each distinct item in the user's recent sequence (newest first) scores the sum of `decay ** position`
over its occurrences, divided by the best item's: the newest item and the item returned to most often
both rank high. The `n` best are proposed.
"""
from __future__ import annotations

from stream.core.candidates.base import BatchContext


def repeat_scores(recent: list[str], decay: float = 0.8) -> dict[str, float]:
    """item -> recency-weighted frequency, best = 1.0.

    >>> {k: round(v, 3) for k, v in repeat_scores(["a", "b", "a", "c"]).items()}
    {'a': 1.0, 'b': 0.488, 'c': 0.312}
    """
    acc: dict[str, float] = {}
    w = 1.0
    for item in recent:
        acc[item] = acc.get(item, 0.0) + w
        w *= decay
    top = max(acc.values(), default=1.0)
    return {k: v / top for k, v in acc.items()}


class UserHistory:
    name = "recent"

    def __init__(self, n: int = 20, decay: float = 0.8):
        self.n, self.decay = n, decay

    def plan(self, ctx: BatchContext, pipe):
        for uid, snap in ctx.snapshots.items():
            add = ctx.adder(uid, self.name)
            scores = repeat_scores(snap.recent, self.decay)
            for item, s in sorted(scores.items(), key=lambda kv: -kv[1])[: self.n]:
                add(item, s)
        return lambda replies: None
