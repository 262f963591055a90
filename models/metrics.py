"""Ranking metrics from the rank of the held-out item (1 = first; 0 = not ranked at all).

Pure functions, used by training, the backtest and their tests.

>>> round(ndcg_at(1, 10), 3), round(ndcg_at(3, 10), 3), ndcg_at(11, 10), ndcg_at(0, 10)
(1.0, 0.5, 0.0, 0.0)
>>> hit_at(10, 10), hit_at(0, 10), rr(4), rr(0)
(1.0, 0.0, 0.25, 0.0)
"""
from __future__ import annotations

import math

import numpy as np


def hit_at(rank: int, k: int) -> float:
    return 1.0 if 0 < rank <= k else 0.0


def ndcg_at(rank: int, k: int) -> float:
    """One relevant item: DCG = 1/log2(rank+1), ideal DCG = 1."""
    return 1.0 / math.log2(rank + 1) if 0 < rank <= k else 0.0


def rr(rank: int) -> float:
    return 1.0 / rank if rank > 0 else 0.0


def summarize(ranks, ks=(5, 10, 20)) -> dict[str, float]:
    """Mean HR@K, NDCG@K and MRR over a list of ranks."""
    r = np.asarray(list(ranks), dtype=np.int64)
    if r.size == 0:
        return {**{f"hr@{k}": 0.0 for k in ks}, **{f"ndcg@{k}": 0.0 for k in ks}, "mrr": 0.0, "n": 0}
    valid = r > 0
    out = {}
    for k in ks:
        hit = valid & (r <= k)
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(np.maximum(r, 1) + 1), 0.0).mean())
    out["mrr"] = float(np.where(valid, 1.0 / np.maximum(r, 1), 0.0).mean())
    out["n"] = int(r.size)
    return out


def rank_of(scores: np.ndarray, target: int) -> int:
    """1-based rank of `target` among finite scores (ties counted pessimistically); 0 if unscored.

    >>> rank_of(np.array([0.1, 0.9, 0.5, -np.inf]), 2)
    2
    """
    s = scores[target]
    if not np.isfinite(s):
        return 0
    return int((scores >= s).sum())
