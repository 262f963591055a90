"""Hostile input: the validators never raise, whatever arrives (hypothesis drives them with generated
JSON of every shape, mutated valid events, and raw bytes), and what they accept keeps the contract's
bounds. Plus the concrete poison messages that once wedged the worker."""
from __future__ import annotations

import json
import math
import unicodedata

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import (
    Event,
    Item,
    Rejected,
    SearchRequest,
    validate_event,
    validate_item,
    validate_recommendation,
    validate_search_request,
)
from schemas._check import MAX_ID_CHARS, MAX_PRICE, MAX_QUANTITY, MAX_REASON_CHARS
from schemas.fast import fast_validate_event

GOOD = {"v": 1, "event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "add_to_cart", "ts": 1730000000000,
        "session_id": "s1", "price": 19.5, "quantity": 2, "context": {"category": "shoes", "page": "pdp"}}
FIELDS = list(GOOD) + ["query", "extra"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
nasty_text = st.text(alphabet=st.sampled_from(["a", ":", "{", "}", "%", "\x00", "\u200b", "\u202e", "\ufeff",
                                               "\n", " ", "é", "\U0001F600", "\ud7ff"]), min_size=0, max_size=12)


def both(raw):
    """`validate_event`'s answer, after checking that the consumers' fast path (schemas/fast.py: msgspec
    first) gives exactly the same one: the same Event, or the same rejection."""
    slow, fast = validate_event(raw), fast_validate_event(raw)
    assert fast == slow, (raw, fast, slow)
    return slow


def check_total(got) -> None:
    """Never an exception (the call returned), never the internal-error net, and a bounded reason."""
    if isinstance(got, Rejected):
        assert got.reason and len(got.reason) <= MAX_REASON_CHARS
        assert ":" in got.reason, got.reason
    else:
        assert isinstance(got, (Event, Item, SearchRequest)) or got.__class__.__name__ == "Recommendation"


def check_event_bounds(ev: Event) -> None:
    for name in ("event_id", "user_id", "item_id", "session_id"):
        v = getattr(ev, name)
        if v is None:
            continue
        assert 1 <= len(v) <= MAX_ID_CHARS
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn") for c in v), v
    if ev.price is not None:
        assert 0 <= ev.price <= MAX_PRICE and math.isfinite(ev.price)
    if ev.quantity is not None:
        assert 1 <= ev.quantity <= MAX_QUANTITY
    assert ev.type in ("view", "click", "add_to_cart", "purchase", "search")
    for k, v in (ev.context or {}).items():
        assert isinstance(k, str) and (v is None or isinstance(v, (str, int, float, bool)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(raw):
    for fn in (both, validate_item, validate_recommendation, validate_search_request):
        check_total(fn(raw))


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_json_value_never_raises(value):
    try:
        raw = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return
    for fn in (validate_event, validate_item, validate_recommendation, validate_search_request):
        check_total(fn(raw))
    if isinstance(value, dict):
        check_total(validate_event(value))   # the dict path (adapters) too


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values | nasty_text, max_size=6))
def test_mutated_events_are_rejected_or_within_bounds(patch):
    obj = {**GOOD, **patch}
    try:
        raw = orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return
    got = both(raw)
    check_total(got)
    if isinstance(got, Event):
        check_event_bounds(got)


SEARCH = {"request_id": "r1", "user_id": "u1", "query": "running shoe", "k": 2, "ts": 1730000000000,
          "items": [{"item_id": "i1", "engine_score": 2.5}, {"item_id": "i2"}]}
item_values = st.dictionaries(st.sampled_from(["item_id", "engine_score", "other"]), json_values | nasty_text, max_size=3)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(list(SEARCH) + ["extra"]), json_values | nasty_text, max_size=4),
       st.lists(item_values | json_values, max_size=4))
def test_mutated_search_requests_are_rejected_or_a_permutable_page(patch, items):
    """A search request with any field replaced, or any item list, is refused naming a field, or is a page
    whose ids are unique, bounded and clean, whose scores are finite, and whose k fits it."""
    for obj in ({**SEARCH, **patch}, {**SEARCH, "items": items}):
        got = validate_search_request(orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS) if _dumpable(obj) else b"{")
        check_total(got)
        if isinstance(got, SearchRequest):
            assert len(set(got.items)) == len(got.items) >= 1 and 1 <= got.k <= len(got.items)
            assert all(1 <= len(i) <= MAX_ID_CHARS for i in got.items)
            assert all(s is None or math.isfinite(s) for s in got.engine_scores)
        else:
            assert got.field.split(".")[0] in set(SEARCH) | {"extra", "message", "v"}, got.reason


def _dumpable(obj) -> bool:
    try:
        orjson.dumps(obj)
        return True
    except (TypeError, orjson.JSONEncodeError):
        return False


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(GOOD)), st.integers(min_value=0, max_value=60), st.binary(min_size=0, max_size=4))
def test_truncated_and_spliced_bytes_never_raise(field, cut, junk):
    raw = orjson.dumps(GOOD)
    pos = raw.find(field.encode())
    got = both(raw[:pos + cut] + junk + raw[pos + cut:])
    check_total(got)
    if isinstance(got, Event):
        check_event_bounds(got)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(GOOD)), json_values)
