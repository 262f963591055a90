"""`Event` v1: one shopper action (view, click, add_to_cart, purchase, search).

The JSON Schema document is `event.v1.json` beside this file; `validate_event` is the fast
path the consumers use and agrees with it (tests/test_schemas.py checks both on the same cases).

>>> ev = validate_event(b'{"event_id":"e1","user_id":"u1","item_id":"i9","type":"view","ts":1700000000000}')
>>> ev.type, ev.ts
('view', 1700000000000)
>>> validate_event(b'{"event_id":"e1","user_id":"u1","item_id":"i9","type":"view","ts":1700000000}').reason
'ts: 1700000000 looks like seconds; expected milliseconds since the epoch'
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from schemas._check import (
    Rejected, _Bad, check_unknown, check_version, context, ident, integer, load_object, number, req, show,
    text, timestamp_ms,
)

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "search")
_TYPES = frozenset(EVENT_TYPES)
_FIELDS = frozenset({"v", "event_id", "user_id", "item_id", "type", "ts", "session_id", "query",
                     "price", "quantity", "context"})


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    user_id: str
    item_id: str | None        # None only for `search`
    type: str                  # one of EVENT_TYPES
    ts: int                    # milliseconds since the epoch, event time
    session_id: str | None = None
    query: str | None = None   # required for `search`
    price: float | None = None
    quantity: int | None = None
    context: dict | None = None  # free-form: category, brand, device, page, ...

    def to_dict(self) -> dict:
        d = {"v": 1, "event_id": self.event_id, "user_id": self.user_id, "item_id": self.item_id,
             "type": self.type, "ts": self.ts}
        for k in ("session_id", "query", "price", "quantity", "context"):
            val = getattr(self, k)
            if val is not None:
                d[k] = val
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def validate_event(raw: bytes | str | dict | None) -> Event | Rejected:
    """Parse and check one event; bad input of any shape (bytes, tombstone, wrong types at any depth,
    duplicate keys, out-of-bounds numbers, invisible characters in ids) comes back as `Rejected`, never as an
    exception (tests/test_hostile_input.py drives this with hypothesis; tests/fuzz_validate.py with atheris).

    >>> validate_event(None).reason
    'message: no value (a tombstone); an event or item needs a JSON object'
    >>> validate_event(b'{"event_id":"e","user_id":"u","item_id":"i","type":[1],"ts":1730000000000}').reason
    'type: [1] is not one of view, click, add_to_cart, purchase, search'
    >>> validate_event(b'{"event_id":"e","user_id":"u","user_id":"v","item_id":"i","type":"view","ts":1730000000000}').reason
    'user_id: duplicate key in the message'
    """
    try:
        obj = load_object(raw)
        check_version(obj)
        check_unknown(obj, _FIELDS)
        etype = req(obj, "type")
        if not isinstance(etype, str) or etype not in _TYPES:
            raise _Bad(f"type: {show(etype)} is not one of {', '.join(EVENT_TYPES)}")
        is_search = etype == "search"
        query = text(obj, "query", required=is_search, max_chars=1024)
        if is_search and not query.strip():
            raise _Bad("query: a search event needs a non-empty query")
        ctx = context(obj)
        return Event(
            event_id=ident(obj, "event_id"),
            user_id=ident(obj, "user_id"),
            item_id=ident(obj, "item_id", required=not is_search),
            type=etype,
            ts=timestamp_ms(obj, "ts"),
            session_id=ident(obj, "session_id", required=False),
            query=query,
            price=number(obj, "price"),
            quantity=integer(obj, "quantity"),
            context=ctx,
        )
    except _Bad as bad:
        return Rejected(str(bad))
