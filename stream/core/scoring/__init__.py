"""Stage 4: scoring, behind one protocol.

A `Scorer` gets the whole batch's candidates at once (never one event at a time) and returns
one score per candidate. Until a transformer is registered, `FallbackScorer` blends the
candidate sources' own scores (co-visitation, trending, ...), so recommendations are useful
from the first event.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from stream.core.candidates import SOURCE_NAMES


@dataclass
class CandidateBatch:
    users: list[str]
    items: list[list[str]]                 # per user: candidate item ids
    features: list[np.ndarray]             # per user: (C, len(SOURCE_NAMES)) source scores, 0 = not proposed
    histories: list[list[str]]             # per user: recent items, newest first
    trigger_types: list[str] = field(default_factory=list)
    # context for scorers that build features (the online ranker); the pipeline fills these
    snapshots: dict = field(default_factory=dict)          # user -> profile Snapshot
    now_ts: int = 0
    meta: dict = field(default_factory=dict)               # item -> (category, brand, price)
    item_stats: dict | None = None                          # item -> (popularity, trend), if the scorer asks
    content_sim: list | None = None                         # per user (C,) cosine to their content vector
    extra: dict = field(default_factory=dict)              # what a scorer leaves for the pipeline (feature rows)
    cache: dict = field(default_factory=dict)              # components per scorer, shared by the scorers of one batch


def components_of(scorer, batch: CandidateBatch) -> dict[str, list[np.ndarray]]:
    """`scorer.score_components(batch)`, once per scorer and candidate set (variants that wrap the same
    base scorer, as the backtest's ranker variants do, reuse its scores)."""
    got = batch.cache.get(id(scorer))
    if got is None:
        got = batch.cache[id(scorer)] = scorer.score_components(batch)
    return got


class Scorer(Protocol):
    name: str
    version: str

    def score(self, batch: CandidateBatch) -> list[np.ndarray]:
        """Per user, a (C,) float array; NaN where this scorer has no opinion. One call per batch."""

    def score_components(self, batch: CandidateBatch) -> dict[str, list[np.ndarray]]:
        """Every component's scores, the final one under `name` (shown per item in recommendations)."""


DEFAULT_WEIGHTS = {"covisit": 1.0, "recent": 1.5, "trending": 0.4, "category": 0.3, "content": 0.5, "model": 0.5}


class FallbackScorer:
    """Weighted sum of source scores: co-visitation first, then trending, category, recency.

    >>> import numpy as np
    >>> b = CandidateBatch(["u"], [["a", "b"]], [np.array([[1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]], float)], [[]])
    >>> [round(float(x), 2) for x in FallbackScorer().score(b)[0]]
    [1.0, 0.4]
    """

    name = "fallback"
    version = "fallback-v1"

    def __init__(self, weights: dict[str, float] | None = None):
        w = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.w = np.array([w[s] for s in SOURCE_NAMES], dtype=np.float64)

    def score(self, batch: CandidateBatch) -> list[np.ndarray]:
        return [f @ self.w if len(f) else np.zeros(0) for f in batch.features]

    def score_components(self, batch: CandidateBatch) -> dict[str, list[np.ndarray]]:
        return {self.name: self.score(batch)}
