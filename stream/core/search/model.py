"""The re-ranker's model: a logistic model over a result page's features, learned online (AdaGrad) by every
process that sees clicks, and read by every process that re-ranks.

The weights live in one Redis hash (`{P}search:model`). A learner reads them once per batch, runs its
examples through AdaGrad in order and adds the *change* with HINCRBYFLOAT, so several workers learning at
once add their steps up instead of overwriting each other (Hogwild!-style; the model is a handful of
floats). Readers cache the hash for `ttl_s`.

No learning rate is chosen by hand: the model is learned at each of `RATES` side by side (five copies of
a dozen floats), each scored by its progressive log loss (every example predicted before it is learned),
and serving uses the copy with the lowest loss so far: online model selection by progressive
validation. (Measured once on the searching shoppers: a rate of 0.1 alone was still far from the batch
optimum after 40,000 examples, with weights of the wrong sign; 1.0 was near it; which one wins depends on
the features' scales and the traffic, so the stream decides.)

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
RATES = (0.03, 0.1, 0.3, 1.0, 3.0)
_ALL = FEATURES + TRAIN_ONLY


def position_feature(pos: int) -> float:
    """The displayed position as the model sees it in training (0 = top)."""
    return 1.0 / math.log2(2 + pos)


class SearchModel:
    """Weights for `FEATURES` (+ the training-only `pos` and `bias`) per learning rate, their AdaGrad state
    and progressive loss, and the examples learned (`n`)."""

    def __init__(self, client, prefix: str, *, l2: float = 1e-4, ttl_s: float = 1.0):
        self.client, self.key = client, f"{prefix}search:model"
        self.l2, self.ttl_s = l2, ttl_s
        self._cached: tuple[float, dict[str, float]] = (-1.0, {})

    def read(self, fresh: bool = False) -> dict[str, float]:
        at, w = self._cached
        if fresh or time.monotonic() - at > self.ttl_s:
            w = {k.decode(): float(v) for k, v in self.client.hgetall(self.key).items()}
            self._cached = (time.monotonic(), w)
        return w

    def examples(self, raw: dict | None = None) -> int:
        return int((self.read() if raw is None else raw).get("n", 0))

    def chosen(self, raw: dict | None = None) -> float:
        """The learning rate whose copy has the lowest progressive log loss (summed over the same examples for
        every copy; the first before any)."""
        raw = self.read() if raw is None else raw
        return min(RATES, key=lambda r: (raw.get(f"{r}:loss", 0.0), RATES.index(r)))

    def params(self, raw: dict | None = None) -> dict[str, float]:
        """The chosen copy's weights, training-only ones included."""
        raw = self.read() if raw is None else raw
        r = self.chosen(raw)
        return {f: raw.get(f"{r}:{f}", 0.0) for f in _ALL}

    def weights(self, raw: dict | None = None) -> np.ndarray:
        p = self.params(raw)
        return np.array([p[f] for f in FEATURES])

    def learn(self, examples: list[tuple[np.ndarray, int, int]]) -> int:
        """(features, displayed position, label) in order -> one AdaGrad pass per rate, the changes and the
        progressive losses added to the stored model in one round-trip. Returns the examples learned."""
        if not examples:
            return 0
        raw = self.read(fresh=True)
        rates = np.array(RATES)[:, None]
        W = np.array([[raw.get(f"{r}:{f}", 0.0) for f in _ALL] for r in RATES])
        G2 = np.array([[raw.get(f"{r}:g2:{f}", 0.0) for f in _ALL] for r in RATES])
        W0, G0 = W.copy(), G2.copy()
        loss = np.zeros(len(RATES))
        for x, pos, y in examples:
            z = np.concatenate([x, [position_feature(pos), 1.0]])
            p = 1.0 / (1.0 + np.exp(-np.clip(W @ z, -30, 30)))
            loss -= np.log(np.where(y, p, 1 - p) + 1e-12)          # predicted before it is learned
            g = (p - y)[:, None] * z + self.l2 * W
            G2 += g * g
            W -= rates * g / np.sqrt(G2 + 1e-8)
        n = len(examples)
        pipe = self.client.pipeline(transaction=False)
        for i, r in enumerate(RATES):
            for j, f in enumerate(_ALL):
                pipe.hincrbyfloat(self.key, f"{r}:{f}", float(W[i, j] - W0[i, j]))
                pipe.hincrbyfloat(self.key, f"{r}:g2:{f}", float(G2[i, j] - G0[i, j]))
            pipe.hincrbyfloat(self.key, f"{r}:loss", float(loss[i]))
        pipe.hincrby(self.key, "n", n)
        pipe.execute()
        self._cached = (-1.0, {})
        return n
