"""The values that pass between the pipeline's stages: frozen, typed, and what every driver hands on.

    messages --ingest--> Ingested --apply--> Applied --recommend--> BatchResult

A driver that isolates failures (the confluent worker) runs a stage again on a part of its input:
`Ingested.only(users)` / `Applied.only(users)`, and joins the parts with `merge(whole, parts)`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from schemas import Event, Recommendation
from stream.core.storage.profile import Snapshot
from stream.core.validate import DeadLetter, InMessage


@dataclass(frozen=True)
class Ingested:
    """Stage 1's output: valid events (batch order, deduplicated per user), the message each came from,
    dead letters, the number of catalog upserts applied, and the stage timings so far.

    >>> ing = Ingested.of_events([])
    >>> ing.events, ing.dead_letters, ing.items
    ([], [], 0)
    """
    events: list[Event]
    origins: list[InMessage]
    dead_letters: list[DeadLetter] = field(default_factory=list)
    items: int = 0
    timings: dict = field(default_factory=dict)

    @classmethod
    def of_events(cls, events: list[Event]) -> Ingested:
        """Events already parsed (the backtest, tests): no message behind them."""
        return cls(list(events), [InMessage(b"", None, "", -1, -1)] * len(events))

    def only(self, users: set[str]) -> Ingested:
        """These users' events only (no dead letters, no catalog count: those stay with the whole)."""
        keep = [i for i, ev in enumerate(self.events) if ev.user_id in users]
        return Ingested([self.events[i] for i in keep], [self.origins[i] for i in keep], [], 0, self.timings)


@dataclass(frozen=True)
class Applied:
    """Stage 2's output: each touched user's profile snapshot right after the batch's events were
    applied (atomically, idempotently), with what stage 1 produced and any dead letters of this stage."""
    ingested: Ingested
    snapshots: dict[str, Snapshot]
    dead_letters: list[DeadLetter] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    prepared: tuple | None = None     # (scorer, context, candidates): stage 3 gathered ahead (`Pipeline.prepare`)
    observed: int = 0                 # how many of the observers have seen these snapshots (`Pipeline.prepare`)

    @property
    def events(self) -> list[Event]:
        """The events of users whose profile was applied (in batch order)."""
        return [ev for ev in self.ingested.events if ev.user_id in self.snapshots]

    @property
    def origins(self) -> list[InMessage]:
        """The message each of `events` came from."""
        ing = self.ingested
        return [m for ev, m in zip(ing.events, ing.origins) if ev.user_id in self.snapshots]

    def only(self, users: set[str]) -> Applied:
        return Applied(self.ingested.only(users), {u: s for u, s in self.snapshots.items() if u in users},
                       [], self.timings)


@dataclass(frozen=True)
class BatchResult:
    """A batch's outcome: one recommendation per user with a fresh event, every dead letter of every
    stage, counts, and the seconds each stage took."""
    recommendations: list[Recommendation]
    dead_letters: list[DeadLetter]
    events: int = 0            # valid events in the batch (after in-batch dedupe)
    applied: int = 0           # events that changed state (not seen before)
    items: int = 0             # catalog upserts
    timings: dict[str, float] = field(default_factory=dict)   # stage -> seconds

    def with_dead_letters(self, more: list[DeadLetter]) -> BatchResult:
        return replace(self, dead_letters=self.dead_letters + list(more)) if more else self


def merge(whole: Ingested | Applied, parts: list) -> Applied | BatchResult:
    """What a stage run on `whole` returns, put together from its runs on disjoint users of it (the
    isolation path): `apply` parts into one `Applied` of the whole batch, `recommend` parts into one
    `BatchResult` that keeps the whole batch's dead letters and catalog count."""
    if isinstance(whole, Ingested):
        snaps: dict = {}
        for part in parts:
            snaps.update(part.snapshots)
        return Applied(whole, snaps, [], parts[0].timings if parts else dict(whole.timings))
    return BatchResult([r for part in parts for r in part.recommendations],
                       whole.ingested.dead_letters + whole.dead_letters, sum(part.events for part in parts),
                       sum(part.applied for part in parts), whole.ingested.items,
                       parts[0].timings if parts else dict(whole.timings))
