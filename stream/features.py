"""Ranking features for the online ranker: pure functions of what the candidate stage already holds
(source scores, the transformer's and the base scorer's scores, the user's profile snapshot, item
metadata and popularity). No I/O here: the pipeline gathers the inputs once per batch.

One row per candidate, columns in `FEATURE_NAMES` order; every value finite (missing -> 0 plus an
indicator column where "missing" itself carries information).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.candidates import SOURCE_NAMES

TRIGGER_TYPES = ("view", "click", "add_to_cart", "purchase", "search")

FEATURE_NAMES: tuple[str, ...] = (
    *(f"src_{s}" for s in SOURCE_NAMES),            # each source's own score (0 = not proposed)
    *(f"rank_{s}" for s in SOURCE_NAMES),           # 1 / (1 + rank among the user's candidates by that source)
    "n_sources",                                    # how many sources proposed it
    "transformer_z", "transformer_known",           # transformer score standardised over the user's candidates
    "base_z", "base_rank",                          # the base scorer's score (z) and position (1 / (1 + rank))
    "log_popularity", "trend",                      # all-time popularity; decayed trend / batch max
    "cat_affinity", "brand_affinity",               # the user's decayed affinity / their strongest one
    "cat_log_hours", "cat_never",                   # hours since the user last touched the item's category
    "price_rel", "price_known",                     # log(item price) - the user's usual log price
    "log_since_last_s", "log_gap_before_last_s",    # time since the user's last event; the gap before it
    "log_history",                                  # length of the user's recent sequence
    *(f"trigger_{t}" for t in TRIGGER_TYPES),       # what the user did last
    "content_sim", "content_known",                 # cosine to the user's recent items' (or query's) embedding
)
N_FEATURES = len(FEATURE_NAMES)
_W = len(SOURCE_NAMES)


@dataclass
class UserView:
    """The slice of a profile snapshot the features need."""
    affinity: dict[str, float]        # "c:{cat}" / "b:{brand}" -> decayed value
    aff_ts: dict[str, int]            # same keys -> last event time on it (ms)
    last_ts: int
    prev_ts: int
    last_type: str
    price_mean: float | None          # mean log price
    history: int


def rank_inverse(scores: np.ndarray) -> np.ndarray:
    """1 / (1 + rank) by descending score (ties: first come first), 0 where the score is <= 0 or NaN.

    >>> rank_inverse(np.array([0.2, 0.0, 0.9, np.nan])).tolist()
    [0.5, 0.0, 1.0, 0.0]
    """
    out = np.zeros(len(scores))
    ok = np.isfinite(scores) & (scores > 0)
    if ok.any():
        idx = np.flatnonzero(ok)
        order = idx[np.argsort(-scores[idx], kind="stable")]
        out[order] = 1.0 / (1.0 + np.arange(len(order)))
    return out


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardised over the finite entries (0 elsewhere, and 0 when fewer than two or no spread).

    >>> zscore(np.array([1.0, 3.0, np.nan])).tolist()
    [-1.0, 1.0, 0.0]
    """
    out = np.zeros(len(x))
    ok = np.isfinite(x)
    if ok.sum() > 1:
        v = x[ok]
        sd = v.std()
        if sd > 1e-12:
            out[ok] = (v - v.mean()) / sd
    return out


def user_features(user: UserView, now_ts: int) -> np.ndarray:
    """The columns that are the same for every candidate of a user."""
    since = max(0, now_ts - user.last_ts) / 1000 if user.last_ts else 0.0
    gap = max(0, user.last_ts - user.prev_ts) / 1000 if user.prev_ts else 0.0
    trig = [1.0 if user.last_type == t else 0.0 for t in TRIGGER_TYPES]
    return np.array([math.log1p(since), math.log1p(gap), math.log1p(user.history), *trig])


def candidate_features(sources: np.ndarray, transformer: np.ndarray | None, base: np.ndarray,
                       meta: list[tuple[str | None, str | None, float | None]], user: UserView, now_ts: int,
                       popularity: np.ndarray, trend: np.ndarray, content_sim: np.ndarray | None = None) -> np.ndarray:
    """(C, N_FEATURES) for one user's C candidates.

    sources: (C, len(SOURCE_NAMES)) source scores; transformer: (C,) with NaN where unknown, or None;
    base: (C,) the base scorer's final score; meta: per candidate (category, brand, price);
    popularity: (C,) all-time weighted interactions; trend: (C,) already scaled to [0, 1];
    content_sim: (C,) cosine to the user's content vector, NaN where an embedding is missing (or None).
    """
    c = len(base)
    X = np.zeros((c, N_FEATURES))
    if c == 0:
        return X
    X[:, :_W] = sources
    for j in range(_W):
        if sources[:, j].any():
            X[:, _W + j] = rank_inverse(sources[:, j])
    col = 2 * _W
    X[:, col] = (sources > 0).sum(axis=1)
    t = transformer if transformer is not None else np.full(c, np.nan)
    X[:, col + 1] = zscore(t)
    X[:, col + 2] = np.isfinite(t)
    X[:, col + 3] = zscore(base)
    X[:, col + 4] = rank_inverse(base - base.min() + 1.0)   # every candidate gets a position
    X[:, col + 5] = np.log1p(np.maximum(popularity, 0.0))
    X[:, col + 6] = trend
    aff, when = user.affinity, user.aff_ts
    cmax = max((v for k, v in aff.items() if k.startswith("c:")), default=0.0) or 1.0
    bmax = max((v for k, v in aff.items() if k.startswith("b:")), default=0.0) or 1.0
    # per-candidate lookups as list comprehensions, assigned column by column (numpy scalar stores are slow)
    ckeys = ["c:" + m[0] if m[0] else None for m in meta]
    X[:, col + 7] = [aff.get(k, 0.0) / cmax if k else 0.0 for k in ckeys]
    X[:, col + 8] = [aff.get("b:" + m[1], 0.0) / bmax if m[1] else 0.0 for m in meta]
    last = [when.get(k) if k else None for k in ckeys]
    X[:, col + 9] = [math.log1p(max(0, now_ts - w) / 3.6e6) if w is not None else 0.0 for w in last]
    X[:, col + 10] = [w is None for w in last]
    if user.price_mean is not None:
        pm = user.price_mean
        X[:, col + 11] = [max(-5.0, min(5.0, math.log(m[2]) - pm)) if m[2] and m[2] > 0 else 0.0 for m in meta]
        X[:, col + 12] = [bool(m[2] and m[2] > 0) for m in meta]
    uf = user_features(user, now_ts)
    X[:, col + 13: col + 13 + len(uf)] = uf
    if content_sim is not None:
        known = np.isfinite(content_sim)
        X[:, -2] = np.where(known, content_sim, 0.0)
        X[:, -1] = known
    return X
