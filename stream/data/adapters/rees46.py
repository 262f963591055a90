"""REES46 "eCommerce behavior data from multi category store" CSV (with header).

Columns: event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session
Mapping to Event v1:
  user_id -> user_id   product_id -> item_id   user_session -> session_id   price -> price
  event_time ("YYYY-MM-DD HH:MM:SS UTC") -> ts (ms)
  event_type view -> view, cart -> add_to_cart, purchase -> purchase;
  remove_from_cart has no v1 type: the line is reported as rejected (not silently dropped)
  category_code (dotted text, may be empty) -> context.category (falls back to category_id), brand -> context.brand
  event_id = "rees46:{user}:{product}:{event_type}:{event_time}:{user_session}" (content-derived: the
  five exact-duplicate rows of the 2019-Oct head dedupe; distinct rows stay distinct)
Items (first sighting of each product): title = "{brand} {category leaf}" (what the log has),
  category = category_code split on "." (or ["cat" + category_id]), brand, price.
"""
from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Iterator

from schemas import Rejected
from stream.data.adapters.base import LogSource

EVENT_TYPE = {"view": "view", "cart": "add_to_cart", "purchase": "purchase"}


def _ts(text: str) -> int:
    dt = datetime.strptime(text.replace(" UTC", ""), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


class Rees46Log(LogSource):
    name = "rees46"

    def _rows(self) -> Iterator[tuple[int, dict]]:
        with self._open_bytes() as fh:
            reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", errors="replace"))
            for n, row in enumerate(reader, 2):
                yield n, row

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        for n, row in self._rows():
            et = row.get("event_type")
            etype = EVENT_TYPE.get(et)
            if etype is None:
                yield n, Rejected(f"event_type: {et!r} has no Event v1 type (view, cart, purchase are mapped)")
                continue
            try:
                ts = _ts(row["event_time"])
            except (ValueError, KeyError, TypeError):
                yield n, Rejected(f"event_time: expected 'YYYY-MM-DD HH:MM:SS UTC', got {row.get('event_time')!r}")
                continue
            ev = {"event_id": f"rees46:{row['user_id']}:{row['product_id']}:{et}:{row['event_time']}:{row.get('user_session', '')}",
                  "user_id": row["user_id"], "item_id": row["product_id"], "type": etype, "ts": ts,
                  "context": {"category": row.get("category_code") or f"cat{row.get('category_id')}"}}
            if row.get("user_session"):
                ev["session_id"] = row["user_session"]
            if row.get("brand"):
                ev["context"]["brand"] = row["brand"]
            try:
                ev["price"] = float(row["price"])
            except (ValueError, KeyError, TypeError):
                pass
            yield n, ev

    def items(self) -> Iterator[dict]:
        seen = set()
        for _, row in self._rows():
            pid = row.get("product_id")
            if not pid or pid in seen:
                continue
            seen.add(pid)
            code = row.get("category_code") or ""
            cat = code.split(".") if code else [f"cat{row.get('category_id')}"]
            brand = row.get("brand") or None
            title = " ".join(p for p in (brand, cat[-1].replace("_", " ")) if p)
            item = {"item_id": pid, "title": title, "category": cat}
            if brand:
                item["brand"] = brand
            try:
                item["price"] = float(row["price"])
            except (ValueError, TypeError, KeyError):
                pass
            yield item
