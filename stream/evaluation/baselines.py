"""Baselines for the prequential backtest: each learns per event and recommends a ranked list.

    model.recommend(user, k, now_ts) -> [item, ...]   # best first, from state before the event
    model.learn(event)                                # then the event is revealed

All in memory, deterministic (river's MF is seeded).
"""
from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict, deque

import numpy as np

WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 4.0, "search": 0.0}


class TopList:
    """Counts with an incrementally maintained top-N (ties by item id: deterministic). Scores only grow
    (and `rescale` keeps the order), so an update moves one item up: O(log N) search plus a shift."""

    def __init__(self, n: int = 500):
        self.n, self.score, self.top, self._in = n, {}, [], set()

    def _key(self, item: str):
        return (-self.score[item], item)

    def add(self, item: str, w: float) -> None:
        s = self.score.get(item, 0.0) + w
        self.score[item] = s
        if item in self._in:
            self.top.remove(item)
        elif len(self.top) >= self.n:
            if s <= self.score[self.top[-1]]:
                return
            self._in.discard(self.top.pop())
        bisect.insort(self.top, item, key=self._key)
        self._in.add(item)

    def rescale(self, f: float) -> None:
        for k in self.score:
            self.score[k] *= f


class Baseline:
    """What every baseline shares: each event id is learned once (a replayed event changes nothing, as in
    recstream's profile stage); `_learn` is the model's own update."""

    name = "baseline"

    def __init__(self):
        self._seen_ids: set[str] = set()

    def learn(self, ev) -> None:
        if ev.event_id in self._seen_ids:
            return
        self._seen_ids.add(ev.event_id)
        self._learn(ev)

    def _learn(self, ev) -> None:
        raise NotImplementedError

    def recommend(self, user, k, now, exclude=frozenset()) -> list[str]:
        raise NotImplementedError


class MostPopular(Baseline):
    name = "most_popular"

    def __init__(self):
        super().__init__()
        self.pop = TopList(1000)     # RiverMF ranks this list (its `pool`): it must hold at least that many

    def recommend(self, user, k, now, exclude=frozenset()):
        return [i for i in self.pop.top if i not in exclude][:k]

    def _learn(self, ev):
        if ev.item_id:
            self.pop.add(ev.item_id, WEIGHTS[ev.type] or 1.0)


class TrendingPopular(MostPopular):
    """Exponentially decayed popularity (forward decay, renormalised before it overflows)."""
    name = "trending"

    def __init__(self, half_life_s: float = 6 * 3600.0):
        super().__init__()
        self.hl, self.ref = half_life_s * 1000, None

    def _learn(self, ev):
        if not ev.item_id:
            return
        if self.ref is None:
            self.ref = ev.ts
        x = (ev.ts - self.ref) / self.hl
        if x > 500:                      # move the landmark: scale everything down
            self.pop.rescale(2.0 ** -x)
            self.ref, x = ev.ts, 0.0
        self.pop.add(ev.item_id, (WEIGHTS[ev.type] or 1.0) * 2.0 ** x)


class RecentItems(Baseline):
    """The user's own items, most recent first (each once). The whole history is kept: a cap (it was 50
    events) loses the items a long session returns to, and made this baseline weaker than its textbook form."""
    name = "recent_items"

    def __init__(self, n: int | None = None):
        super().__init__()
        self.hist = defaultdict(lambda: deque(maxlen=n))

    def recommend(self, user, k, now, exclude=frozenset()):
        return [i for i in dict.fromkeys(reversed(self.hist[user])) if i not in exclude][:k]

    def _learn(self, ev):
        if ev.item_id:
            self.hist[ev.user_id].append(ev.item_id)


def _most_common(counts: Counter, n: int) -> list[tuple[str, float]]:
    """`counts.most_common(n)` (ties in insertion order, as its stable sort keeps them), by numpy: the
    backtest asks it for every anchor whose counts changed, over up to a whole catalogue of neighbours.

    >>> c = Counter({"a": 1.0, "b": 3.0, "c": 1.0, "d": 3.0, "e": 2.0})
    >>> _most_common(c, 4) == c.most_common(4)
    True
    """
    if len(counts) <= n:
        return counts.most_common(n)
    vals = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
    keys = list(counts)
    return [(keys[i], counts[keys[i]]) for i in np.argsort(-vals, kind="stable")[:n]]


class _CoVisitation(Baseline):
    """What both co-visitation baselines share: per-item neighbour counts (`self.counts`), each item's top
    `per_item` cached until its counts change, and the answer: weighted neighbours, best first, the
    most popular items after them."""

    def __init__(self, window: int, fallback: MostPopular | None, per_item: int):
        super().__init__()
        self.window, self.per_item, self.fallback = window, per_item, fallback
        self.counts = defaultdict(Counter)
        self.hist = defaultdict(lambda: deque(maxlen=window))
        self._cache: dict[str, list] = {}

    def _top(self, a: str) -> list:
        """The `per_item` strongest neighbours of `a`, recomputed only after `a`'s counts changed."""
        got = self._cache.get(a)
        if got is None:
            nb = self.counts.get(a)
            got = self._cache[a] = _most_common(nb, self.per_item) if nb else []
        return got

    def _count(self, a: str, b: str, w: float) -> None:
        self.counts[a][b] += w
        self._cache.pop(a, None)

    def _answer(self, acc: Counter, k: int, exclude) -> list[str]:
        out = [it for it, _ in sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]
        if len(out) < k and self.fallback is not None:
            out += [i for i in self.fallback.pop.top if i not in acc and i not in exclude][: k - len(out)]
        return out


