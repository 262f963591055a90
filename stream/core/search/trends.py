"""Trends: what shoppers view, click, buy and search more of than before, in event time.

Per key (an item, a category, a normalised query) two exponentially decayed counts of its events:
    fast  time constant one window:               E[fast] = rate * window   (about "this window's count")
    slow  time constant `baseline_windows` windows: E[slow / B] = rate * window (its own recent baseline)
    rise  = (fast - slow / B) / sqrt(slow / B + 1)      a Poisson-style excess over its own baseline
A key is rising only with `min_support` events in its fast count: two views are not a trend. Decayed
counts need one float pair per key, no buckets, and are exact under any event order within their time
resolution; keys whose counts decayed below `prune_below` are forgotten.

>>> t = TrendTracker(window_s=60, baseline_windows=6, min_support=3)
>>> for s in range(0, 600, 10): t.add("item", "steady", s * 1000)
>>> for s in range(540, 600, 5): t.add("item", "new", s * 1000)
>>> [(k, round(rise, 1)) for k, rise, *_ in t.rising("item", 600_000, 2)]
[('new', 3.2), ('steady', 0.3)]
"""
from __future__ import annotations

import math
import re
from collections import defaultdict

KINDS = ("item", "category", "query")
_SPACE = re.compile(r"\s+")


def normalise_query(q: str) -> str:
    return _SPACE.sub(" ", q.strip().lower())[:200]


class TrendTracker:
    def __init__(self, window_s: float = 3600.0, baseline_windows: int = 6, min_support: float = 3.0,
                 prune_below: float = 0.05):
        self.window_ms = window_s * 1000.0
        self.B, self.min_support, self.prune_below = baseline_windows, min_support, prune_below
        self.now = 0
        self._c: dict[str, dict[str, list[float]]] = defaultdict(dict)    # kind -> key -> [fast, slow, ts]
        self._added = 0

    def add(self, kind: str, key: str, ts: int, weight: float = 1.0) -> None:
        c = self._c[kind].get(key)
        if c is None:
            self._c[kind][key] = [weight, weight, ts]
        else:
            dt = ts - c[2]
            if dt >= 0:                      # decay the stored counts to the newer event
                c[0] = c[0] * math.exp(-dt / self.window_ms) + weight
                c[1] = c[1] * math.exp(-dt / (self.B * self.window_ms)) + weight
                c[2] = ts
            else:                            # a late event: decayed to the stored time instead
                c[0] += weight * math.exp(dt / self.window_ms)
                c[1] += weight * math.exp(dt / (self.B * self.window_ms))
        self.now = max(self.now, ts)
        self._added += 1
        if self._added % 200_000 == 0:
            self.prune()

    def observe(self, events, category_of=None) -> None:
        """Events (schemas.Event): every event with an item counts for the item and its category
        (`category_of(item)`, None when unknown), every search for its normalised query."""
        for ev in events:
            if ev.type == "search" and ev.query:
                self.add("query", normalise_query(ev.query), ev.ts)
            elif ev.item_id:
                self.add("item", ev.item_id, ev.ts)
                cat = (ev.context or {}).get("category") or (category_of(ev.item_id) if category_of else None)
                if cat:
                    self.add("category", str(cat), ev.ts)

    def _at(self, c: list[float], now: int) -> tuple[float, float]:
        dt = max(0, now - c[2])
        return c[0] * math.exp(-dt / self.window_ms), c[1] * math.exp(-dt / (self.B * self.window_ms))

    def rising(self, kind: str, now: int | None = None, n: int = 10) -> list[tuple[str, float, float, float]]:
        """The `n` keys rising most at `now`: (key, rise, this window's count, baseline count per window)."""
        now = self.now if now is None else now
        out = []
        for key, c in self._c[kind].items():
            fast, slow = self._at(c, now)
            if fast < self.min_support:
                continue
            base = slow / self.B
            out.append((key, (fast - base) / math.sqrt(base + 1.0), fast, base))
        out.sort(key=lambda r: (-r[1], r[0]))
        return out[:n]

    def popular(self, kind: str, now: int | None = None, n: int = 10) -> list[tuple[str, float]]:
        """The `n` keys with the most events in about the last window (the fast count)."""
        now = self.now if now is None else now
        got = sorted(((k, self._at(c, now)[0]) for k, c in self._c[kind].items()), key=lambda r: (-r[1], r[0]))
        return got[:n]

    def prune(self) -> int:
        gone = 0
        for table in self._c.values():
            for key in [k for k, c in table.items() if self._at(c, self.now)[1] < self.prune_below]:
                del table[key]
                gone += 1
        return gone

    def snapshot(self, n: int = 20) -> dict:
        """What is published: per kind, the rising keys and the popular ones, at the newest event time."""
        return {"ts": self.now, "window_s": self.window_ms / 1000,
                **{kind: {"rising": [{"key": k, "rise": round(r, 3), "count": round(f, 2), "baseline": round(b, 2)}
                                     for k, r, f, b in self.rising(kind, n=n)],
                          "popular": [{"key": k, "count": round(f, 2)} for k, f in self.popular(kind, n=n)]}
                   for kind in KINDS}}

    def state(self) -> dict:
        return {"now": self.now, "counts": {k: dict(v) for k, v in self._c.items()}}

    def load(self, state: dict) -> None:
        self.now = int(state.get("now", 0))
        self._c = defaultdict(dict, {k: {key: list(c) for key, c in v.items()} for k, v in state["counts"].items()})
