"""OTTO session JSONL: one session a line, `{"session": int, "events": [{"aid", "ts" (ms), "type"}]}`.

Mapping to Event v1:
  session -> user_id and session_id (OTTO sessions are anonymous)   aid -> item_id   ts -> ts (ms)
  type clicks -> click, carts -> add_to_cart, orders -> purchase
  event_id = "otto:{session}:{index in session}"
OTTO has no item metadata, so it yields no Items. Events come out session by session; replay
sorts by ts.
"""
from __future__ import annotations

from typing import Iterator

import orjson

from schemas import Rejected
from stream.data.adapters.base import LogSource

EVENT_TYPE = {"clicks": "click", "carts": "add_to_cart", "orders": "purchase"}


class OttoLog(LogSource):
    name = "otto"

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        with self._open_bytes() as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    sess = orjson.loads(raw)
                    sid = str(sess["session"])
                    evs = sess["events"]
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    yield n, Rejected(f"line: expected {{'session', 'events'}} JSON ({exc})")
                    continue
                for i, e in enumerate(evs):
                    etype = EVENT_TYPE.get(e.get("type"))
                    if etype is None:
                        yield n, Rejected(f"events[{i}].type: {e.get('type')!r} is not clicks, carts or orders")
                        continue
                    yield n, {"event_id": f"otto:{sid}:{i}", "user_id": sid, "session_id": sid,
                              "item_id": str(e.get("aid")), "type": etype, "ts": e.get("ts")}
