"""Stage 5: filters and ranking: drop the item the user is on (and, if asked, what they bought),
dedupe, cap items per category for diversity (off by default), keep the top K."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RankConfig:
    k: int = 10
    max_per_category: int = 0        # diversity cap; 0 = off (a cap of 4 cost 6 % NDCG@10 on REES46)
    exclude_recent: bool = False     # also drop every item in the user's recent sequence
    exclude_trigger: bool = True     # drop the item of the event that triggered the recommendation
    exclude_bought: bool = False     # drop the user's recent purchases (off: the learned ranker weighs them,
                                     # `hist_bought`; shoppers come back to what they bought)


def top_k(items: list[str], scores: np.ndarray, *, exclude: set[str], category_of: dict[str, str | None],
          cfg: RankConfig) -> list[tuple[int, float]]:
    """Indexes into `items` with their scores, best first.

    >>> top_k(["a", "b", "c", "d"], np.array([0.9, 0.8, 0.7, 0.1]), exclude={"a"},
    ...       category_of={"b": "x", "c": "x", "d": "y"}, cfg=RankConfig(k=2, max_per_category=1))
    [(1, 0.8), (3, 0.1)]
    """
    order = np.argsort(-scores, kind="stable")   # ties keep candidate order (deterministic)
    values = np.asarray(scores, dtype=np.float64).tolist()    # (a numpy scalar a candidate cost more)
    out: list[tuple[int, float]] = []
    per_cat: dict[str, int] = {}
    seen: set[str] = set()
    for i in order.tolist():
        it = items[i]
        if it in exclude or it in seen or not math.isfinite(values[i]):
            continue
        cat = category_of.get(it)
        if cfg.max_per_category and cat is not None:
            if per_cat.get(cat, 0) >= cfg.max_per_category:
                continue
            per_cat[cat] = per_cat.get(cat, 0) + 1
        seen.add(it)
        out.append((i, values[i]))
        if len(out) >= cfg.k:
            break
    return out


def drop_set(snap, exclude: set | None, trigger, cfg: RankConfig) -> set:
    """What a user's list leaves out: items the caller excludes, the trigger's item, and (if configured)
    the user's recent purchases or whole recent sequence."""
    drop = set(snap.bought if cfg.exclude_bought else ()) | (exclude or set())
    if trigger is not None and trigger.item_id and cfg.exclude_trigger:
        drop.add(trigger.item_id)
    if cfg.exclude_recent:
        drop.update(snap.recent)
    return drop
