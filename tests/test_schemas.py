"""Contracts: the fast validators and the JSON Schema documents agree, and every rejection names its field."""
import json
from pathlib import Path

import jsonschema
import orjson
import pytest

from schemas import Rejected, validate_event, validate_item, validate_recommendation

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
GOOD_EVENT = {"v": 1, "event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "add_to_cart",
              "ts": 1730000000000, "session_id": "s1", "price": 19.5, "quantity": 2, "context": {"page": "pdp"}}


def schema(name):
    return json.loads((SCHEMAS / f"{name}.v1.json").read_text())


def test_good_event_round_trips_and_matches_schema():
    ev = validate_event(orjson.dumps(GOOD_EVENT))
    assert not isinstance(ev, Rejected)
    assert ev.to_dict() == GOOD_EVENT
    jsonschema.validate(GOOD_EVENT, schema("event"))


@pytest.mark.parametrize("patch,field", [
    ({"price": -1}, "price"),
    ({"price": "abc"}, "price"),
    ({"ts": 1730000000}, "ts"),            # seconds, not ms
    ({"ts": "yesterday"}, "ts"),
    ({"type": "teleport"}, "type"),
    ({"event_id": None}, "event_id"),
    ({"user_id": ""}, "user_id"),
    ({"quantity": 0}, "quantity"),
    ({"context": [1]}, "context"),
    ({"colour": "red"}, "colour"),
    ({"v": 2}, "v"),
    ({"type": "search", "item_id": None}, "query"),
])
def test_bad_event_names_field_and_schema_agrees(patch, field):
    bad = {**GOOD_EVENT, **patch}
    got = validate_event(orjson.dumps(bad))
    assert isinstance(got, Rejected), got
    assert got.field == field, got.reason
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema("event"))


def test_missing_item_is_rejected_except_for_search():
    no_item = {k: v for k, v in GOOD_EVENT.items() if k != "item_id"}
    assert validate_event(orjson.dumps(no_item)).reason == "item_id: required field is missing"
    search = {**no_item, "type": "search", "query": "red shoes"}
    assert validate_event(orjson.dumps(search)).query == "red shoes"
    jsonschema.validate(search, schema("event"))


@pytest.mark.parametrize("raw,starts", [
    (b"{not json", "message: not valid JSON"),
    (b"[1, 2]", "message: expected a JSON object"),
    (b'{"event_id": "\xff\xfe"}', "message: invalid UTF-8 at byte"),
    (b'{"event_id": "' + b"x" * 1_000_000 + b'"}', "message: 1000016 bytes exceeds the 65536-byte limit"),
])
def test_malformed_bytes_are_rejections_not_exceptions(raw, starts):
    got = validate_event(raw)
    assert isinstance(got, Rejected) and got.reason.startswith(starts), got


def test_item_and_recommendation_contracts():
    item = {"v": 1, "item_id": "i1", "title": "Trail running shoe", "category": ["sports", "running"],
            "brand": "acme", "price": 89.0, "created_at": 1730000000000}
    it = validate_item(orjson.dumps(item))
    assert it.category_key == "sports/running" and it.to_dict() == item
    jsonschema.validate(item, schema("item"))
    assert validate_item({"item_id": "i2"}).field == "title"

    rec = {"v": 1, "recommendation_id": "rec:e1", "user_id": "u1", "trigger_event_id": "e1",
           "event_ts": 1730000000000,
           "items": [{"item_id": "i9", "score": 0.8, "source": "covisit", "sources": ["covisit", "trending"],
                      "scores": {"fallback": 0.8}}],
           "model_versions": {"scorer": "fallback-v1"}, "produced_at": 1730000000100}
    r = validate_recommendation(orjson.dumps(rec))
    assert r.items[0].item_id == "i9" and r.to_dict() == rec
    jsonschema.validate(rec, schema("recommendation"))
    bad = {**rec, "items": [{"item_id": "i9", "score": "high", "source": "covisit"}]}
    assert validate_recommendation(bad).reason.startswith("items[0].score:")
