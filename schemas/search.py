"""The search re-rank request (v1): what a shop sends to have its engine's result page reordered for a user,
over HTTP (`POST /v1/search/rerank`) or on the requests topic (`RECSTREAM_SEARCH_REQUESTS_TOPIC`, where
`request_id` is required: the reply on the results topic carries it). JSON Schema: `search_request.v1.json`.

>>> r = validate_search_request(b'{"user_id": "u1", "query": "running shoe", "items": [{"item_id": "i1"}, {"item_id": "i2", "engine_score": 3.5}]}')
>>> r.items, r.engine_scores, r.k
(['i1', 'i2'], [None, 3.5], 2)
>>> validate_search_request(b'{"user_id": "u1", "query": "x", "items": [{"item_id": "i1"}, {"item_id": "i1"}]}').reason
'items.1.item_id: i1 appears twice in the page'
>>> validate_search_request(b'{"user_id": "u1", "query": "x", "items": [{"engine_score": 1}]}').reason
'items.0.item_id: required field is missing'
"""
from __future__ import annotations

from dataclasses import dataclass

from schemas._check import (
    Rejected,
    _Bad,
    _type_name,
    check_unknown,
    check_version,
    ident,
    integer,
    load_object,
    number,
    req,
    text,
    timestamp_ms,
)

MAX_PAGE = 500
_FIELDS = frozenset({"v", "request_id", "user_id", "query", "items", "k", "ts"})
_ITEM_FIELDS = frozenset({"item_id", "engine_score"})


@dataclass(frozen=True)
class SearchRequest:
    user_id: str
    query: str
    items: list[str]                      # the engine's order
    engine_scores: list[float | None]
    k: int                                # places re-ranked (the rest follow in the engine's order)
    request_id: str | None = None
    ts: int | None = None                 # event time of the search (default: the store's clock)


def _in(prefix: str, bad: _Bad) -> _Bad:
    return _Bad(f"{prefix}.{bad}")


def validate_search_request(raw: bytes | str | dict | None, *, need_id: bool = False) -> SearchRequest | Rejected:
    try:
        obj = load_object(raw)
        check_version(obj)
        check_unknown(obj, _FIELDS)
        query = text(obj, "query", required=True, max_chars=1024)
        items = req(obj, "items")
        if not isinstance(items, list):
            raise _Bad(f"items: expected a list of {{item_id, engine_score?}}, got {_type_name(items)}")
        if not 1 <= len(items) <= MAX_PAGE:
            raise _Bad(f"items: expected 1..{MAX_PAGE} items, got {len(items)}")
        ids, scores, seen = [], [], set()
        for n, it in enumerate(items):
            if not isinstance(it, dict):
                raise _Bad(f"items.{n}: expected an object {{item_id, engine_score?}}, got {_type_name(it)}")
            try:
                check_unknown(it, _ITEM_FIELDS)
                iid = ident(it, "item_id")
                score = number(it, "engine_score", minimum=-1e12, maximum=1e12)
            except _Bad as bad:
                raise _in(f"items.{n}", bad) from None
            if iid in seen:
                raise _Bad(f"items.{n}.item_id: {iid} appears twice in the page")
            seen.add(iid)
            ids.append(iid)
            scores.append(score)
        k = integer(obj, "k", minimum=1, maximum=MAX_PAGE)
        return SearchRequest(user_id=ident(obj, "user_id"), query=query, items=ids, engine_scores=scores,
                             k=min(k or len(ids), len(ids)), request_id=ident(obj, "request_id", required=need_id),
                             ts=timestamp_ms(obj, "ts", required=False))
    except _Bad as bad:
        return Rejected(str(bad))
