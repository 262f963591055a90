from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from stream.profile import Snapshot


@dataclass
class BatchContext:
    """What the candidate stage knows about one batch."""
    snapshots: dict[str, Snapshot]
    now_ts: int                                   # event time: the batch's newest event
    # user -> item -> source -> score (in [0, 1], per source per user)
    cands: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def add(self, user: str, item: str, source: str, score: float) -> None:
        slot = self.cands.setdefault(user, {}).setdefault(item, {})
        if score > slot.get(source, 0.0):
            slot[source] = score


class CandidateSource(Protocol):
    name: str

    def plan(self, ctx: BatchContext, pipe) -> Callable[[list], None]:
        """Queue reads on `pipe`; return a function that takes this source's replies, in order."""


def normalised(pairs: list[tuple[bytes, float]]) -> list[tuple[str, float]]:
    """ZREVRANGE ... WITHSCORES replies -> (item, score / best score)."""
    if not pairs:
        return []
    top = pairs[0][1] or 1.0
    return [(m.decode() if isinstance(m, bytes) else m, s / top) for m, s in pairs]
