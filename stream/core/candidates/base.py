"""What every candidate source shares: the batch context it fills and the protocol it follows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from stream.core.storage.profile import Snapshot

SOURCE_NAMES = ("covisit", "recent", "trending", "category", "content", "model", "cooccur", "linear", "stage")


@dataclass
class BatchContext:
    """What the candidate stage knows about one batch."""
    snapshots: dict[str, Snapshot]
    now_ts: int                                   # event time: the batch's newest event
    exclude: dict[str, set] = field(default_factory=dict)   # user -> items not to propose (ask with exclusions)
    # user -> item -> per-source scores in SOURCE_NAMES order (each in [0, 1]; 0 = not proposed)
    cands: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    vectors: dict = field(default_factory=dict)   # user -> content vector (set by the content source)
    linear: dict = field(default_factory=dict)    # user -> UserScores: score / best of any item (the "linear" source)

    def add_all(self, user: str, source: str, scored) -> None:
        """Each (item, score) of `scored` proposed by `source` for `user`: the item's row is created on its
        first proposal (a source that scores it 0 still makes it a candidate), and each source keeps its best
        score per item. One loop a list, not a call per item (the candidate stage's hottest loop)."""
        col = SOURCE_NAMES.index(source)
        rows = self.cands.setdefault(user, {})
        get, blank = rows.get, [0.0] * len(SOURCE_NAMES)
        for item, score in scored:
            row = get(item)
            if row is None:
                row = rows[item] = blank.copy()
                if score > 0.0:
                    row[col] = score
            elif score > row[col]:
                row[col] = score


class CandidateSource(Protocol):
    name: str

    def plan(self, ctx: BatchContext, pipe) -> Callable[[list], None]:
        """Queue reads on `pipe`; return a function that takes this source's replies, in order."""


def zrevrange(pipe, key: str, n: int) -> None:
    """Queue ZREVRANGE key 0 n-1 WITHSCORES, replied as a flat list (parsed by `pairs`, faster than redis-py's)."""
    pipe.execute_command("ZREVRANGE", key, 0, n - 1, "WITHSCORES")


def pairs(flat: list) -> list[tuple[str, float]]:
    """A [member, score, ...] (or [[member, score], ...]) reply -> [(item, score)]."""
    if flat and isinstance(flat[0], (list, tuple)):
        return [(m.decode(), float(s)) for m, s in flat]
    return list(zip(map(bytes.decode, flat[::2]), map(float, flat[1::2])))


def normalised(flat: list[bytes]) -> list[tuple[str, float]]:
    """A flat ZREVRANGE ... WITHSCORES reply -> (item, score / best score)."""
    ps = pairs(flat)
    if not ps:
        return []
    top = ps[0][1] or 1.0
    return [(m, s / top) for m, s in ps]


def plan_weighted(ctx: BatchContext, pipe, name: str, wanted: dict[str, list[tuple[str, float]]], key_of,
                  n: int) -> Callable[[list], None]:
    """For sources that read shared sorted sets: each user wants some of them, each with a weight. Every
    distinct set is read once (its top `n`, queued on `pipe`); each user's candidates are their sets'
    normalised scores times the weight (the best kept per item, as `BatchContext.add_all` does)."""
    order = sorted({k for lst in wanted.values() for k, _ in lst})
    for k in order:
        zrevrange(pipe, key_of(k), n)

    def collect(replies: list) -> None:
        tops = dict(zip(order, (normalised(r) for r in replies)))
        for uid, lst in wanted.items():
            for k, w in lst:
                ctx.add_all(uid, name, tops[k] if w == 1.0 else [(item, w * s) for item, s in tops[k]])
    return collect
