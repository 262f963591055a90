"""The scorer before any model: a weighted sum of the candidate sources' own scores, so recommendations
are useful from the first event."""
from __future__ import annotations

import numpy as np

from stream.core.candidates import SOURCE_NAMES
from stream.core.scoring.base import CandidateBatch, Scored

DEFAULT_WEIGHTS = {"covisit": 1.0, "recent": 1.5, "trending": 0.4, "category": 0.3, "content": 0.5, "model": 0.5,
                   "cooccur": 0.5, "linear": 0.5, "stage": 0.0}


class FallbackScorer:
    """Weighted sum of source scores: co-visitation first, then trending, category, recency.

    >>> rows = np.zeros((2, len(SOURCE_NAMES)))
    >>> rows[0, SOURCE_NAMES.index("covisit")] = rows[1, SOURCE_NAMES.index("trending")] = 1
    >>> b = CandidateBatch(["u"], [["a", "b"]], [rows], [[]])
    >>> [round(float(x), 2) for x in FallbackScorer().score(b).final[0]]
    [1.0, 0.4]
    """

    name = "fallback"
    version = "fallback-v1"
    transformer = None
    ranker = None
    needs_item_stats = False

    def __init__(self, weights: dict[str, float] | None = None):
        w = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.w = np.array([w[s] for s in SOURCE_NAMES], dtype=np.float64)

    def score(self, batch: CandidateBatch) -> Scored:
        final = [f @ self.w if len(f) else np.zeros(0) for f in batch.features]
        return Scored(final, {self.name: final})
