"""Stage 4's seam: what a scorer gets (`CandidateBatch`), what it returns (`Scored`), and what it can do,
declared (`Scorer`): the pipeline reads these attributes, it never probes a scorer for hidden ones.

A scorer gets the whole batch's candidates at once (never one event at a time) and returns one
score per candidate, plus the components shown per item in a recommendation and, for a scorer with an
online ranker, the feature rows the ranker scored (recorded as an impression when the list is shown).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:   # types only: the modules below import this one
    from stream.core.ranking.ranker import OnlineRanker
    from stream.core.scoring.transformer import OnnxScorer


@dataclass
class CandidateBatch:
    """One candidate set: per user, the candidate items and each source's score for them, with the
    context a scorer may use. Built by the pipeline's candidate stage; scorers read it, and several
    scorers may score the same batch (the backtest's variants), sharing `cache`."""
    users: list[str]
    items: list[list[str]]                 # per user: candidate item ids
    features: list[np.ndarray]             # per user: (C, len(SOURCE_NAMES)) source scores, 0 = not proposed
    histories: list[list[str]]             # per user: recent items, newest first
    trigger_types: list[str] = field(default_factory=list)
    snapshots: dict = field(default_factory=dict)          # user -> profile Snapshot
    now_ts: int = 0
    meta: dict = field(default_factory=dict)               # item -> (category, brand, price)
    item_stats: dict | None = None                          # item -> (popularity, trend), if a scorer needs it
    content_sim: list | None = None                         # per user (C,) cosine to their content vector
    linear: list | None = None                              # per user (C,) item linear model score / user's best
    cache: dict = field(default_factory=dict)              # results per scorer, shared by the scorers of one batch

    def subset(self, users: list[str]) -> CandidateBatch:
        """These users' part of the batch (an experiment's variants score their own users); the item
        tables are shared, the per-scorer cache is not."""
        pos = {u: i for i, u in enumerate(self.users)}
        idx = [pos[u] for u in users]
        pick = (lambda xs: [xs[i] for i in idx] if xs else xs)
        return CandidateBatch([self.users[i] for i in idx], pick(self.items), pick(self.features),
                              pick(self.histories), pick(self.trigger_types), self.snapshots, self.now_ts,
                              self.meta, self.item_stats, pick(self.content_sim), pick(self.linear))


@dataclass(frozen=True)
class Scored:
    """A scorer's answer for one batch. `final[u]` orders user u's candidates; `components` holds every
    score shown per item (the final one under the scorer's name); `rows[u]` are the feature rows an
    online ranker scored (None without one); `judge[u]`, the (ranker logit, base) scores of a whole-set ranker
    whose gate compares the two orders' lists (`stream/core/ranking/gate.py`)."""
    final: list[np.ndarray]
    components: dict[str, list[np.ndarray]]
    rows: list[np.ndarray] | None = None
    judge: list[tuple[np.ndarray, np.ndarray]] | None = None


class Scorer(Protocol):
    """What the pipeline needs of a scorer, capabilities included (None / False when absent)."""
    name: str
    version: str
    transformer: OnnxScorer | None      # the sequence model inside it, if any: also a candidate source
    ranker: OnlineRanker | None         # an online ranker learning from what is shown, if any
    needs_item_stats: bool              # wants `CandidateBatch.item_stats` (popularity, trend)

    def score(self, batch: CandidateBatch) -> Scored:
        """One call per batch; NaN where a component has no opinion."""


def scored(scorer: Scorer, batch: CandidateBatch) -> Scored:
    """`scorer.score(batch)`, once per scorer and candidate set (variants that wrap the same base
    scorer, as the backtest's ranker variants do, reuse its scores)."""
    got = batch.cache.get(id(scorer))
    if got is None:
        got = batch.cache[id(scorer)] = scorer.score(batch)
    return got
