"""Trends: what shoppers view, click, buy and search more of than before, in event time.

Per key (an item, a category, a normalised query): three exponentially decayed counts (time constants a
quarter window, one window and `baseline_windows` (B) windows), the exact count of the window being counted,
and the exact counts of the last B closed windows. A key's **baseline** is its mean count per window over
those B windows (fewer while the tracker has seen fewer), its **growth** in a window that count minus the
baseline, its **rise** the last window's count minus the baseline, and the trends answer: which keys will
grow most in the next window?

That is learned from the stream at window boundaries, nothing is chosen on a log:
  * at every boundary each key with `min_support` events in about the last window gets a row of features
    (log counts of the last two windows and of the baseline, the rise over sqrt(baseline + 1), the rate of
    the last quarter window, and the last count times the change of the whole kind's volume: in a ramp
    the busy keys grow most); at the next boundary the row is labelled: is the key among the `top_n` that
    grew most (a tie with the `top_n`-th counts)?
  * a logistic model over the last `memory` boundaries' rows (all positives, up to `negatives` sampled
    negatives each), shrunk towards the **prior**, the order by last window's count: a tracker that has
    learned nothing calls what was busiest, the strongest simple rule (docs/search.md);
  * **the gate**: at each boundary both orders' calls are scored against what happened; the learned one
    ranks only while it has called more of the growers than the prior over the last `gate` boundaries.
The keys called **rising** are ranked by that score (p, the learned chance, once the model ranks).
A key is ranked only with `min_support` events in the last window or the one being counted (two views
are not a trend).
Keys whose counts decayed below `prune_below` are forgotten.

>>> t = TrendTracker(window_s=60, baseline_windows=6, min_support=3)
>>> for s in range(0, 600, 10): t.add("item", "steady", s * 1000)
>>> for s in range(540, 600, 5): t.add("item", "new", s * 1000)
>>> [k for k, *_ in t.rising("item", 600_000, 2)]
['new', 'steady']
"""
from __future__ import annotations

import math
import re
from collections import defaultdict, deque

import numpy as np

KINDS = ("item", "category", "query")
_SPACE = re.compile(r"\s+")
PRIOR = np.array([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])    # the order by last window's count
STATE_VERSION = 4
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


def _features(last: float, b: float, prev: float, short: float, ramp: float) -> list[float]:
    """A key's row (rounded, so a restored checkpoint refits to the same weights)."""
    row = (1.0, math.log1p(last), math.log1p(b), math.log1p(prev), ramp * math.log1p(last),
           (last - b) / math.sqrt(b + 1.0), math.log1p(4.0 * short))
    return [round(v, 4) for v in row]


def _called(scores: np.ndarray, keys: list[str], n: int) -> list[int]:
    """Indices of the n best scores (ties by key)."""
    return sorted(range(len(keys)), key=lambda i: (-scores[i], keys[i]))[:n]


