"""The user's own recent items: repeat views are common in shopping logs."""
from __future__ import annotations

from stream.core.candidates.base import BatchContext


class UserHistory:
    name = "recent"

    def __init__(self, n: int = 10):
        self.n = n

    def plan(self, ctx: BatchContext, pipe):
        for uid, snap in ctx.snapshots.items():
            add = ctx.adder(uid, self.name)
            for rank, item in enumerate(snap.recent[: self.n]):
                add(item, 1.0 / (1.0 + rank))
        return lambda replies: None
