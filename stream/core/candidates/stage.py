"""Stage-popular: the items most touched by users at the same stage of their history as this user
(`shared.stage_of`: new, 1-2 items, 3-6, ...). A new user's first steps follow the shop's landing page or a
rating site's first questions, not what is popular overall; the ranker learns how much this says per log."""
from __future__ import annotations

from stream.core.candidates.base import BatchContext, plan_weighted
from stream.core.storage.shared import stage_of
from stream.core.storage.store import Keys


class StagePopular:
    name = "stage"

    def __init__(self, prefix: str, n: int = 20):
        self.n, self.keys = n, Keys(prefix)

    def plan(self, ctx: BatchContext, pipe):
        wanted = {uid: [(stage_of(len(snap.recent)), 1.0)] for uid, snap in ctx.snapshots.items()}
        return plan_weighted(ctx, pipe, self.name, wanted, self.keys.stage_pop, self.n)
