"""How much the transformer weighs in the base order, learned from what users do next.

The base order (`BlendedScorer`) is the fallback scorer plus `weight` x the transformer's score
standardised over the user's candidates. A fixed weight is right on one log and harmful on the next:
on the Taobao slice and the REES46 head a model trained on the log itself (the held-out protocol) took
the base order to 0.73-0.78x the best baseline, where the fallback alone scored 1.06-1.13x. So the
weight is chosen on the stream, the way the learned ranker's gate chooses between two orders
(`stream/core/ranking/gate.py`): when a list is served, the list each candidate weight in `WEIGHTS` would
have served is computed from the same scores (same length and exclusions), and each item on any of them
keeps the gain it would earn there (NDCG's 1 / log2(position + 2)); the user's next item event is one
judgement, the touched item's gains under every weight. Over the last `window` judgements (at least
`min_judged`), the weight whose lists earned most replaces the one in service once it leads it by `z`
standard errors of the paired difference: noise does not move it, a model that only adds noise loses its
weight within a few hundred events. Prequential (each judgement is of lists computed before the event),
so a replay decides the same. The state (weight, judgements, moves) is kept per model version in Redis by
`blendstore.py`: a restarted worker resumes where it stopped and the API's fresh asks follow the weight the
workers learned.
"""
from __future__ import annotations


import numpy as np

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def weight_gains(fallback: np.ndarray, transformer_z: np.ndarray, excluded: np.ndarray, k: int,
                 weights: tuple[float, ...] = WEIGHTS) -> dict[int, np.ndarray]:
    """candidate index -> its gain in the top-k list under each weight (0 where it is not on that list),
    for the candidates on any of the lists; `excluded`: a bool mask of candidates the user may not be shown.

    >>> g = weight_gains(np.array([2.0, 1.0, 0.0]), np.array([-1.0, 0.0, 3.0]), np.zeros(3, bool), k=1,
    ...                  weights=(0.0, 1.0))
    >>> {i: v.tolist() for i, v in sorted(g.items())}
    {0: [1.0, 0.0], 2: [0.0, 1.0]}
    """
    return batch_weight_gains([fallback], [transformer_z], [excluded], k, weights)[0]


_GAIN = [1.0 / np.log2(p + 2) for p in range(1000)]


def batch_weight_gains(fallbacks: list[np.ndarray], zs: list[np.ndarray], excluded: list[np.ndarray], k: int,
                       weights: tuple[float, ...] = WEIGHTS) -> list[dict[int, np.ndarray]]:
    """`weight_gains` for every user of a batch at once (the lists of all users and weights cut in one
    argpartition over rows padded with "never listed"; the same lists, ties included, as per user).

    >>> fb, z = [np.array([2.0, 1.0, 0.0]), np.array([1.0])], [np.array([-1.0, 0.0, 3.0]), np.array([0.0])]
    >>> got = batch_weight_gains(fb, z, [np.zeros(3, bool), np.zeros(1, bool)], 1, (0.0, 1.0))
    >>> [{i: v.tolist() for i, v in sorted(g.items())} for g in got]
    [{0: [1.0, 0.0], 2: [0.0, 1.0]}, {0: [1.0, 1.0]}]
    """
    n_u, n_w = len(fallbacks), len(weights)
    sizes = np.array([len(f) for f in fallbacks], dtype=np.int64)
    c = int(sizes.max()) if n_u else 0
    n = min(k, c)
    if n == 0:
        return [{} for _ in range(n_u)]
    fb, zz = np.zeros((n_u, c)), np.zeros((n_u, c))
    never = np.ones((n_u, c), dtype=bool)              # padding, and what the user may not be shown
    for u, (f, z, ex) in enumerate(zip(fallbacks, zs, excluded)):
        fb[u, :len(f)], zz[u, :len(f)], never[u, :len(f)] = f, z, ex
    neg = -(fb[:, None, :] + np.asarray(weights)[None, :, None] * zz[:, None, :])     # (users, weights, c)
    neg[~np.isfinite(neg) | never[:, None, :]] = np.inf
    neg = neg.reshape(n_u * n_w, c)
    if n < c:
        part = np.argpartition(neg, n - 1, axis=1)[:, :n]
        vals = np.take_along_axis(neg, part, 1)
        cut = vals.max(axis=1, keepdims=True)
        straddle = np.isfinite(cut[:, 0]) & ((neg <= cut).sum(axis=1) > n)           # a tie across the cut
    else:
        part, straddle = np.broadcast_to(np.arange(c), neg.shape), np.zeros(len(neg), bool)
        vals = np.take_along_axis(neg, part, 1)
    tops = np.take_along_axis(part, np.lexsort((part, vals), axis=1), 1)
    for r in np.flatnonzero(straddle):     # exactly as a stable sort cuts it: the earlier candidates of the tie
        row = neg[r]
        head = np.flatnonzero(row <= vals[r].max())
        tops[r] = head[np.argsort(row[head], kind="stable")[:n]]
    listed = np.take_along_axis(neg, tops, 1) < np.inf
    G = np.zeros((n_u, n_w, c))
    rows = np.nonzero(listed)
    G.reshape(n_u * n_w, c)[rows[0], tops[rows]] = np.asarray(_GAIN[:n])[rows[1]]
    uu, cc = np.nonzero(G.any(axis=1))               # (user, candidate) on some list, by user
    vecs = G[uu, :, cc]
    ends = np.searchsorted(uu, np.arange(n_u + 1))
    return [dict(zip(cc[a:b].tolist(), vecs[a:b])) for a, b in zip(ends[:-1], ends[1:])]


