"""Trends: what shoppers view, click, buy and search more of than before, in event time.

Per key (an item, a category, a normalised query) three exponentially decayed counts of its events, with
time constants a quarter window, one window and `baseline_windows` (B) windows:
    short, fast, slow      E[fast] = rate * window; slow / B is the key's own recent baseline per window
A key's **rise** is its expected growth over its own baseline in the next window:
    rise = predicted count in the next window - slow / B
and the prediction is learned, not chosen: at every window boundary each active key's counts become one
example, labelled at the next boundary with the events it actually got in that window; a least-squares
fit (ridge) over the last `memory` boundaries' examples (the keys with `min_support`: those it ranks), kept as sums (X'X, X'y: a few floats, so the
model is checkpointed with the counts) predicts the next count from (1, short, fast, slow / B). Until a
first boundary is labelled the rise is the Poisson-style excess (fast - slow / B) / sqrt(slow / B + 1).
A key rises only with `min_support` events in its fast count (two views are not a trend) and a positive rise. Keys whose
counts decayed below `prune_below` are forgotten.

>>> t = TrendTracker(window_s=60, baseline_windows=6, min_support=3)
>>> for s in range(0, 600, 10): t.add("item", "steady", s * 1000)
>>> for s in range(540, 600, 5): t.add("item", "new", s * 1000)
>>> [k for k, *_ in t.rising("item", 600_000, 2)][0]
'new'
"""
from __future__ import annotations

import math
import re
from collections import defaultdict, deque

import numpy as np

KINDS = ("item", "category", "query")
_SPACE = re.compile(r"\s+")
N_FEAT = 4


def normalise_query(q: str) -> str:
    return _SPACE.sub(" ", q.strip().lower())[:200]


def category_key(ev, category_of=None) -> str | None:
    """An event's category: the one its context names, else the catalog's (`category_of(item)`)."""
    cat = (ev.context or {}).get("category") or (category_of(ev.item_id) if category_of and ev.item_id else None)
    return str(cat) if cat else None


