"""The trend backtest: at each window boundary, do the items called rising grow most in the next window?

Events in time order feed a `TrendTracker`; at every boundary t (one window apart, from the second window
on, while a whole next window remains):
    called rising      the tracker's top n by rise at t (only what happened before t)
    baseline           the n items with the most events in the last window [t - W, t)
    truth ("grew")     the n items with the largest growth g = count[t, t + W) - the item's mean count per
                       window over the (up to B) windows before t; only items with g > 0
precision@n = |called ∩ truth| / n (a key tied with the n-th of the truth counts as in it), averaged over
boundaries, and the mean growth g of the n called keys (a called key that grew nothing scores 0). A second truth, g' = count[t, t + W) -
count[t - W, t) (growth over the last window alone), is reported beside it. The definitions, the window,
B and the tracker's minimum support are fixed before a log is run: nothing is chosen on its evaluated period.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from stream.core.search.trends import TrendTracker, category_key

METRICS = ("rising_p", "popular_p", "rising_p_last", "popular_p_last", "rising_growth", "popular_growth")


def _top(scores: dict, n: int) -> list[str]:
    return [k for k, v in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])) if v > 0][:n]


def _hits(called: list[str], growth: dict, n: int) -> float:
    """precision@n: the called keys among the n that grew most, a tie with the n-th counting as a hit."""
    top = sorted((v for v in growth.values() if v > 0), reverse=True)[:n]
    if not top:
        return 0.0
    return sum(growth.get(k, 0.0) >= top[-1] for k in called) / n


def _mean_growth(called: list[str], growth: dict, n: int) -> float:
    """The mean next-window growth of the called keys (a key not in `growth` had no events: 0)."""
    return sum(growth.get(k, 0.0) for k in called) / n if called else 0.0


def backtest_trends(events, *, window_s: float, baseline_windows: int = 6, min_support: float = 3.0,
                    n: int = 10, kind: str = "item", category_of=None) -> dict:
    """`events`: schemas.Event in time order. Returns the averages and one row per boundary."""
    events = [ev for ev in events if ev.item_id] if kind == "item" else list(events)
    if not events:
        return {"boundaries": 0, "rows": []}
    W = int(window_s * 1000)                 # windows aligned on multiples of W, as the tracker's are
    first, t_end = events[0].ts // W, events[-1].ts
    counts: dict[int, Counter] = defaultdict(Counter)         # window index -> key -> events
    for ev in events:
        key = ev.item_id if kind == "item" else category_key(ev, category_of)
        if key:
            counts[ev.ts // W][key] += 1
    tracker = TrendTracker(window_s=window_s, baseline_windows=baseline_windows, min_support=min_support)
    rows, i = [], 0
    j = first + 2
    while (j + 1) * W <= t_end + 1:
        t = j * W
        while i < len(events) and events[i].ts < t:
            tracker.observe([events[i]], category_of)
            i += 1
        tracker.advance(t)
        past = [counts[j - b] for b in range(1, min(baseline_windows, j - first) + 1)]
        nxt, last = counts[j], counts[j - 1]
        keys = set(nxt) | set().union(*past)
        grew = {k: nxt[k] - sum(c[k] for c in past) / len(past) for k in keys}
        grew_last = {k: nxt[k] - last[k] for k in keys}
        called = [k for k, *_ in tracker.rising(kind, t, n)]
        popular = _top(dict(last), n)
        rows.append({"t": t, "learned": tracker.leads(kind), "called": called, "popular": popular,
                     "rising_p": _hits(called, grew, n), "popular_p": _hits(popular, grew, n),
                     "rising_p_last": _hits(called, grew_last, n), "popular_p_last": _hits(popular, grew_last, n),
                     "rising_growth": _mean_growth(called, grew, n),
                     "popular_growth": _mean_growth(popular, grew, n)})
        j += 1
    avg = {k: sum(r[k] for r in rows) / len(rows) if rows else float("nan") for k in METRICS}
    return {"boundaries": len(rows), "window_s": window_s, "baseline_windows": baseline_windows,
            "min_support": min_support, "n": n, "kind": kind, **avg, "rows": rows}
