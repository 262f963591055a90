"""Which order serves a list, the learned ranker's or the base scorer's, judged on what users do next.

The whole-set ranker learns from every event; whether its order is better than the base order it
learned beside is itself measured on every event. When a candidate set is recorded, both orders' lists
are computed as the user would be shown them (`top_k` with the same length, exclusions and diversity
rule: the worker's top 10; the backtest asks for 50), and the gain each list would earn (NDCG's
1 / log2(position + 2)) is kept for the items on either list.
The user's next event labels the set (`FeedbackJoin`): the touched item's two gains are one judgement.
The learned order serves unless, over the last `window` judgements (at least `min_judged`), the base
order's lists earned more by `z` standard errors of the paired difference: the burden of proof is on
the hand-set order, so noise alone (two orders within a few per cent of each other) does not flip the
order back and forth. Judgements are prequential: each compares the two orders as they were before the
event was seen, so the gate never looks ahead and replays decide the same.

Chosen on the logs' validation splits (docs/backtest.md, the nineteenth session): the plain "larger
total over the window serves" rule flipped on noise (MovieLens, where the trees lead by 4 %, served
lists by the base order on and off); at two standard errors the base order still served 6 % of
MovieLens' lists (0.3 % of its NDCG@10); three it is. On the three shared logs the trees lead and the
gate seldom hands the order back (4 % of the real MovieLens run's lists, near its end, where the two
orders' lists earned the same); it is there for a log, or a day, where the learned order goes wrong.
"""
from __future__ import annotations

import numpy as np

from stream.core.ranking.rank import RankConfig, top_k


def _gain(pos: int) -> float:
    """A list's gain at position `pos` (0 first; DCG)."""
    return 1.0 / float(np.log2(pos + 2))


GAIN = [_gain(pos) for pos in range(100)]      # (looked up: one numpy call a position cost more than the rest)


def list_gains(items: list[str], trees: np.ndarray, base: np.ndarray, *, exclude: set[str],
               category_of: dict[str, str | None], cfg: RankConfig) -> dict[str, tuple[float, float]]:
    """item -> (gain in the trees' list, gain in the base list) for the items on either list; an item on
    one list only has gain 0 on the other.

    >>> g = list_gains(["a", "b", "c"], np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0]), exclude={"b"},
    ...                category_of={}, cfg=RankConfig(k=1))
    >>> {i: (round(t, 3), round(b, 3)) for i, (t, b) in sorted(g.items())}
    {'a': (1.0, 0.0), 'c': (0.0, 1.0)}
    """
    out: dict[str, list[float]] = {}
    for side, scores in enumerate((trees, base)):
        for pos, (i, _) in enumerate(top_k(items, scores, exclude=exclude, category_of=category_of, cfg=cfg)):
            out.setdefault(items[i], [0.0, 0.0])[side] = GAIN[pos] if pos < len(GAIN) else _gain(pos)
    return {i: (g[0], g[1]) for i, g in out.items()}


class OrderGate:
    """The running judgement between the two orders (see the module docstring)."""

    def __init__(self, window: int = 1000, min_judged: int = 200, z: float = 3.0):
        self.window, self.min_judged, self.z = window, min_judged, z
        self._ring = np.zeros((window, 2))   # (learned gain, base gain) of the last `window` judgements
        self._head = self._held = 0         # where the next one goes; how many are held (read every batch)
        self.n_judged = 0
        self.served = {"trees": 0, "base": 0}

    def judge(self, gains: tuple[float, float] | None) -> None:
        """One labelled set: the touched item's gains in the two lists (None or (0, 0): on neither list,
        no information about which order is better, not counted)."""
        if gains is not None and (gains[0] or gains[1]):
            self._ring[self._head] = gains
            self._head = (self._head + 1) % self.window
            self._held = min(self._held + 1, self.window)
            self.n_judged += 1

    @property
    def judged(self) -> list[tuple[float, float]]:
        """The window's judgements, oldest first."""
        rows = self._ring[: self._held] if self._held < self.window else np.roll(self._ring, -self._head, axis=0)
        return [(float(t), float(b)) for t, b in rows]

    @property
    def trees_lead(self) -> bool:
        """False only while the base order's lists lead by `z` standard errors over the window."""
        n = self._held
        if n < self.min_judged:
            return True
        d = self._ring[:n, 1] - self._ring[:n, 0]    # base gain - learned gain (order does not matter here)
        return not bool(d.mean() > self.z * d.std(ddof=1) / np.sqrt(n))

    def serve(self, n_lists: int) -> bool:
        """Whether the trees order the next `n_lists` lists (counted for the report)."""
        lead = self.trees_lead
        self.served["trees" if lead else "base"] += n_lists
        return lead

    def stats(self) -> dict:
        t, b = self._ring[: self._held].sum(axis=0)
        n = max(self._held, 1)
        return {"gate_judged": self.n_judged, "gate_window_gain_trees": float(t) / n,
                "gate_window_gain_base": float(b) / n, "lists_by_trees": self.served["trees"],
                "lists_by_base": self.served["base"]}

    def state(self) -> dict:
        return {"judged": list(self.judged), "n_judged": self.n_judged}

    def load_state(self, st: dict | None) -> None:
        rows = [tuple(g) for g in (st or {}).get("judged", ())][-self.window:]   # the newest, if the window shrank
        self._ring = np.zeros((self.window, 2))
        if rows:
            self._ring[: len(rows)] = rows
        self._held, self._head = len(rows), len(rows) % self.window
        self.n_judged = int((st or {}).get("n_judged", 0))
