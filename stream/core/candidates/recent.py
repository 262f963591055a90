"""The user's own recent items: repeat views are common in shopping logs. Every item the profile keeps
(its 50 newest entries), not only the newest few: on logs with long histories shoppers return to items
further back, and the learned ranker weighs each by its place, count and age in the history. Items the
user may not be shown (the rating log's already-rated ones) are not proposed."""
from __future__ import annotations

from stream.core.candidates.base import BatchContext


class UserHistory:
    name = "recent"

    def __init__(self, n: int = 50):
        self.n = n

    def plan(self, ctx: BatchContext, pipe):
        for uid, snap in ctx.snapshots.items():
            excluded = ctx.exclude.get(uid, ())
            ctx.add_all(uid, self.name, [(item, 1.0 / (1.0 + rank)) for rank, item in enumerate(snap.recent[: self.n])
                                         if item not in excluded])
        return lambda replies: None
