"""`Item` v1: one catalog entry (upserted on the items topic). Schema: `item.v1.json`.

>>> it = validate_item({"item_id": "i1", "title": "Trail shoe", "category": ["shoes", "running"]})
>>> it.category_key
'shoes/running'
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from schemas._check import (
    Rejected, _Bad, _type_name, check_unknown, check_version, ident, load_object, number, req, text,
    timestamp_ms,
)

_FIELDS = frozenset({"v", "item_id", "title", "category", "brand", "price", "description", "created_at"})


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    title: str
    category: tuple[str, ...] = ()   # path from root to leaf, e.g. ("electronics", "smartphone")
    brand: str | None = None
    price: float | None = None
    description: str | None = None
    created_at: int | None = None    # ms since the epoch

    @property
    def category_key(self) -> str:
        return "/".join(self.category)

    @property
    def text(self) -> str:
        """What the content encoder reads."""
        parts = [self.title, " > ".join(self.category), self.brand or "", self.description or ""]
        return " | ".join(p for p in parts if p)

    def to_dict(self) -> dict:
        d = {"v": 1, "item_id": self.item_id, "title": self.title, "category": list(self.category)}
        for k in ("brand", "price", "description", "created_at"):
            val = getattr(self, k)
            if val is not None:
                d[k] = val
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def validate_item(raw: bytes | str | dict | None) -> Item | Rejected:
    """Parse and check one catalog entry; like `validate_event`, never raises on bad input."""
    try:
        obj = load_object(raw)
        check_version(obj)
        check_unknown(obj, _FIELDS)
        title = text(obj, "title", required=True, max_chars=1024)
        cat = obj.get("category", [])
        if isinstance(cat, str):
            cat = [c for c in cat.replace(">", "/").replace(".", "/").split("/") if c]
        if not isinstance(cat, list) or not all(isinstance(c, str) and c.strip() and "\x00" not in c for c in cat):
            raise _Bad(f"category: expected a list of non-empty strings, got {_type_name(cat)}")
        if sum(len(c) + 1 for c in cat) > 1024:
            raise _Bad("category: the path exceeds 1024 characters")
        req(obj, "item_id")
        return Item(
            item_id=ident(obj, "item_id"),
            title=title,
            category=tuple(cat),
            brand=text(obj, "brand", max_chars=256),
            price=number(obj, "price"),
            description=text(obj, "description"),
            created_at=timestamp_ms(obj, "created_at", required=False),
        )
    except _Bad as bad:
        return Rejected(str(bad))
