"""Stage 1: validate and dedupe a batch of raw messages.

Bad input is data: each becomes a `DeadLetter` carrying the original bytes and the reason,
bound for the dead-letter topic. Nothing here raises on bad input.
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas import Event, Item, Rejected, validate_event, validate_item


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
    value: bytes
    key: bytes | None
    reason: str
    topic: str
    partition: int
    offset: int


def validate_batch(messages: list[InMessage]) -> tuple[list[Event], list[Item], list[DeadLetter]]:
    """Events (first occurrence of each event_id kept, batch order), items, dead letters."""
    events: list[Event] = []
    items: list[Item] = []
    dead: list[DeadLetter] = []
    seen: set[str] = set()
    for m in messages:
        v = validate_item(m.value) if m.kind == "item" else validate_event(m.value)
        if isinstance(v, Rejected):
            dead.append(DeadLetter(m.value, m.key, v.reason, m.topic, m.partition, m.offset))
        elif m.kind == "item":
            items.append(v)
        elif v.event_id not in seen:
            seen.add(v.event_id)
            events.append(v)
    return events, items, dead
