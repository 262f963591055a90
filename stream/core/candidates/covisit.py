"""Item co-visitation: items seen in the same sessions as the user's latest items.

Counts are updated incrementally by the profile stage (integer weights by event type, within
a session gap); here we read the top neighbours of the user's 3 latest distinct items.
"""
from __future__ import annotations

from stream.core.candidates.base import BatchContext, plan_weighted
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