def test_duplicate_keys_are_always_rejected(field, other):
    """`{"user_id": "u1", ..., "user_id": X}`: the last one would silently win; it is refused instead."""
    try:
        value = json.dumps(other, allow_nan=False).encode()
    except ValueError:
        return
    body = orjson.dumps(GOOD)[:-1] + b',"' + field.encode() + b'":' + value + b"}"
    got = both(body)
    assert isinstance(got, Rejected), got
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return          # e.g. an integer past 64 bits: refused as invalid JSON before keys are looked at
    assert "duplicate key" in got.reason, got


@pytest.mark.parametrize("raw,starts", [
    (None, "message: no value (a tombstone)"),
    (b"", "message: not valid JSON"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":[1],"ts":1730000000000}', "type: [1] is not one of"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":{"a":1},"ts":1730000000000}', "type: {'a': 1}"),
    (b'{"v":1.0,"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000}', "v: unsupported"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000,"price":1e308}', "price:"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000,"price":18446744073709551616}',
     "price:"),
    (b'{"event_id":"e","user_id":"u\\u0000x","item_id":"i","type":"view","ts":1730000000000}', "user_id: character U+0000"),
    (b'{"event_id":"e","user_id":"u\\u200bx","item_id":"i","type":"view","ts":1730000000000}', "user_id: character U+200B"),
    (b'{"event_id":"e","user_id":"u\\u202ex","item_id":"i","type":"view","ts":1730000000000}', "user_id: character U+202E"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000,"quantity":1000000000}', "quantity:"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000,"context":{"category":["x"]}}',
     "context.category: expected a string"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000,"context":{"a":{"b":1}}}',
     "context.a: expected a string, number"),
    (b'{"event_id":"e","user_id":"u","item_id":"i","type":"view","ts":1730000000000,"context":{"a":1,"a":2}}',
     "a: duplicate key"),
])
def test_known_poison_messages_are_rejections(raw, starts):
    got = validate_event(raw)
    assert isinstance(got, Rejected) and got.reason.startswith(starts), got


def test_long_offending_values_are_not_echoed():
    got = validate_event(orjson.dumps({**GOOD, "type": "x" * 10_000}))
    assert isinstance(got, Rejected) and len(got.reason) < 200


def test_ids_with_colons_braces_and_unicode_letters_are_fine():
    for uid in ("u1:aff", "{u1}", "50%", "Zoë", "用户"):
        got = validate_event(orjson.dumps({**GOOD, "user_id": uid}))
        assert isinstance(got, Event) and got.user_id == uid


def test_atheris_bounded_run(tmp_path):
    """A bounded coverage-guided fuzz of the validators (tests/fuzz_validate.py): no input may raise."""
    import subprocess
    import sys
    from pathlib import Path
    target = Path(__file__).with_name("fuzz_validate.py")
    out = subprocess.run([sys.executable, str(target), "-max_total_time=15", "-rss_limit_mb=2048",
                          f"-artifact_prefix={tmp_path}/"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    tail = out.stderr[-3000:]
    assert out.returncode == 0, tail
    assert "Done" in tail and "crash-" not in tail, tail


valid_ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
                    min_size=1, max_size=12) | st.integers(min_value=0, max_value=2 ** 40)
optional = st.fixed_dictionaries({}, optional={
    "v": st.just(1), "session_id": st.none() | valid_ids, "price": st.none() | st.integers(0, 10 ** 6)
    | st.floats(0, 1e6), "quantity": st.none() | st.integers(1, 50), "query": st.none() | st.text(max_size=8),
    "context": st.none() | st.dictionaries(st.sampled_from(["category", "brand", "page", "n", "ok"]),
                                           st.none() | st.text(min_size=1, max_size=6) | st.integers(-5, 5)
                                           | st.floats(-1, 1) | st.booleans(), max_size=4)})


@settings(max_examples=500, deadline=None)
@given(valid_ids, valid_ids, valid_ids, st.sampled_from(["view", "click", "add_to_cart", "purchase", "search"]),
       st.integers(min_value=631_152_000_000 - 10, max_value=4_102_444_800_000 + 10), optional,
       st.sampled_from([orjson.dumps, lambda o: json.dumps(o).encode(), lambda o: json.dumps(o, indent=1).encode()]))
def test_fast_path_agrees_on_well_formed_events(eid, uid, item, etype, ts, extra, dump):
    """Events close to valid, in compact, spaced and indented JSON, with unicode and integer ids and
    every optional field present, null or absent: the fast path and `validate_event` agree."""
    obj = {"event_id": eid, "user_id": uid, "item_id": item, "type": etype, "ts": ts, **extra}
    check_total(both(dump(obj)))


def test_fast_path_accepts_ordinary_events_without_falling_back(monkeypatch):
    """The fast path does the work for ordinary events (validate_event is not called for them), and
    hands everything unusual to it."""
    import schemas.fast as fast
    calls = []
    monkeypatch.setattr(fast, "validate_event", lambda raw: calls.append(raw) or validate_event(raw))
    ordinary = [GOOD, {k: GOOD[k] for k in ("event_id", "user_id", "item_id", "type", "ts")},
                {**GOOD, "session_id": None, "context": {"category": "hats", "n": 3, "x": None, "f": 0.5}}]
    for obj in ordinary:
        assert isinstance(fast.fast_validate_event(orjson.dumps(obj)), Event)
    assert calls == []
    unusual = [{**GOOD, "type": "search", "query": "red"}, {**GOOD, "user_id": 7}, {**GOOD, "ts": 1730000000},
               {**GOOD, "event_id": "a\u200bb"}, {**GOOD, "context": {"page": 'say ":" here'}}]
    for obj in unusual:
        fast.fast_validate_event(orjson.dumps(obj))
    assert len(calls) == len(unusual)
