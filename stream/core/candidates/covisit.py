"""Item co-visitation: items seen in the same sessions as the user's latest items.

Counts are updated incrementally by the profile stage (integer weights by event type, within
a session gap); here we read the top neighbours of the user's 3 latest distinct items.
"""
from __future__ import annotations

from stream.core.candidates.base import BatchContext, normalised, zrevrange
from stream.core.storage.store import Keys

ANCHOR_WEIGHTS = (1.0, 0.6, 0.4)


class CoVisitation:
    name = "covisit"

    def __init__(self, prefix: str, per_anchor: int = 20):
        self.prefix, self.per_anchor = prefix, per_anchor
        self.keys = Keys(prefix)

    def plan(self, ctx: BatchContext, pipe):
        anchors: dict[str, list[str]] = {}
        for uid, snap in ctx.snapshots.items():
            distinct = list(dict.fromkeys(snap.recent))[: len(ANCHOR_WEIGHTS)]
            anchors[uid] = distinct
        order = sorted({a for lst in anchors.values() for a in lst})
        for a in order:
            zrevrange(pipe, self.keys.covis(a), self.per_anchor)

        def collect(replies: list) -> None:
            neigh = dict(zip(order, (normalised(r) for r in replies)))
            for uid, lst in anchors.items():
                add = ctx.adder(uid, self.name)
                for w, a in zip(ANCHOR_WEIGHTS, lst):
                    for item, s in neigh[a]:
                        add(item, w * s)
        return collect
