"""The item-to-item linear model trained beside the transformer: EASE (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019), closed form, on the most frequent items.

B = argmin ||X - XB||² + λ||B||², diag(B) = 0, with X the users x items 0/1 matrix of the training window:
P = (XᵀX + λI)⁻¹, B = -P / diag(P). A user's score for item j is Σ_i w_i B[i, j] over the items i of their
history, each weighted by recency, w = 1 / (1 + position / τ) (position 0 = newest). B has no popularity
bias and explains an item by the others *jointly* (partial, not marginal co-occurrence).

λ and τ are chosen on the training window itself, like the transformer's early stopping: fitted on what
precedes its last `val_frac` (by time) and scored there (full ranking over the model's items, the user's
own items excluded: repeats are the recent source's job), each event from its user's whole earlier
history. The chosen λ is then refitted on the whole window. What is served is the top `k` positive
weights per item (`ItemLinear.save`, read by stream/core/scoring/linear.py: the npz is the contract).

    >>> ev = [Interaction(u, i, t) for t, (u, i) in enumerate(
    ...     [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "x"), ("c", "y"), ("d", "x")])]
    >>> lin = fit_linear(ev, Vocab(["x", "y", "z"]), lambdas=(1.0,), taus=(1.0,), val_frac=0.0)
    >>> lin.nbr[:, 0].tolist(), lin.rows.tolist()
    ([2, 1], [1, 2])
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from models.data import Interaction, Vocab, split_time

FORMAT = "recstream-linear/1"


@dataclass
class ItemLinear:
    rows: np.ndarray            # (M,) vocab ids of the items the model has a row for
    nbr: np.ndarray             # (M, k) vocab ids of each row's strongest positive weights (0 = none)
    w: np.ndarray               # (M, k) those weights
    lam: float
    tau: float
    report: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        np.savez(path, format=np.array(FORMAT), rows=self.rows.astype(np.int32), nbr=self.nbr.astype(np.int32),
                 w=self.w.astype(np.float32), lam=np.float64(self.lam), tau=np.float64(self.tau))
        return Path(path)


def ease(X: sp.csr_matrix, lam: float) -> np.ndarray:
    """The dense (M, M) EASE weights of a users x items 0/1 matrix."""
    G = (X.T @ X).toarray().astype(np.float64)
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = P / -np.diag(P)
    B[np.diag_indices_from(B)] = 0.0
    return B


def _matrix(events: list[Interaction], col: dict[str, int]) -> sp.csr_matrix:
    users: dict[str, int] = {}
    r, c = [], []
    for x in events:
        j = col.get(x.item)
        if j is not None:
            r.append(users.setdefault(x.user, len(users)))
            c.append(j)
    X = sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(max(1, len(users)), len(col)))
    X.data[:] = 1.0                        # duplicates summed by the constructor: back to 0/1
    return X


def recency_weights(history_newest_first: list[int], tau: float) -> tuple[list[int], list[float]]:
    """(columns, weights) of a history, an item seen twice summing its weights."""
    acc: dict[int, float] = {}
    for p, j in enumerate(history_newest_first):
        acc[j] = acc.get(j, 0.0) + 1.0 / (1.0 + p / tau)
    return list(acc), list(acc.values())


def _validation(events: list[Interaction], val_ts: int, col: dict[str, int], max_events: int, max_hist: int):
    """(histories newest first, targets) of the validation events whose item and history the model knows."""
    hist: dict[str, list[int]] = defaultdict(list)
    hs, ts = [], []
    for x in events:
        j = col.get(x.item)
        if x.ts >= val_ts and j is not None and hist[x.user] and j not in hist[x.user]:
            hs.append(hist[x.user][::-1][:max_hist])
            ts.append(j)
        if j is not None:
            hist[x.user].append(j)
    if len(ts) > max_events:                 # evenly spaced, deterministic
        keep = np.linspace(0, len(ts) - 1, max_events).astype(int)
        hs, ts = [hs[i] for i in keep], [ts[i] for i in keep]
    return hs, ts


def _ndcg(B: np.ndarray, hs: list[list[int]], ts: list[int], tau: float) -> float:
    n = B.shape[0]
    r, c, v = [], [], []
    for i, h in enumerate(hs):
        cols, ws = recency_weights(h, tau)
        r += [i] * len(cols)
        c += cols
        v += ws
    W = sp.csr_matrix((v, (r, c)), shape=(len(hs), n))
    S = np.asarray(W @ B)
    S[W.nonzero()] = -np.inf                 # the user's own items are not ranked
    rows = np.arange(len(ts))
    rank = (S > S[rows, ts][:, None]).sum(axis=1)
    return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean()) if ts else 0.0


def fit_linear(events: list[Interaction], vocab: Vocab, *, max_items: int = 4000, k: int = 100,
               lambdas: tuple[float, ...] = (20.0, 100.0, 500.0, 2500.0), taus: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0),
               val_frac: float = 0.1, max_val: int = 5000, max_hist: int = 50, log=None) -> ItemLinear:
    """EASE on `events` (the training window, time-ordered) over its `max_items` most frequent items of
    `vocab`; λ and τ chosen on the window's last `val_frac` (module docstring)."""
    t0 = time.time()
    counts = Counter(x.item for x in events if x.item in vocab.index)
    items = [it for it, _ in counts.most_common(max_items)]
    col = {it: j for j, it in enumerate(items)}
    grid: dict[str, float] = {}
    lam, tau = lambdas[len(lambdas) // 2], taus[len(taus) // 2]
    if val_frac > 0 and len(lambdas) * len(taus) > 1:
        val_ts = split_time(events, val_frac)
        hs, ts = _validation(events, val_ts, col, max_val, max_hist)
        if ts:
            X = _matrix([x for x in events if x.ts < val_ts], col)
            best = -1.0
            for lam_ in lambdas:
                B = ease(X, lam_)
                for tau_ in taus:
                    score = grid[f"lambda={lam_:g},tau={tau_:g}"] = _ndcg(B, hs, ts, tau_)
                    if score > best:
                        best, lam, tau = score, lam_, tau_
    B = ease(_matrix(events, col), lam)
    kk = min(k, max(1, len(items) - 1))
    top = np.argpartition(-B, kk - 1, axis=1)[:, :kk] if len(items) > 1 else np.zeros((len(items), 1), int)
    r = np.arange(len(items))[:, None]
    vals = B[r, top]
    order = np.argsort(-vals, axis=1, kind="stable")
    top, vals = top[r, order], vals[r, order]
    ids = np.array([vocab.index[it] for it in items], dtype=np.int64)
    nbr = np.where(vals > 0, ids[top] if len(items) else top, 0)
    w = np.where(vals > 0, vals, 0.0)
    report = {"items": len(items), "k": kk, "lambda": lam, "tau": tau, "validation_ndcg@10": grid,
              "seconds": round(time.time() - t0, 1)}
    if log is not None:
        log(f"item linear model (EASE) on {len(items):,} items: lambda {lam:g}, tau {tau:g} "
            f"(validation NDCG@10 {max(grid.values()) if grid else float('nan'):.4f}), {report['seconds']} s")
    return ItemLinear(ids, nbr, w, lam, tau, report)


def rank_targets(lin: ItemLinear, n_items: int, histories: list[list[int]], targets: list[int],
                 exclude_seen: bool, batch: int = 512) -> list[int]:
    """Full-ranking rank of each target (vocab ids; histories oldest first, as `models.train.held_out`
    gives them) under the served (top-k) weights; 1-based, ties broken pessimistically, 0 = not ranked."""
    rows = np.repeat(lin.rows, lin.nbr.shape[1])
    Bs = sp.csr_matrix((lin.w.ravel(), (rows, lin.nbr.ravel())), shape=(n_items, n_items))
    known = set(lin.rows.tolist())
    ranks: list[int] = []
    for i in range(0, len(targets), batch):
        hs, ts = histories[i: i + batch], targets[i: i + batch]
        r, c, v = [], [], []
        for j, h in enumerate(hs):
            cols, ws = recency_weights([x for x in reversed(h) if x in known], lin.tau)
            r += [j] * len(cols)
            c += cols
            v += ws
        S = np.asarray((sp.csr_matrix((v, (r, c)), shape=(len(hs), n_items)) @ Bs).todense())
        S[:, 0] = -np.inf
        for j, (h, t) in enumerate(zip(hs, ts)):
            if t <= 0 or (exclude_seen and t in h):
                ranks.append(0)
                continue
            row = S[j]
            if exclude_seen and h:
                row[h] = -np.inf
            ranks.append(int((row >= row[t]).sum()))
    return ranks
