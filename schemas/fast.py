"""The consumers' fast path for `Event` v1: msgspec's typed decoder first, `validate_event` for the rest.

`validate_event` checks a parsed dict field by field in Python (about 11 µs a message, most of it the
calls themselves). msgspec decodes straight into a typed struct in C, refusing unknown fields and wrong
types as it goes (under 1 µs); what it cannot express (printable ids, the seconds-or-milliseconds rule,
a search's query, context values, duplicate keys) is checked after it in a few comparisons. Any doubt at
all, a message msgspec refuses or a check here that does not pass, goes to `validate_event`, which
accepts or refuses it with the reason naming the field. So the fast path only ever *accepts*, and only
what `validate_event` accepts, with an equal `Event`: tests/test_hostile_input.py holds the two paths
to the same answer on generated hostile and valid messages, and `python -m bench.run --only decode`
measures both.
"""
from __future__ import annotations

import math

import msgspec

from schemas._check import (
    MAX_CONTEXT_KEY_CHARS, MAX_CONTEXT_KEYS, MAX_ID_CHARS, MAX_MESSAGE_BYTES, MAX_PRICE, MAX_QUANTITY, MAX_TS_MS, MIN_TS_MS,
    Rejected,
)
from schemas.event import _TYPES, Event, validate_event

UNSET = msgspec.UNSET


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    event_id: str
    user_id: str
    type: str
    ts: int
    v: int = 1
    item_id: str | None | msgspec.UnsetType = UNSET
    session_id: str | None | msgspec.UnsetType = UNSET
    query: str | None | msgspec.UnsetType = UNSET
    price: float | None | msgspec.UnsetType = UNSET
    quantity: int | None | msgspec.UnsetType = UNSET
    context: dict[str, str | int | float | bool | None] | None | msgspec.UnsetType = UNSET


_DECODE = msgspec.json.Decoder(_Wire).decode


def _context_ok(ctx: dict) -> bool:
    """`_check.context`'s rules as a yes/no (any no: the slow path names the field)."""
    if len(ctx) > MAX_CONTEXT_KEYS:
        return False
    for k, x in ctx.items():
        if not k or len(k) > MAX_CONTEXT_KEY_CHARS or not k.isascii() or not k.isprintable():
            return False
        if k == "category" or k == "brand":
            if x is not None and (type(x) is not str or not x.strip() or "\x00" in x
                                  or len(x) > (256 if k == "brand" else 1024)):
                return False
        elif type(x) is str:
            if len(x) > 1024:
                return False
        elif type(x) is float and not math.isfinite(x):
            return False
    return True


def fast_validate_event(raw) -> Event | Rejected:
    """`validate_event`'s answer for one message, by the fast path where it can be sure.

    >>> fast_validate_event(b'{"event_id":"e1","user_id":"u1","item_id":"i9","type":"view","ts":1700000000000}').type
    'view'
    >>> fast_validate_event(b'{"event_id":"e1","user_id":"u1","item_id":"i9","type":"view","ts":1700000000}').reason
    'ts: 1700000000 looks like seconds; expected milliseconds since the epoch'
    """
    if type(raw) is not bytes or len(raw) > MAX_MESSAGE_BYTES:
        return validate_event(raw)
    try:
        raw.decode("utf-8")
        w = _DECODE(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return validate_event(raw)
    item, sid, price, qty, ctx = w.item_id, w.session_id, w.price, w.quantity, w.context
    if (type(item) is not str or w.type not in _TYPES or w.type == "search" or w.query is not UNSET or w.v != 1
            or not MIN_TS_MS <= w.ts <= MAX_TS_MS):
        return validate_event(raw)
    ids = w.event_id + w.user_id + item + (sid if type(sid) is str else "")
    if (not ids.isascii() or not ids.isprintable() or not 0 < len(w.event_id) <= MAX_ID_CHARS
            or not 0 < len(w.user_id) <= MAX_ID_CHARS or not 0 < len(item) <= MAX_ID_CHARS
            or sid is not UNSET and sid is not None and not 0 < len(sid) <= MAX_ID_CHARS
            or price is not UNSET and price is not None and not 0.0 <= price <= MAX_PRICE
            or qty is not UNSET and qty is not None and not 1 <= qty <= MAX_QUANTITY
            or type(ctx) is dict and not _context_ok(ctx)):
        return validate_event(raw)
    # every key token in the text ends in `":`; a duplicate key (or a `":` inside a string) makes more of them
    # than the struct holds fields: then the slow path finds out which (`"v":` can only be a key token)
    keys = (5 + (sid is not UNSET) + (price is not UNSET) + (qty is not UNSET) + (ctx is not UNSET)
            + (len(ctx) if type(ctx) is dict else 0) + (b'"v":' in raw))
    if raw.count(b'":') != keys:
        return validate_event(raw)
    return Event(w.event_id, w.user_id, item, w.type, w.ts, None if sid is UNSET else sid, None,
                 None if price is UNSET or price is None else float(price), None if qty is UNSET else qty,
                 None if ctx is UNSET else ctx)
