"""The online ranker on top of a scorer: a cascade over the base scorer's top candidates."""
from __future__ import annotations

import numpy as np

from stream.core.ranking.ranker import OnlineRanker, sigmoid
from stream.core.scoring.base import CandidateBatch, Scored, scored
from stream.core.candidates.gather import POP_HISTORY
from stream.core.scoring.features import UserView, in_sample, table_features
from stream.core.scoring.itemtable import batch_table
from stream.core.scoring.segments import zscore


def rerank_top(base: np.ndarray, logit: np.ndarray, n: int, weight: float) -> np.ndarray:
    """The base's top n re-scored by base + weight * z(logit among them); the rest below, in base order.

    >>> rerank_top(np.array([3.0, 2.0, 1.0]), np.array([-1.0, 1.0, 9.0]), 2, 10.0).round(2).tolist()
    [-7.0, 12.0, -8.0]
    """
    final = base.astype(np.float64).copy()
    if len(base) == 0:
        return final
    top = np.argsort(-base, kind="stable")[:n]
    final[top] = base[top] + weight * zscore(logit[top])
    if len(top) < len(base):
        rest = np.ones(len(base), dtype=bool)
        rest[top] = False
        final[rest] = final[top].min() - 1.0 - (base[rest].max() - base[rest])
    return final


class RankedScorer:
    """base scorer + online ranker. Until the ranker is active (`min_examples` learned; for trees, a first
    fit), the base order (its probability is still reported). Then, with no weight (`gbdt`, the default,
    and `MODEL:learned`), the ranker's logit orders the whole candidate set: it learned from every event
    against the whole set, so no hand-chosen weight decides the order, and the base scorer's influence
    (the transformer's with it) is what the ranker learned it is worth. With a `weight` (the `lr` / `fm`
    cascade), the base's top `rerank` are re-scored by base + weight * z(logit among them) and the rest
    keep the base order below them: that ranker learned from shown lists, so it judges only that part.
    In the whole-set modes the ranker's gate (`gate.py`) hands the order back to the base scorer while
    the base's lists have earned more on the users' next events."""

    name = "ranked"
    needs_item_stats = True

    def __init__(self, base, ranker: OnlineRanker):
        self.base, self.ranker = base, ranker
        self.transformer = base.transformer
        self.version = f"{base.version}+ranker-{ranker.cfg.model}"

    def features(self, batch: CandidateBatch, comps: dict) -> list[np.ndarray]:
        stats = batch.item_stats or {}
        table, rows = batch_table(batch.meta, stats, batch.items)     # each item's metadata and statistics once
        views = []
        for uid in batch.users:
            snap = batch.snapshots[uid]
            seen = [stats[i][0] for i in snap.recent[:POP_HISTORY] if i in stats]
            views.append(UserView(snap.affinity, snap.aff_ts, snap.last_ts, snap.prev_ts, snap.last_type,
                                  snap.price_mean, len(snap.recent), snap.recent_ts,
                                  float(np.log1p(np.maximum(seen, 0.0)).mean()) if seen else None, snap.bought))
        last = [batch.meta.get(batch.snapshots[uid].recent[0]) if batch.snapshots[uid].recent else None
                for uid in batch.users]
        return table_features(batch.features, comps.get("transformer"), comps[self.base.name], views, batch.now_ts,
                              table, rows, batch.content_sim, batch.items, batch.histories, last, batch.linear)

    def score(self, batch: CandidateBatch) -> Scored:
        comps = scored(self.base, batch).components
        key = ("features", id(self.base))      # the same rows for every ranker over this base scorer
        feats = batch.cache.get(key)
        if feats is None:
            feats = batch.cache[key] = self.features(batch, comps)
        base = comps[self.base.name]
        probs, final = [], []
        active = self.ranker.active
        w = self.ranker.cfg.weight
        gate = self.ranker.gate if active and w is None else None
        trees = gate.serve(len(base)) if gate is not None else True
        sizes = [len(X) for X in feats]
        all_logits = self.ranker.logits(np.vstack(feats)) if sum(sizes) else np.zeros(0)   # one product per batch
        all_probs = sigmoid(all_logits)
        ends = np.cumsum(sizes)
        for b, end, size in zip(base, ends, sizes):
            logit = all_logits[end - size: end]
            probs.append(all_probs[end - size: end])
            if not active:
                final.append(b.copy())
            elif w is None:
                final.append(logit.copy() if trees else b.copy())
            else:
                final.append(rerank_top(b, logit, self.ranker.cfg.rerank, w))
        until = getattr(self.transformer, "trained_until", None)
        judge = None
        if gate is not None:     # both orders for the gate: the logits themselves (probabilities saturate into ties)
            judge = [(all_logits[end - size: end], b) for b, end, size in zip(base, ends, sizes)]
        if until is not None and batch.now_ts <= until:
            judge = None                 # the model's own training events flatter whichever order trusts it
            if self.ranker.masks_in_sample:
                blended = getattr(self.base, "weight", 0) != 0       # the base order carries the transformer
                feats = [in_sample(X, blended) for X in feats]         # learned from, never scored with
        return Scored(final, {**comps, "ranker": probs, self.name: final}, rows=feats, judge=judge)
