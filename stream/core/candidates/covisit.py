"""Item co-visitation, two ways, both counted incrementally by the profile stage:

- `covisit` (sequential): what users went to after the user's 3 latest distinct items, within a
  session gap, weighted by event type; strongest on session logs, where order matters.
- `cooccur` (symmetric, the textbook item kNN): items that shared a user's last 5 distinct items with
  one of the user's 5 latest, at any gap, counted once per pair; each anchor's neighbours weighted
  1/position and summed. Strongest where order matters little (ratings, long histories).
"""
from __future__ import annotations

from stream.core.candidates.base import BatchContext, pairs, plan_weighted, zrevrange
from stream.core.storage.store import Keys

ANCHOR_WEIGHTS = (1.0, 0.6, 0.4)


class CoVisitation:
    name = "covisit"

    def __init__(self, prefix: str, per_anchor: int = 20):
        self.prefix, self.per_anchor = prefix, per_anchor
        self.keys = Keys(prefix)

    def plan(self, ctx: BatchContext, pipe):
        wanted = {uid: list(zip(dict.fromkeys(snap.recent), ANCHOR_WEIGHTS)) for uid, snap in ctx.snapshots.items()}
        return plan_weighted(ctx, pipe, self.name, wanted, self.keys.covis, self.per_anchor)


class CoOccurrence:
    name = "cooccur"

    def __init__(self, prefix: str, anchors: int = 5, per_anchor: int = 50):
        self.anchors, self.per_anchor = anchors, per_anchor
        self.keys = Keys(prefix)

    def plan(self, ctx: BatchContext, pipe):
        wanted = {uid: list(dict.fromkeys(snap.recent))[: self.anchors] for uid, snap in ctx.snapshots.items()}
        order = sorted({a for lst in wanted.values() for a in lst})
        for a in order:
            zrevrange(pipe, self.keys.cooccur(a), self.per_anchor)

        def collect(replies: list) -> None:
            tops = dict(zip(order, (pairs(r) for r in replies)))
            for uid, anchors in wanted.items():
                # the first anchor's neighbours as they are (a sorted set's members are distinct, and a count
                # over 1 is itself), then the others' added at 1/position
                acc: dict[str, float] = dict(tops[anchors[0]]) if anchors else {}
                for pos, a in enumerate(anchors[1:], 2):
                    for item, count in tops[a]:
                        acc[item] = acc.get(item, 0.0) + count / pos
                if acc:
                    top = max(acc.values())
                    ctx.add_all(uid, self.name, [(item, v / top) for item, v in acc.items()])
        return collect