class CoVisitKNN(_CoVisitation):
    """Sequential item co-visitation: items that followed the user's last 3 items in others' histories."""
    name = "covisit_knn"

    def __init__(self, window: int = 3, fallback: MostPopular | None = None):
        super().__init__(window, fallback, per_item=50)

    def recommend(self, user, k, now, exclude=frozenset()):
        acc = Counter()
        for w, a in zip((1.0, 0.6, 0.4), reversed(self.hist[user])):
            top = self._top(a)
            if top:
                m = top[0][1]
                for it, c in top:
                    if it not in exclude:
                        acc[it] += w * c / m
        return self._answer(acc, k, exclude)

    def _learn(self, ev):
        if not ev.item_id:
            return
        h = self.hist[ev.user_id]
        if h and h[-1] != ev.item_id:
            for p in set(h):
                if p != ev.item_id:
                    self._count(p, ev.item_id, WEIGHTS[ev.type] or 1.0)
        if not h or h[-1] != ev.item_id:
            h.append(ev.item_id)


class CoVisitSymmetric(_CoVisitation):
    """The textbook co-visitation kNN: two items co-occur when one user touches both within `window`
    distinct items (counted both ways); a user's candidates are the co-occurring items of their last
    `window` distinct items, each weighted 1/position (newest first)."""
    name = "covisit_sym"

    def __init__(self, window: int = 5, fallback: MostPopular | None = None, per_item: int = 50):
        super().__init__(window, fallback, per_item)

    def recommend(self, user, k, now, exclude=frozenset()):
        acc = Counter()
        for pos, a in enumerate(reversed(self.hist[user])):
            for it, c in self._top(a):
                if it not in exclude:
                    acc[it] += c / (pos + 1)
        return self._answer(acc, k, exclude)

    def _learn(self, ev):
        if not ev.item_id:
            return
        h = self.hist[ev.user_id]
        if ev.item_id in h:
            h.remove(ev.item_id)
        else:
            for a in h:
                self._count(a, ev.item_id, 1)
                self._count(ev.item_id, a, 1)
        h.append(ev.item_id)


class RiverMF(Baseline):
    """river's FunkMF learned online on implicit feedback (each event a positive, two sampled
    negatives); ranks the `pool` most popular items."""
    name = "river_mf"

    def __init__(self, seed: int = 42, n_factors: int = 16, pool: int = 1000, popular: MostPopular | None = None):
        from river import optim, reco
        super().__init__()
        self.model = reco.FunkMF(n_factors=n_factors, optimizer=optim.SGD(0.05), l2=0.001, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.items: list[str] = []
        self.known: set[str] = set()
        self.popular = popular or MostPopular()
        self.own_popular = popular is None
        self.pool = pool
        # a copy of the item latents, one row per item, refreshed only for the items learned since the
        # last ask (FunkMF's step changes the learned item's vector alone)
        self._row: dict[str, int] = {}
        self._mat = np.zeros((1024, n_factors))
        self._dirty: set[str] = set()

    def _sync(self) -> None:
        for item in self._dirty:
            r = self._row.setdefault(item, len(self._row))
            if r >= len(self._mat):
                self._mat = np.concatenate([self._mat, np.zeros_like(self._mat)])
            self._mat[r] = self.model.i_latents[item]
        self._dirty.clear()

    def recommend(self, user, k, now, exclude=frozenset()):
        if user not in self.model.u_latents:
            return [i for i in self.popular.pop.top if i not in exclude][:k]
        if self._dirty:
            self._sync()
        top = self.popular.pop.top      # holds every item seen until it is full (then the `pool` most popular)
        cands = top[: self.pool] if len(top) >= min(self.pool, self.popular.pop.n) else self.items
        cands = [c for c in cands if c in self._row]
        if not cands:
            return []
        m = self._mat[[self._row[c] for c in cands]]
        scores = m @ self.model.u_latents[user]
        if exclude:
            scores[[j for j, c in enumerate(cands) if c in exclude]] = -np.inf
        if len(scores) > 4 * k:     # top k without sorting the whole catalogue
            part = np.argpartition(-scores, k - 1)[:k]
            order = part[np.lexsort((part, -scores[part]))]
        else:
            order = np.argsort(-scores, kind="stable")[:k]
        return [cands[i] for i in order if np.isfinite(scores[i])]

    def _learn(self, ev):
        if not ev.item_id:
            return
        if self.own_popular:
            self.popular.learn(ev)
        if ev.item_id not in self.known:
            self.known.add(ev.item_id)
            self.items.append(ev.item_id)
        self.model.learn_one(user=ev.user_id, item=ev.item_id, y=1.0)
        self._dirty.add(ev.item_id)
        for _ in range(2):
            neg = self.items[int(self.rng.integers(len(self.items)))]
            if neg != ev.item_id:
                self.model.learn_one(user=ev.user_id, item=neg, y=0.0)
                self._dirty.add(neg)


def novelty(items: list[str], counts: dict, total: float) -> float:
    """Mean self-information (-log2 popularity share) of recommended items; unseen items count once."""
    if not items or total <= 0:
        return 0.0
    return float(np.mean([-math.log2(max(counts.get(i, 0.0), 1.0) / total) for i in items]))