def standardised(transformer: np.ndarray) -> np.ndarray:
    """The transformer's scores as `BlendedScorer` adds them: z over the candidates it knows, 0 elsewhere."""
    z = np.zeros(len(transformer))
    known = np.isfinite(transformer)
    if known.sum() > 1:
        t = transformer[known]
        z[known] = (t - t.mean()) / (t.std() + 1e-9)
    return z


class BlendWeight:
    """The running choice of the base order's transformer weight (see the module docstring)."""

    def __init__(self, start: float = 1.0, weights: tuple[float, ...] = WEIGHTS, window: int = 2000,
                 min_judged: int = 200, z: float = 3.0, max_open: int = 50_000):
        if start not in weights:
            weights = tuple(sorted({*weights, start}))
        self.weights, self.window, self.min_judged, self.z, self.max_open = weights, window, min_judged, z, max_open
        self.current = weights.index(start)
        self._ring = np.zeros((window, len(weights)))           # the last `window` judgements, a ring of rows
        self._held = self._head = 0
        self.pending: dict[str, dict[str, np.ndarray]] = {}     # user -> item -> gains, for the user's last list
        self.n_judged = 0
        self.moves: list[tuple[int, float]] = []                # (judgements so far, the new weight)
        self.version = ""                                       # the scorer version whose lists are judged

    @property
    def weight(self) -> float:
        return self.weights[self.current]

    def record(self, user: str, items: list[str], gains: dict[int, np.ndarray]) -> None:
        """The lists served to `user` now (`weight_gains`), judged by the user's next item event."""
        self.pending.pop(user, None)
        self.pending[user] = {items[i]: g for i, g in gains.items()}
        if len(self.pending) > self.max_open:                   # the oldest open lists go first
            del self.pending[next(iter(self.pending))]

    def observe(self, user: str, item: str | None) -> None:
        """A user's item event: the judgement of their open list (an item on none of the lists: no information)."""
        lists = self.pending.pop(user, None) if item else None
        if lists is not None:
            g = lists.get(item)
            if g is not None and g.any():
                self._judge(g)
                self.n_judged += 1

    @property
    def judged(self) -> list[np.ndarray]:
        """The window's judgements, oldest first (copies)."""
        return list(self._window())

    def _window(self) -> np.ndarray:
        start = (self._head - self._held) % self.window
        return self._ring[(start + np.arange(self._held)) % self.window]

    def _judge(self, g: np.ndarray) -> None:
        self._ring[self._head] = g
        self._head = (self._head + 1) % self.window
        self._held = min(self.window, self._held + 1)

    def choose(self) -> float:
        """The weight for the next lists: the one in service unless another has led it clearly."""
        n = self._held
        if n >= self.min_judged:
            J = self._ring[:n]                # the window's judgements (their order does not matter here)
            best = int(np.argmax(J.mean(axis=0)))
            if best != self.current:
                d = J[:, best] - J[:, self.current]
                if d.mean() > self.z * d.std(ddof=1) / np.sqrt(n):
                    self.current = best
                    self.moves.append((self.n_judged, self.weight))
        return self.weight

    def restart(self) -> None:
        """A new model version: its lists are judged afresh (the weight in service stays until they say otherwise)."""
        self._held = self._head = 0
        self.pending.clear()

    def state(self) -> dict:
        """What a restart needs (`load_state`): the weight in service, the judgements in the window, the moves."""
        return {"version": self.version, "weights": list(self.weights), "weight": self.weight,
                "n_judged": self.n_judged, "moves": [list(m) for m in self.moves],
                "judged": self._window()}

    def load_state(self, st: dict) -> None:
        """Resume from `state()` (same weight grid; open lists are not kept: their users' next events judge
        nothing after a restart).

        >>> a = BlendWeight(); a.version = "v"; a._judge(np.arange(5.0)); a.n_judged = 1
        >>> b = BlendWeight(); b.load_state(a.state()); (b.version, b.n_judged, b.weight, np.asarray(b.judged).tolist())
        ('v', 1, 1.0, [[0.0, 1.0, 2.0, 3.0, 4.0]])
        """
        if [float(w) for w in st["weights"]] != list(self.weights):
            raise ValueError(f"weight grid {st['weights']} is not {list(self.weights)}")
        self.current = self.weights.index(float(st["weight"]))
        self.version, self.n_judged = st["version"], int(st["n_judged"])
        self.moves = [(int(n), float(w)) for n, w in st["moves"]]
        self._held = self._head = 0
        for g in np.asarray(st["judged"], dtype=np.float64).reshape(-1, len(self.weights))[-self.window:]:
            self._judge(g)
        self.pending.clear()

    def stats(self) -> dict:
        J = self._ring[: self._held] if self._held else np.zeros((1, len(self.weights)))
        return {"blend_weight": self.weight, "blend_judged": self.n_judged, "blend_moves": list(self.moves),
                "blend_window_gain": {str(w): round(float(v), 4) for w, v in zip(self.weights, J.mean(axis=0))}}


