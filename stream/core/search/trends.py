"""Trends: what shoppers view, click, buy and search more of than before, in event time.

Per key (an item, a category, a normalised query): three exponentially decayed counts (time constants a
quarter window, one window and `baseline_windows` (B) windows), the exact count of the window being counted,
and the exact counts of the last B closed windows. A key's **baseline** is its mean count per window over
those B windows (fewer while the tracker has seen fewer), its **growth** in a window that count minus the
baseline, and the trends answer: which keys will grow most in the next window?

Everything that answers it is learned from the stream at window boundaries, nothing is chosen:
  * the next count: lambda = b + a1 (last - b) + a2 (recent - b), where b is the baseline, `last` the last
    window's count and `recent` the rate of the last quarter window scaled to a window (4 x the short decayed
    count): between reverting to its own mean (a = 0) and persisting (a1 = 1) or going on (a2 > 0). At every
    boundary each key with `min_support` gets an example, labelled at the next boundary with the events it
    actually got; (a1, a2) is the least-squares fit over the last `memory` boundaries, kept as sums (X'X,
    X'y: a few floats, so the model is checkpointed with the counts) and shrunk towards persistence (1, 0),
    the forecast it makes before it has seen anything;
  * how far counts scatter around lambda: var = lambda + alpha lambda^2 (Poisson, over-dispersed), alpha by
    the method of moments from the same examples' residuals;
  * the bar to clear: T, the growth of the `top_n`-th key that grew most, as a share of all the events in
    its window (averaged over the past boundaries), times the events of the last window.
A key's **rise** is its expected growth (lambda - baseline); the keys called **rising** are ranked by p, the
probability that their growth reaches T (P[N >= ceil(T + baseline)] for N ~ Normal(lambda, var) with a
continuity correction): the keys most likely to be among the `top_n` that grow most. A busy key's count
scatters more, so in a quiet hour the list leans to busy keys; in a burst the burst leads it. Until the first
boundary is labelled the rise is the Poisson-style excess (fast - slow / B) / sqrt(slow / B + 1) and only
keys with a positive rise are listed. A key is ranked only with `min_support` events in its one-window count
(two views are not a trend). Keys whose counts decayed below `prune_below` are forgotten.

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
N_FEAT = 2
PRIOR = np.array([1.0, 0.0])                    # persistence: the next window is like the last
STATE_VERSION = 3
SHORT, FAST, SLOW, TS, CUR, HIST = range(6)     # a key's row: decayed counts, last event time, exact counts


def normalise_query(q: str) -> str:
    return _SPACE.sub(" ", q.strip().lower())[:200]


def category_key(ev, category_of=None) -> str | None:
    """An event's category: the one its context names, else the catalog's (`category_of(item)`)."""
    cat = (ev.context or {}).get("category") or (category_of(ev.item_id) if category_of and ev.item_id else None)
    return str(cat) if cat else None


def _top_growth(growth, n: int) -> float | None:
    """The growth of the n-th key that grew most (None when no key grew)."""
    top = sorted((g for g in growth if g > 0), reverse=True)[:n]
    return top[-1] if top else None


class TrendTracker:
    def __init__(self, window_s: float = 3600.0, baseline_windows: int = 6, min_support: float = 3.0,
                 prune_below: float = 0.05, memory: int = 48, ridge: float = 1.0, top_n: int = 10):
        self.window_ms = window_s * 1000.0
        self.B, self.min_support, self.prune_below = baseline_windows, min_support, prune_below
        self.taus = (self.window_ms / 4, self.window_ms, self.window_ms * baseline_windows)
        self.memory, self.ridge, self.top_n = memory, ridge, top_n
        self.now = 0
        self.boundary: int | None = None                               # index of the window being counted
        self.closed = 0                                                # windows closed since counting began
        self._c: dict[str, dict[str, list[float]]] = defaultdict(dict)  # kind -> key -> row (SHORT..HIST+B)
        self._pending: dict[str, dict[str, list[float]]] = defaultdict(dict)   # features at the last boundary
        self._sums: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.memory))  # per boundary (X'X, X'y)
        self._spread: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.memory))  # (sum r^2 - lam, sum lam^2)
        self._bar: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.memory))  # T / volume per boundary
        self.volume: dict[str, float] = defaultdict(float)               # events in the last closed window
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
            self._c[kind][key] = [weight, weight, weight, ts, weight] + [0.0] * self.B
            return
        dt = ts - c[TS]
        if dt >= 0:                               # decay the stored counts to the newer event
            for n, tau in enumerate(self.taus):
                c[n] = c[n] * math.exp(-dt / tau) + weight
            c[TS] = ts
        else:                                     # a late event: decayed to the stored time instead
            for n, tau in enumerate(self.taus):
                c[n] += weight * math.exp(dt / tau)
        c[CUR] += weight

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

    def baseline(self, c: list[float]) -> float:
        """The key's mean count per window over the last B closed windows (as many as were closed)."""
        return self._closed_at(c, None)[1]

    def _closed_at(self, c: list[float], now: int | None) -> tuple[float, float]:
        """(the last closed window's count, the baseline) as of `now`: windows that ended after the newest
        event are closed here too (the counted one with what it got, later ones empty)."""
        k = 0 if now is None or self.boundary is None else max(0, int(now // self.window_ms) - self.boundary)
        hist = ([0.0] * (k - 1) + [c[CUR]] if k else []) + c[HIST:HIST + self.B]
        m = min(self.B, self.closed + k)
        return hist[0], (sum(hist[:m]) / m if m else 0.0)

    def _at(self, c: list[float], now: int) -> tuple[np.ndarray, float, float, float]:
        """(x = (last - b, recent - b), b, the one-window decayed count, the B-window decayed count / B)."""
        dt = max(0.0, now - c[TS])
        s, f, slow = (c[n] * math.exp(-dt / tau) for n, tau in enumerate(self.taus))
        last, b = self._closed_at(c, now)
        return np.array([last - b, 4.0 * s - b]), b, f, slow / self.B

    # ---- learning at window boundaries ---------------------------------------------------------------------
    def tick(self) -> None:
        """Close the window being counted: label the previous boundary's examples with its counts, learn the
        fit, the spread and the bar from them, and record every supported key's features at this boundary."""
        t = (self.boundary + 1) * self.window_ms
        for kind, table in self._c.items():
            pend = self._pending[kind]
            if pend:
                rows = np.array(list(pend.values()))
                X, base = rows[:, :N_FEAT], rows[:, N_FEAT]
                y = np.array([table[k][CUR] if k in table else 0.0 for k in pend]) - base
                w = self.weights.get(kind)
                if w is not None:                 # the spread of the counts around what was predicted
                    lam = np.maximum(base + X @ w, 0.0)
                    self._spread[kind].append((float(((y + base - lam) ** 2 - lam).sum()), float((lam ** 2).sum())))
                self._sums[kind].append((X.T @ X, X.T @ y))
                self._fit(kind)
            volume = sum(c[CUR] for c in table.values())
            if self.closed and volume > 0:       # the growth the top_n-th grower reached, per event
                bar = _top_growth((c[CUR] - self.baseline(c) for c in table.values()), self.top_n)
                if bar is not None:
                    self._bar[kind].append(bar / volume)
            self.volume[kind] = volume
            for c in table.values():             # the window closes: its count joins the history
                c[HIST + 1:HIST + self.B] = c[HIST:HIST + self.B - 1]
                c[HIST], c[CUR] = c[CUR], 0.0
        self.boundary += 1
        self.closed += 1
        for kind, table in self._c.items():
            feats = ((k, self._at(c, t)) for k, c in table.items())
            self._pending[kind] = {k: [*x.tolist(), b] for k, (x, b, f, _) in feats if f >= self.min_support}
        if self.boundary % 4 == 0:
            self.prune(int(t))

    def _fit(self, kind: str) -> None:
        """The ridge solution over the kept boundaries' sums: `weights[kind]` is derived from them alone."""
        sums = self._sums[kind]
        if sums:
            xtx = sum(a for a, _ in sums) + self.ridge * np.eye(N_FEAT)
            self.weights[kind] = np.linalg.solve(xtx, sum(b for _, b in sums) + self.ridge * PRIOR)

    def _alpha(self, kind: str) -> float:
        spread = self._spread[kind]
        den = sum(b for _, b in spread)
        return max(0.0, sum(a for a, _ in spread) / den) if den > 0 else 0.0

    def rising(self, kind: str, now: int | None = None, n: int = 10) -> list[tuple[str, float, float, float, float | None]]:
        """The `n` keys most likely to grow most in the next window at `now`: (key, rise (expected growth),
        one-window count, baseline per window, p (None until a bar was learned))."""
        now = self.now if now is None else now
        w, bars = self.weights.get(kind), self._bar[kind]
        bar = sum(bars) / len(bars) * self.volume[kind] if bars else None
        alpha = self._alpha(kind)
        out = []
        for key, c in self._c[kind].items():
            x, b, f, slow = self._at(c, now)
            if f < self.min_support:
                continue
            if w is None:                        # nothing labelled yet: the excess over the decayed baseline
                rise, p = float((f - slow) / math.sqrt(slow + 1.0)), None
            else:
                lam = max(b + float(x @ w), 0.0)
                rise, p = lam - b, None
                if bar is not None:
                    need = math.ceil(bar + b - 1e-9) - 0.5       # N >= ceil(T + baseline)
                    sd = math.sqrt(lam + alpha * lam * lam) or 1e-9
                    p = 0.5 * math.erfc((need - lam) / (sd * math.sqrt(2.0)))
            if p is not None or rise > 0:        # without a bar, a key predicted to fall is not rising
                out.append((key, rise, f, b, p))
        out.sort(key=lambda r: (-(r[4] if r[4] is not None else 0.0), -r[1], r[0]))
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
            for key in [k for k, c in table.items() if self._at(c, now)[3] * self.B < self.prune_below and c[CUR] == 0]:
                del table[key]
                gone += 1
        return gone

    # ---- publishing and checkpoints -------------------------------------------------------------------------
    def snapshot(self, n: int = 20) -> dict:
        """What is published: per kind, the rising keys and the popular ones, at the newest event time."""
        def _r(v):
            return None if v is None else round(v, 3)
        return {"ts": self.now, "window_s": self.window_ms / 1000, "learned": sorted(self.weights),
                **{kind: {"rising": [{"key": k, "rise": round(r, 3), "p": _r(p), "count": round(f, 2),
                                      "baseline": round(b, 2)} for k, r, f, b, p in self.rising(kind, n=n)],
                          "popular": [{"key": k, "count": round(f, 2)} for k, f in self.popular(kind, n=n)]}
                   for kind in KINDS}}

    def state(self) -> dict:
        return {"version": STATE_VERSION, "now": self.now, "boundary": self.boundary, "closed": self.closed,
                "counted": dict(self.counted), "counts": {k: dict(v) for k, v in self._c.items()},
                "pending": {k: dict(v) for k, v in self._pending.items()},
                "sums": {k: [(a.tolist(), b.tolist()) for a, b in v] for k, v in self._sums.items()},
                "spread": {k: list(v) for k, v in self._spread.items()},
                "bar": {k: list(v) for k, v in self._bar.items()}, "volume": dict(self.volume)}

    def load(self, state: dict) -> None:
        """Restore a checkpoint. One of an older layout keeps its counts (padded with an empty history) and
        its event time; what it learned is learned again from the next boundaries."""
        same = state.get("version") == STATE_VERSION
        self.now, self.boundary = int(state["now"]), state["boundary"]
        self.closed = int(state.get("closed", 0))
        self.counted = defaultdict(float, state.get("counted", {}))
        width = HIST + self.B
        self._c = defaultdict(dict, {k: {key: (list(c) + [0.0] * width)[:width] for key, c in v.items()}
                                     for k, v in state["counts"].items()})
        self._pending = defaultdict(dict, {k: dict(v) for k, v in state["pending"].items()} if same else {})
        self._sums = defaultdict(lambda: deque(maxlen=self.memory))
        self._spread = defaultdict(lambda: deque(maxlen=self.memory))
        self._bar = defaultdict(lambda: deque(maxlen=self.memory))
        self.weights = {}
        self.volume = defaultdict(float, state.get("volume", {}) if same else {})
        if not same:
            return
        for kind, sums in state["sums"].items():
            self._sums[kind].extend((np.array(a), np.array(b)) for a, b in sums)
            self._fit(kind)
        for kind, v in state.get("spread", {}).items():
            self._spread[kind].extend(tuple(x) for x in v)
        for kind, v in state.get("bar", {}).items():
            self._bar[kind].extend(v)
