"""Taobao UserBehavior (Tianchi 649): `user_id,item_id,category_id,behavior_type,timestamp`, no header.

Mapping to Event v1:
  user_id -> user_id          item_id -> item_id          timestamp (unix s) -> ts (ms)
  behavior pv -> view, fav -> click (an engaged signal above a view, below a cart),
           cart -> add_to_cart, buy -> purchase
  category_id -> context.category
  event_id = "tb:{user}:{item}:{behavior}:{timestamp}" (content-derived: an exact duplicate row
  is the same event and is applied once).
No item text exists in this dataset, so it yields no Items.
"""
from __future__ import annotations

from typing import Iterator

from schemas import Rejected
from stream.data.adapters.base import LogSource, ms

BEHAVIOR = {"pv": "view", "fav": "click", "cart": "add_to_cart", "buy": "purchase"}


class TaobaoLog(LogSource):
    name = "taobao"

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        with self._open_bytes() as fh:
            for n, raw in enumerate(fh, 1):
                parts = raw.decode("utf-8", "replace").strip().split(",")
                if len(parts) != 5:
                    yield n, Rejected(f"line: expected 5 comma-separated fields, got {len(parts)}")
                    continue
                user, item, cat, behavior, ts = parts
                etype = BEHAVIOR.get(behavior)
                if etype is None:
                    yield n, Rejected(f"behavior_type: {behavior!r} is not one of pv, fav, cart, buy")
                    continue
                try:
                    ts_ms = ms(int(ts))
                except ValueError:
                    yield n, Rejected(f"timestamp: expected unix seconds, got {ts!r}")
                    continue
                yield n, {"event_id": f"tb:{user}:{item}:{behavior}:{ts}", "user_id": user, "item_id": item,
                          "type": etype, "ts": ts_ms, "context": {"category": cat}}
