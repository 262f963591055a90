"""Stage 1: validate and dedupe a batch of raw messages.

Bad input is data: each becomes a `DeadLetter` carrying the original bytes and the reason,
bound for the dead-letter topic. Nothing here raises on bad input.
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas import Event, Item, Rejected, validate_item
from schemas._check import cap_reason
from schemas.fast import fast_validate_event


@dataclass(frozen=True, slots=True)
class InMessage:
    """One consumed message, transport-agnostic (Kafka fills topic/partition/offset)."""
    value: bytes
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    kind: str = "event"   # "event" | "item"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message bound for the dead-letter topic: its original bytes and key, where it came from
    (topic[partition]@offset), the stage that refused it and why (capped: it travels as a header)."""
    value: bytes | None
    key: bytes | None
    reason: str
    topic: str
    partition: int
    offset: int
    stage: str = "validate"

    @classmethod
    def of(cls, m: InMessage, reason: str, stage: str = "validate") -> "DeadLetter":
        return cls(m.value, m.key, cap_reason(reason), m.topic, m.partition, m.offset, stage)

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def validate_batch(messages: list[InMessage]) -> tuple[list[Event], list[Item], list[DeadLetter]]:
    events, _, items, dead = validate_with_origins(messages)
    return events, items, dead


def validate_with_origins(messages: list[InMessage]
                          ) -> tuple[list[Event], list[InMessage], list[Item], list[DeadLetter]]:
    """Events (first occurrence of each (user, event_id) kept, batch order), items, dead letters.

    Event ids are unique per user, not across users: two users' events that share an id are both kept
    (the profile stage's idempotency guard is per user too)."""
    events: list[Event] = []
    origins: list[InMessage] = []      # the message each event came from (a later stage may dead-letter it)
    items: list[Item] = []
    dead: list[DeadLetter] = []
    seen: set[tuple[str, str]] = set()
    for m in messages:
        v = validate_item(m.value) if m.kind == "item" else fast_validate_event(m.value)
        if isinstance(v, Rejected):
            dead.append(DeadLetter.of(m, v.reason))
        elif m.kind == "item":
            items.append(v)
        elif (v.user_id, v.event_id) not in seen:
            seen.add((v.user_id, v.event_id))
            events.append(v)
            origins.append(m)
    return events, origins, items, dead