class TrendTracker:
    def __init__(self, window_s: float = 3600.0, baseline_windows: int = 6, min_support: float = 3.0,
                 prune_below: float = 0.05, memory: int = 48, ridge: float = 1.0):
        self.window_ms = window_s * 1000.0
        self.B, self.min_support, self.prune_below = baseline_windows, min_support, prune_below
        self.taus = (self.window_ms / 4, self.window_ms, self.window_ms * baseline_windows)
        self.memory, self.ridge = memory, ridge
        self.now = 0
        self.boundary: int | None = None                               # index of the window being counted
        self._c: dict[str, dict[str, list[float]]] = defaultdict(dict)  # kind -> key -> [short, fast, slow, ts, cur]
        self._pending: dict[str, dict[str, list[float]]] = defaultdict(dict)   # features at the last boundary
        self._sums: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.memory))  # per boundary (X'X, X'y)
        self.weights: dict[str, np.ndarray] = {}
        self.counted: dict[str, float] = defaultdict(float)             # kind -> events counted, ever

    # ---- counting -------------------------------------------------------------------------------------------
    def advance(self, ts: int) -> None:
        """Event time is `ts`: close every window that ended by then."""
        w = int(ts // self.window_ms)
        if self.boundary is None:
            self.boundary = w
        while w > self.boundary:
            self.tick()

    def add(self, kind: str, key: str, ts: int, weight: float = 1.0) -> None:
        self.advance(ts)
        self.now = max(self.now, ts)
        self.counted[kind] += weight
        c = self._c[kind].get(key)
        if c is None:
            self._c[kind][key] = [weight, weight, weight, ts, weight]
            return
        dt = ts - c[3]
        if dt >= 0:                               # decay the stored counts to the newer event
            for n, tau in enumerate(self.taus):
                c[n] = c[n] * math.exp(-dt / tau) + weight
            c[3] = ts
        else:                                     # a late event: decayed to the stored time instead
            for n, tau in enumerate(self.taus):
                c[n] += weight * math.exp(dt / tau)
        c[4] += weight

    def observe(self, events, category_of=None) -> None:
        """Events (schemas.Event): every event with an item counts for the item and its category
        (`category_of(item)`, None when unknown), every search for its normalised query."""
        for ev in events:
            if ev.type == "search" and ev.query:
                self.add("query", normalise_query(ev.query), ev.ts)
            elif ev.item_id:
                self.add("item", ev.item_id, ev.ts)
                cat = category_key(ev, category_of)
                if cat:
                    self.add("category", cat, ev.ts)

    def _at(self, c: list[float], now: int) -> np.ndarray:
        dt = max(0.0, now - c[3])
        s, f, b = (c[n] * math.exp(-dt / tau) for n, tau in enumerate(self.taus))
        return np.array([1.0, s, f, b / self.B])

    # ---- learning at window boundaries ---------------------------------------------------------------------
    def tick(self) -> None:
        """Close the window being counted: label the previous boundary's examples with its counts, refit,
        and record every active key's features at this boundary."""
        t = (self.boundary + 1) * self.window_ms
        for kind, table in self._c.items():
            pend = self._pending[kind]
            if pend:
                X = np.array(list(pend.values()))
                y = np.array([table[k][4] if k in table else 0.0 for k in pend])
                self._sums[kind].append((X.T @ X, X.T @ y))
                self._fit(kind)
            feats = ((k, self._at(c, t)) for k, c in table.items())     # examples from the keys it ranks
            self._pending[kind] = {k: x.tolist() for k, x in feats if x[2] >= self.min_support}
            for c in table.values():
                c[4] = 0.0
        self.boundary += 1
        if self.boundary % 4 == 0:
            self.prune(int(t))

    def _fit(self, kind: str) -> None:
        """The ridge solution over the kept boundaries' sums: `weights[kind]` is derived from them alone."""
        sums = self._sums[kind]
        if sums:
            xtx = sum(a for a, _ in sums) + self.ridge * np.eye(N_FEAT)
            self.weights[kind] = np.linalg.solve(xtx, sum(b for _, b in sums))

    def rising(self, kind: str, now: int | None = None, n: int = 10) -> list[tuple[str, float, float, float]]:
        """The `n` keys rising most at `now`: (key, rise, fast count, baseline count per window)."""
        now = self.now if now is None else now
        w = self.weights.get(kind)
        out = []
        for key, c in self._c[kind].items():
            x = self._at(c, now)
            if x[2] < self.min_support:
                continue
            rise = float(x @ w - x[3]) if w is not None else float((x[2] - x[3]) / math.sqrt(x[3] + 1.0))
            if rise > 0:                       # a key predicted to fall is not rising, however busy
                out.append((key, rise, float(x[2]), float(x[3])))
        out.sort(key=lambda r: (-r[1], r[0]))
        return out[:n]

    def popular(self, kind: str, now: int | None = None, n: int = 10) -> list[tuple[str, float]]:
        """The `n` keys with the most events in about the last window (the fast count)."""
        now = self.now if now is None else now
        got = sorted(((k, float(self._at(c, now)[2])) for k, c in self._c[kind].items()), key=lambda r: (-r[1], r[0]))
        return got[:n]

    def prune(self, now: int | None = None) -> int:
        now = self.now if now is None else now
        gone = 0
        for table in self._c.values():
            for key in [k for k, c in table.items() if self._at(c, now)[3] * self.B < self.prune_below and c[4] == 0]:
                del table[key]
                gone += 1
        return gone

    # ---- publishing and checkpoints -------------------------------------------------------------------------
    def snapshot(self, n: int = 20) -> dict:
        """What is published: per kind, the rising keys and the popular ones, at the newest event time."""
        return {"ts": self.now, "window_s": self.window_ms / 1000, "learned": sorted(self.weights),
                **{kind: {"rising": [{"key": k, "rise": round(r, 3), "count": round(f, 2), "baseline": round(b, 2)}
                                     for k, r, f, b in self.rising(kind, n=n)],
                          "popular": [{"key": k, "count": round(f, 2)} for k, f in self.popular(kind, n=n)]}
                   for kind in KINDS}}

    def state(self) -> dict:
        return {"now": self.now, "boundary": self.boundary, "counted": dict(self.counted), "counts": {k: dict(v) for k, v in self._c.items()},
                "pending": {k: dict(v) for k, v in self._pending.items()},
                "sums": {k: [(a.tolist(), b.tolist()) for a, b in v] for k, v in self._sums.items()}}

    def load(self, state: dict) -> None:
        self.now, self.boundary = int(state["now"]), state["boundary"]
        self.counted = defaultdict(float, state.get("counted", {}))
        self._c = defaultdict(dict, {k: {key: list(c) for key, c in v.items()} for k, v in state["counts"].items()})
        self._pending = defaultdict(dict, {k: dict(v) for k, v in state["pending"].items()})
        self._sums = defaultdict(lambda: deque(maxlen=self.memory))
        self.weights = {}
        for kind, sums in state["sums"].items():
            self._sums[kind].extend((np.array(a), np.array(b)) for a, b in sums)
            self._fit(kind)
