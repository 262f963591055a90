"""Stage 6: turn ranked candidates into `Recommendation` v1 messages (one per user per batch)."""
from __future__ import annotations

import hashlib
import time

import numpy as np

from schemas import Event, RankedItem, Recommendation
from stream.core.candidates import SOURCE_NAMES


def recommendation_id(user: str, event_id: str) -> str:
    """Deterministic (a redelivered trigger gives the same id) and unique per (user, event): event ids are
    unique per user only.

    >>> recommendation_id("u1", "e1") != recommendation_id("u2", "e1")
    True
    """
    digest = hashlib.blake2b(f"{len(user)}:{user}{event_id}".encode("utf-8", "surrogatepass"), digest_size=10)
    return "rec:" + digest.hexdigest()


def build(user: str, trigger: Event, items: list[str], feats: np.ndarray, picked: list[tuple[int, float]],
          component_scores: dict[str, np.ndarray], model_versions: dict[str, str],
          produced_at: int | None = None, variant: str | None = None) -> Recommendation:
    ranked = []
    if picked:
        idx = [i for i, _ in picked]
        rows = feats[idx]
        best = rows.argmax(axis=1).tolist()
        proposed = (rows > 0).tolist()
        comps = {name: np.round(arr[idx], 6).tolist() for name, arr in component_scores.items()}
        for r, (i, score) in enumerate(picked):
            src = tuple(s for s, on in zip(SOURCE_NAMES, proposed[r]) if on)
            comp = {name: v[r] for name, v in comps.items() if v[r] == v[r]}   # NaN: no opinion
            ranked.append(RankedItem(items[i], round(score, 6), SOURCE_NAMES[best[r]] if src else "unknown",
                                     src, comp))
    return Recommendation(
        recommendation_id=recommendation_id(user, trigger.event_id),
        user_id=user,
        trigger_event_id=trigger.event_id,
        event_ts=trigger.ts,
        items=tuple(ranked),
        model_versions=model_versions,
        produced_at=produced_at or int(time.time() * 1000),
        variant=variant,
    )
