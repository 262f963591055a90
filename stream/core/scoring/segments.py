"""Ranks and standard scores over a user's candidates, and the same segment-wise over a whole batch
(one flat array, a segment per user): the arithmetic the ranking features are made of."""
from __future__ import annotations

import numpy as np


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


def segment_rank_inverse(x: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """`rank_inverse` within each segment (user) of a flat array, in one sort."""
    out = np.zeros(len(x))
    idx = np.flatnonzero(np.isfinite(x) & (x > 0))
    if idx.size:
        order = idx[np.lexsort((-x[idx], seg[idx]))]     # by user, then score down; stable: ties by position
        s = seg[order]
        first = np.r_[True, s[1:] != s[:-1]]
        starts = np.flatnonzero(first)
        pos = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
        out[order] = 1.0 / (1.0 + pos)
    return out


def segment_zscore(x: np.ndarray, seg: np.ndarray, n: int) -> np.ndarray:
    """`zscore` within each segment (user) of a flat array."""
    out = np.zeros(len(x))
    ok = np.isfinite(x)
    if not ok.any():
        return out
    so, xo = seg[ok], x[ok]
    cnt = np.bincount(so, minlength=n)
    mean = np.bincount(so, weights=xo, minlength=n) / np.maximum(cnt, 1)
    sd = np.sqrt(np.bincount(so, weights=(xo - mean[so]) ** 2, minlength=n) / np.maximum(cnt, 1))
    good = ok & (cnt[seg] > 1) & (sd[seg] > 1e-12)
    out[good] = (x[good] - mean[seg[good]]) / sd[seg[good]]
    return out