class TrendTracker:
    def __init__(self, window_s: float = 3600.0, baseline_windows: int = 6, min_support: float = 3.0,
                 prune_below: float = 0.05, memory: int = 48, ridge: float = 1.0, top_n: int = 10,
                 negatives: int = 100, gate: int = 12):
        self.window_ms = window_s * 1000.0
        self.B, self.min_support, self.prune_below = baseline_windows, min_support, prune_below
        self.taus = (self.window_ms / 4, self.window_ms, self.window_ms * baseline_windows)
        self.memory, self.ridge, self.top_n, self.negatives, self.gate = memory, ridge, top_n, negatives, gate
        self.now = 0
        self.boundary: int | None = None                               # index of the window being counted
        self.closed = 0                                                # windows closed since counting began
        self._c: dict[str, dict[str, list[float]]] = defaultdict(dict)  # kind -> key -> row (SHORT..HIST+B)
        self._pending: dict[str, dict[str, list[float]]] = defaultdict(dict)   # features at the last boundary
        self._examples: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.memory))  # (rows, labels)
        self._gate: dict[str, deque] = defaultdict(lambda: deque(maxlen=self.gate))  # (learned hits, prior hits)
        self.volume: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])   # events: last closed window, the one before
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
        return self._closed_at(c, None)[2]

    def _closed_at(self, c: list[float], now: int | None) -> tuple[float, float, float, float]:
        """(the last closed window's count, the one before, the baseline, the support: the events of the last
        closed window or of the one being counted, whichever has more) as of `now`: windows that ended after
        the newest event are closed here too (the counted one with what it got, later ones empty)."""
        k = 0 if now is None or self.boundary is None else max(0, int(now // self.window_ms) - self.boundary)
        hist = ([0.0] * (k - 1) + [c[CUR]] if k else []) + c[HIST:HIST + self.B]
        m = min(self.B, self.closed + k)
        return hist[0], (hist[1] if len(hist) > 1 else 0.0), (sum(hist[:m]) / m if m else 0.0), \
            max(hist[0], 0.0 if k else c[CUR])

    def _decayed(self, c: list[float], now: int) -> tuple[float, float, float]:
        """The key's decayed counts at `now`: (quarter window, one window, B windows / B)."""
        dt = max(0.0, now - c[TS])
        s, f, slow = (c[n] * math.exp(-dt / tau) for n, tau in enumerate(self.taus))
        return s, f, slow / self.B

    def _supported(self, kind: str, now: int):
        """(key, feature row, rise, one-window decayed count, baseline) of every key with `min_support`."""
        v1, v2 = self.volume[kind]
        ramp = math.log((v1 + 1.0) / (v2 + 1.0))
        for key, c in self._c[kind].items():
            last, prev, b, sup = self._closed_at(c, now)
            if sup >= self.min_support:
                s, f, _ = self._decayed(c, now)
                yield key, _features(last, b, prev, s, ramp), last - b, f, b

    # ---- learning at window boundaries ---------------------------------------------------------------------
    def tick(self) -> None:
        """Close the window being counted: label the previous boundary's rows with its growth, score both
        orders' calls for the gate, refit; then record every supported key's row at this boundary."""
        t = (self.boundary + 1) * self.window_ms
        for kind, table in self._c.items():
            growth = {k: c[CUR] - self.baseline(c) for k, c in table.items()}
            bar, pend = _top_growth(growth.values(), self.top_n), self._pending[kind]
            if pend and bar is not None:
                self._label(kind, pend, growth, bar)
            volume = sum(c[CUR] for c in table.values())
            self.volume[kind] = [volume, self.volume[kind][0]]
            for c in table.values():             # the window closes: its count joins the history
                c[HIST + 1:HIST + self.B] = c[HIST:HIST + self.B - 1]
                c[HIST], c[CUR] = c[CUR], 0.0
        self.boundary += 1
        self.closed += 1
        for kind in self._c:
            self._pending[kind] = {key: row for key, row, *_ in self._supported(kind, t)}
        if self.boundary % 4 == 0:
            self.prune(int(t))

    def _label(self, kind: str, pend: dict, growth: dict, bar: float) -> None:
        keys = list(pend)
        X = np.array([pend[k] for k in keys])
        y = np.array([growth.get(k, 0.0) >= bar for k in keys], dtype=float)
        n, w = self.top_n, self.weights.get(kind)
        prior_hits = y[_called(X @ PRIOR, keys, n)].sum() / n
        self._gate[kind].append((None if w is None else float(y[_called(X @ w, keys, n)].sum() / n), float(prior_hits)))
        neg = np.flatnonzero(y == 0)
        if len(neg) > self.negatives:            # a fixed sample per boundary: a replay learns the same
            neg = np.random.default_rng(self.boundary).choice(neg, self.negatives, replace=False)
        take = np.sort(np.concatenate([np.flatnonzero(y == 1), neg]))
        self._examples[kind].append((X[take].tolist(), y[take].tolist()))
        self._fit(kind)

    def _fit(self, kind: str) -> None:
        """The logistic model over the kept boundaries' rows, shrunk towards the prior order."""
        ex = self._examples[kind]
        rows = [r for X, _ in ex for r in X]
        if not rows:
            return
        from scipy.optimize import minimize
        X, y = np.array(rows), np.array([v for _, Y in ex for v in Y])

        def loss(w):
            z = X @ w
            d = w - PRIOR
            grad = X.T @ (0.5 * (1.0 + np.tanh(0.5 * z)) - y) + self.ridge * d
            return float(np.logaddexp(0.0, z).sum() - y @ z + 0.5 * self.ridge * d @ d), grad
        self.weights[kind] = minimize(loss, PRIOR.copy(), jac=True, method="L-BFGS-B").x

    def leads(self, kind: str) -> bool:
        """Does the learned order rank? Only once it has called more growers than the prior order over the
        last `gate` boundaries (at least three of them judged)."""
        judged = [(a, b) for a, b in self._gate[kind] if a is not None]
        return kind in self.weights and len(judged) >= 3 and sum(a for a, _ in judged) > sum(b for _, b in judged)

    def rising(self, kind: str, now: int | None = None, n: int = 10) -> list[tuple[str, float, float, float, float | None]]:
        """The `n` keys most likely to be among the `top_n` that grow most in the next window at `now`:
        (key, rise (last window's count - baseline), one-window count, baseline per window, p (the learned
        chance; None while the prior order ranks))."""
        now = self.now if now is None else now
        w = self.weights[kind] if self.leads(kind) else None
        keys = list(self._supported(kind, now))
        if not keys:
            return []
        z = np.array([row for _, row, *_ in keys]) @ (PRIOR if w is None else w)
        p = None if w is None else 1.0 / (1.0 + np.exp(-np.clip(z, -50.0, 50.0)))
        best = _called(z, [k for k, *_ in keys], n)
        return [(keys[i][0], *keys[i][2:], None if p is None else float(p[i])) for i in best]

    def popular(self, kind: str, now: int | None = None, n: int = 10) -> list[tuple[str, float]]:
        """The `n` keys with the most events in about the last window (the fast count)."""
        now = self.now if now is None else now
        got = sorted(((k, float(self._decayed(c, now)[1])) for k, c in self._c[kind].items()), key=lambda r: (-r[1], r[0]))
        return got[:n]

    def prune(self, now: int | None = None) -> int:
        now = self.now if now is None else now
        gone = 0
        for table in self._c.values():
            for key in [k for k, c in table.items() if self._decayed(c, now)[2] * self.B < self.prune_below and c[CUR] == 0]:
                del table[key]
                gone += 1
        return gone

    # ---- publishing and checkpoints -------------------------------------------------------------------------
    def snapshot(self, n: int = 20) -> dict:
        """What is published: per kind, the rising keys and the popular ones, at the newest event time
        (`learned`: the kinds whose learned order ranks)."""
        def _r(v):
            return None if v is None else round(v, 3)
        return {"ts": self.now, "window_s": self.window_ms / 1000, "learned": sorted(k for k in KINDS if self.leads(k)),
                **{kind: {"rising": [{"key": k, "rise": round(r, 3), "p": _r(p), "count": round(f, 2),
                                      "baseline": round(b, 2)} for k, r, f, b, p in self.rising(kind, n=n)],
                          "popular": [{"key": k, "count": round(f, 2)} for k, f in self.popular(kind, n=n)]}
                   for kind in KINDS}}

    def state(self) -> dict:
        return {"version": STATE_VERSION, "now": self.now, "boundary": self.boundary, "closed": self.closed,
                "counted": dict(self.counted), "counts": {k: dict(v) for k, v in self._c.items()},
                "pending": {k: dict(v) for k, v in self._pending.items()},
                "examples": {k: list(v) for k, v in self._examples.items()},
                "gate": {k: list(v) for k, v in self._gate.items()}, "volume": dict(self.volume)}

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
        self._examples = defaultdict(lambda: deque(maxlen=self.memory))
        self._gate = defaultdict(lambda: deque(maxlen=self.gate))
        self.volume = defaultdict(lambda: [0.0, 0.0], {k: list(v) for k, v in state.get("volume", {}).items()} if same else {})
        self.weights = {}
        if not same:
            return
        for kind, ex in state.get("examples", {}).items():
            self._examples[kind].extend((list(X), list(y)) for X, y in ex)
            self._fit(kind)
        for kind, v in state.get("gate", {}).items():
            self._gate[kind].extend(tuple(x) for x in v)
