"""The item linear model at serving time (numpy only) and its candidate source "linear".

`recstream train` fits an EASE item-to-item model beside the transformer (models/linear.py) and registers
its top weights per item as `linear.npz` in the same model version; this module reads that file. A user's
score for item j is Σ_i w_i B[i, j] over the items i of their recent history that the model has a row for,
w = 1 / (1 + position / τ) with τ chosen in training. The source proposes the top `n` items (the ones to
exclude left out) with their score over the user's best, in [0, 1]; the learned ranker sees it as
`src_linear` / `rank_linear` and decides how much it is worth.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FORMAT = "recstream-linear/1"


class ItemLinear:
    """The registered weights, with neighbour ids mapped to external item ids once at load."""

    def __init__(self, path: str | Path, index: dict[str, int]):
        z = np.load(path)
        if str(z["format"]) != FORMAT:
            raise ValueError(f"{path}: format {z['format']}, expected {FORMAT}")
        inv = {i: item for item, i in index.items()}
        rows, nbr = z["rows"], z["nbr"]
        self.tau = float(z["tau"])
        self.row = {inv[int(r)]: n for n, r in enumerate(rows) if int(r) in inv}
        ids, local = np.unique(nbr, return_inverse=True)       # local id 0 is "none" when 0 is present
        self.items = [inv.get(int(i), "") for i in ids]
        self.local = {item: n for n, item in enumerate(self.items) if item}   # item -> local id
        self.none = 0 if len(ids) and ids[0] == 0 else -1
        self.nbr = local.reshape(nbr.shape)
        self.w = z["w"].astype(np.float64)

    def __len__(self) -> int:
        return len(self.row)

    def scores(self, recent_newest_first: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(local ids, scores) of every item some history item points to (unsorted, positives only)."""
        rows = [self.row[i] for i in recent_newest_first if i in self.row]
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0)
        wt = 1.0 / (1.0 + np.arange(len(rows)) / self.tau)
        R = np.array(rows)
        ids = self.nbr[R].ravel()
        vals = (wt[:, None] * self.w[R]).ravel()
        s = np.bincount(ids, vals, minlength=len(self.items))    # summed per item, in the rows' order
        if self.none >= 0:
            s[self.none] = 0.0
        ok = np.flatnonzero(s > 0)
        return ok, s[ok]

    def top(self, recent_newest_first: list[str], n: int, exclude=()) -> tuple[list[tuple[str, float]], UserScores]:
        """The best `n` items (not in `exclude`) with score / best score, and every item's score / best
        (the ranker's feature for any candidate, excluded or not)."""
        ids, s = self.scores(recent_newest_first)
        if not len(ids):
            return [], UserScores(self.local, None)
        dense = np.zeros(len(self.items))
        dense[ids] = s / s.max()
        drop = [self.local[i] for i in exclude if i in self.local] if exclude else []
        if drop:
            keep = ~np.isin(ids, drop)
            ids, s = ids[keep], s[keep]
            if not len(ids):
                return [], UserScores(self.local, dense)
        m = min(n, len(ids))
        part = np.argpartition(-s, m - 1)[:m]
        part = part[np.argsort(-s[part], kind="stable")]
        best = s[part[0]]
        return [(self.items[ids[j]], float(s[j] / best)) for j in part], UserScores(self.local, dense)


class UserScores:
    """One user's linear score of every item, over the best (a dense vector over the model's local ids)."""

    __slots__ = ("local", "dense")

    def __init__(self, local: dict[str, int], dense: np.ndarray | None):
        self.local, self.dense = local, dense

    def of(self, items: list[str]) -> np.ndarray:
        """The score of each item (0 for an item the model does not score for this user)."""
        if self.dense is None:
            return np.zeros(len(items))
        idx = np.fromiter((self.local.get(i, -1) for i in items), np.int64, len(items))
        return np.where(idx >= 0, self.dense[np.maximum(idx, 0)], 0.0)


class LinearRetrieval:
    """Candidate source "linear": the item linear model's top `n` for the user's recent items."""

    name = "linear"

    def __init__(self, model: ItemLinear, n: int = 50):
        self.model, self.n = model, n

    def plan(self, ctx, pipe):
        for uid, snap in ctx.snapshots.items():
            got, ctx.linear[uid] = self.model.top(snap.recent, self.n, ctx.exclude.get(uid) or ())
            if got:
                ctx.add_all(uid, self.name, got)
        return lambda replies: None