def adopt(blend: BlendWeight | None, scorer, stored=None) -> BlendWeight | None:
    """The learner for a base scorer just swapped in: one with a transformer weight gets one (a new model
    version's lists are judged afresh, starting from the weight in service, unless `stored`, a
    `blendstore.BlendStore`, holds this version's state: then it resumes from that); any other keeps none."""
    if getattr(scorer, "weight", None) is None:
        return None
    blend = blend or BlendWeight(start=scorer.weight)
    blend.restart()
    blend.version = getattr(scorer, "version", "")
    if stored is not None:
        stored.restore(blend)
    scorer.weight = blend.weight
    return blend


def record_lists(blend: BlendWeight, batch, components: dict, k: int, drop_of) -> None:
    """Every user's lists under each weight, from the base scorer's `components` for `batch` (its fallback
    and transformer scores), leaving out `drop_of(user)`; bot-like users teach nothing."""
    users = [u for u, uid in enumerate(batch.users) if not batch.snapshots[uid].bot]
    excluded = []
    for u in users:
        items, drop = batch.items[u], drop_of(batch.users[u])
        excluded.append(np.fromiter(map(drop.__contains__, items), bool, len(items)) if drop
                        else np.zeros(len(items), bool))
    gains = batch_weight_gains([components["fallback"][u] for u in users],
                               [standardised(components["transformer"][u]) for u in users], excluded, k, blend.weights)
    for u, g in zip(users, gains):
        blend.record(batch.users[u], batch.items[u], g)


def observe_events(blend: BlendWeight, snaps: dict) -> float:
    """The users' newly applied events judge their open lists; returns the weight for the next lists."""
    for uid, snap in snaps.items():
        first = next((ev.item_id for ev in snap.fresh if ev.item_id), None)
        if first is not None and not snap.bot:
            blend.observe(uid, first)
    return blend.choose()
