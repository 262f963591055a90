"""Stage 6: turn ranked candidates into `Recommendation` v1 messages (one per user per batch)."""
from __future__ import annotations

import time

import numpy as np

from schemas import Event, RankedItem, Recommendation
from stream.candidates import SOURCE_NAMES


def build(user: str, trigger: Event, items: list[str], feats: np.ndarray, picked: list[tuple[int, float]],
          component_scores: dict[str, np.ndarray], model_versions: dict[str, str],
          produced_at: int | None = None) -> Recommendation:
    ranked = []
    for i, score in picked:
        row = feats[i]
        src = [s for s, v in zip(SOURCE_NAMES, row) if v > 0]
        best = SOURCE_NAMES[int(np.argmax(row))] if len(src) else "unknown"
        comp = {name: round(float(arr[i]), 6) for name, arr in component_scores.items() if np.isfinite(arr[i])}
        ranked.append(RankedItem(items[i], round(score, 6), best, tuple(src), comp))
    return Recommendation(
        recommendation_id=f"rec:{trigger.event_id}",   # deterministic: a redelivered trigger gives the same id
        user_id=user,
        trigger_event_id=trigger.event_id,
        event_ts=trigger.ts,
        items=tuple(ranked),
        model_versions=model_versions,
        produced_at=produced_at or int(time.time() * 1000),
    )
