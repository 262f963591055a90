"""`Recommendation` v1: what the worker emits, keyed by user_id. Schema: `recommendation.v1.json`."""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from schemas._check import (
    Rejected, _Bad, _type_name, check_unknown, check_version, ident, load_object, req, timestamp_ms,
)

_FIELDS = frozenset({"v", "recommendation_id", "user_id", "trigger_event_id", "event_ts", "items",
                     "model_versions", "produced_at", "variant"})
_ITEM_FIELDS = frozenset({"item_id", "score", "source", "sources", "scores"})


@dataclass(frozen=True, slots=True)
class RankedItem:
    item_id: str
    score: float
    source: str                          # the candidate source that contributed most
    sources: tuple[str, ...] = ()        # every source that proposed the item
    scores: dict = field(default_factory=dict)  # per-component scores (fallback, transformer, ranker, ...)


@dataclass(frozen=True, slots=True)
class Recommendation:
    recommendation_id: str
    user_id: str
    trigger_event_id: str
    event_ts: int                        # event time of the trigger, ms
    items: tuple[RankedItem, ...]
    model_versions: dict                 # component -> version, e.g. {"scorer": "fallback-v1"}
    produced_at: int                     # wall clock, ms
    variant: str | None = None           # the A/B variant the user is in (absent outside an experiment)

    def to_dict(self) -> dict:
        return {
            "v": 1,
            "recommendation_id": self.recommendation_id,
            "user_id": self.user_id,
            "trigger_event_id": self.trigger_event_id,
            "event_ts": self.event_ts,
            "items": [
                {"item_id": it.item_id, "score": it.score, "source": it.source,
                 "sources": list(it.sources), "scores": it.scores}
                for it in self.items
            ],
            "model_versions": self.model_versions,
            "produced_at": self.produced_at,
            **({"variant": self.variant} if self.variant is not None else {}),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY)


def _variant(obj: dict) -> str | None:
    v = obj.get("variant")
    if v is not None and (not isinstance(v, str) or not v):
        raise _Bad(f"variant: expected a non-empty string, got {_type_name(v)}")
    return v


def validate_recommendation(raw: bytes | str | dict | None) -> Recommendation | Rejected:
    try:
        obj = load_object(raw)
        check_version(obj)
        check_unknown(obj, _FIELDS)
        items = req(obj, "items")
        if not isinstance(items, list):
            raise _Bad(f"items: expected a list, got {_type_name(items)}")
        ranked = []
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise _Bad(f"items[{i}]: expected an object, got {_type_name(it)}")
            extra = it.keys() - _ITEM_FIELDS
            if extra:
                raise _Bad(f"items[{i}].{sorted(extra)[0]}: unknown field")
            score = it.get("score")
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise _Bad(f"items[{i}].score: expected a number, got {_type_name(score)}")
            source = it.get("source")
            if not isinstance(source, str) or not source:
                raise _Bad(f"items[{i}].source: expected a non-empty string, got {_type_name(source)}")
            try:
                item_id = ident(it, "item_id")
            except _Bad as bad:
                raise _Bad(f"items[{i}].{bad}") from None
            sources, scores = it.get("sources") or [], it.get("scores") or {}
            if not isinstance(sources, list) or not all(isinstance(x, str) for x in sources):
                raise _Bad(f"items[{i}].sources: expected a list of strings")
            if not isinstance(scores, dict) or not all(type(x) in (int, float) for x in scores.values()):
                raise _Bad(f"items[{i}].scores: expected an object of name -> number")
            ranked.append(RankedItem(item_id, float(score), source, tuple(sources), dict(scores)))
        mv = req(obj, "model_versions")
        if not isinstance(mv, dict) or not all(isinstance(v, str) for v in mv.values()):
            raise _Bad("model_versions: expected an object of component -> version string")
        return Recommendation(
            recommendation_id=ident(obj, "recommendation_id"),
            user_id=ident(obj, "user_id"),
            trigger_event_id=ident(obj, "trigger_event_id"),
            event_ts=timestamp_ms(obj, "event_ts"),
            items=tuple(ranked),
            model_versions=mv,
            produced_at=timestamp_ms(obj, "produced_at"),
            variant=_variant(obj),
        )
    except _Bad as bad:
        return Rejected(str(bad))
