"""The re-ranker's model: a logistic model over a result page's features, learned online (AdaGrad) by every
process that sees clicks, and read by every process that re-ranks.

The weights live in one Redis hash (`{P}search:model`). A learner reads them once per batch, runs its
examples through AdaGrad in order and adds the *change* with HINCRBYFLOAT, so several workers learning at
once add their steps up instead of overwriting each other (Hogwild!-style; the model is a handful of
floats). Readers cache the hash for `ttl_s`.

Position bias: a click depends on where an item was shown as well as on what it is. Training adds the
displayed position as a feature of its own (`pos`), which serving leaves out (it is the same for every
order being compared): the position-aware training of Guo et al., "PAL" (RecSys 2019). Without it, a
model fit on pages shown in the engine's order learns "the engine's rank predicts clicks" from the
position effect alone.
"""
from __future__ import annotations

import math
import time

import numpy as np

FEATURES = ("engine_rank", "engine_score", "text_match", "category", "brand", "history", "content_affinity",
            "transformer", "popularity", "trend")
TRAIN_ONLY = ("pos", "bias")


def position_feature(pos: int) -> float:
    """The displayed position as the model sees it in training (0 = top)."""
    return 1.0 / math.log2(2 + pos)


class SearchModel:
    """Weights for `FEATURES` (+ the training-only `pos` and `bias`), AdaGrad state, examples learned."""

    def __init__(self, client, prefix: str, *, lr: float = 0.1, l2: float = 1e-4, ttl_s: float = 1.0):
        self.client, self.key = client, f"{prefix}search:model"
        self.lr, self.l2, self.ttl_s = lr, l2, ttl_s
        self._cached: tuple[float, dict[str, float]] = (-1.0, {})

    def read(self, fresh: bool = False) -> dict[str, float]:
        at, w = self._cached
        if fresh or time.monotonic() - at > self.ttl_s:
            w = {k.decode(): float(v) for k, v in self.client.hgetall(self.key).items()}
            self._cached = (time.monotonic(), w)
        return w

    def weights(self, w: dict[str, float] | None = None) -> np.ndarray:
        w = self.read() if w is None else w
        return np.array([w.get(f, 0.0) for f in FEATURES])

    def examples(self, w: dict[str, float] | None = None) -> int:
        return int((self.read() if w is None else w).get("n", 0))

    def learn(self, examples: list[tuple[np.ndarray, int, int]]) -> int:
        """(features, displayed position, label) in order -> one AdaGrad pass, its change added to the
        stored model in one round-trip. Returns the examples learned."""
        if not examples:
            return 0
        w0 = self.read(fresh=True)
        names = FEATURES + TRAIN_ONLY
        w = np.array([w0.get(f, 0.0) for f in names])
        g2 = np.array([w0.get("g2:" + f, 0.0) for f in names])
        w_start, g2_start = w.copy(), g2.copy()
        for x, pos, y in examples:
            z = np.concatenate([x, [position_feature(pos), 1.0]])
            p = 1.0 / (1.0 + math.exp(-float(np.clip(w @ z, -30, 30))))
            g = (p - y) * z + self.l2 * w
            g2 += g * g
            w -= self.lr * g / np.sqrt(g2 + 1e-8)
        pipe = self.client.pipeline(transaction=False)
        for i, f in enumerate(names):
            pipe.hincrbyfloat(self.key, f, float(w[i] - w_start[i]))
            pipe.hincrbyfloat(self.key, "g2:" + f, float(g2[i] - g2_start[i]))
        pipe.hincrby(self.key, "n", len(examples))
        pipe.execute()
        self._cached = (-1.0, {})
        return len(examples)
