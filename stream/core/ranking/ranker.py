"""The online ranker: a river model that keeps learning from what users do with what we showed them.

    impressions (what we ranked and showed, with feature rows) + the users' next events
        -> FeedbackJoin (stream/core/ranking/feedback.py) -> weighted examples -> river learn_one
    candidates -> features (stream/core/scoring/features.py) -> ranker logit -> the order (cascade.py)

By default (the cascade, `lr`) an impression is the list that was shown. With `lr:learned` every event
is a label: the candidate set recstream ranked for the user just before (the state before the event,
with the feature rows it was ranked with) is kept as an impression, and the user's next events within
the window turn the candidates they touch into positives, with sampled candidates as negatives, in the
worker and the backtest alike.

Three models are offered and compared in the backtest:
- "gbdt" (the default, always whole-set): LightGBM trees refit on a sliding window of the newest
  examples (`gbdt.py`, where the measurement that chose it is)
- "lr": StandardScaler | LogisticRegression (SGD) over every feature
- "fm": StandardScaler | FMClassifier (8 factors: pairwise interactions) over `FM_FEATURES`, a
  subset: river's FM learns in pure Python over all feature pairs, about 6x dearer per example on the
  full set (595 pairs) than on these 14 (91 pairs)
river learns one example at a time; scoring a batch's thousands of candidates one dict at a time
would dominate the worker, so predictions use a numpy mirror of the river model's current
parameters (refreshed when it has learned since), tested for parity against `predict_proba_one`.

Persistence: `stream/core/ranking/checkpoint.py`; on top of a scorer: `cascade.py`.
"""
from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass

import numpy as np

from stream.core.ranking.feedback import Example, FeedbackJoin
from stream.core.ranking.gate import OrderGate
from stream.core.ranking.gbdt import WindowedGBDT
from stream.core.ranking.spec import DEFAULT_WEIGHT, MODELS, parse_spec, spec_without, strip_without
from stream.core.scoring.features import FEATURE_NAMES, N_FEATURES

log = logging.getLogger("recstream.ranker")

FM_FEATURES = ("src_covisit", "src_recent", "src_model", "src_content", "transformer_z", "base_z", "base_rank",
               "log_popularity", "trend", "cat_affinity", "cat_log_hours", "price_rel", "log_since_last_s",
               "content_sim")
_COL = {n: i for i, n in enumerate(FEATURE_NAMES)}
_TRANSFORMER_Z, _N_SOURCES = _COL["transformer_z"], _COL["n_sources"]


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def make_model(kind: str, seed: int = 0, background: bool = False):
    if kind == "gbdt":
        return WindowedGBDT(N_FEATURES, seed=seed, background=background)
    from river import facto, linear_model, optim, preprocessing
    if kind == "lr":
        return preprocessing.StandardScaler() | linear_model.LogisticRegression(optimizer=optim.SGD(0.01), l2=1e-4)
    if kind == "fm":
        return preprocessing.StandardScaler() | facto.FMClassifier(
            n_factors=8, weight_optimizer=optim.SGD(0.01), latent_optimizer=optim.SGD(0.01), l2_weight=1e-4,
            l2_latent=1e-4, seed=seed)
    raise ValueError(f"ranker model {kind!r}: expected one of {', '.join(MODELS)}")


@dataclass(frozen=True)
class RankerConfig:
    model: str = "lr"
    window_s: float = 1800.0        # feedback window (event time)
    negatives: int = 4              # sampled negatives per impression with a positive
    min_examples: int = 200         # the ranker's order takes over from the base order after this many examples
    # A number (the default): the cascade, final = base + weight * z(ranker logit) over the base's top
    # `rerank`, learning from the shown lists only. None ("lr:learned"): learn from every event against
    # the whole candidate set it was ranked from, and order the whole set by the learned model alone.
    weight: float | None = DEFAULT_WEIGHT
    rerank: int = 50
    record_max: int = 200           # candidates kept per impression (the best by the current order)
    max_learn_per_batch: int = 5000  # learning budget per batch (the rest are counted as skipped)
    seed: int = 0
    background_fit: bool = False    # gbdt: refit in a background thread (the worker) or inline (the backtest)
    gate_window: int = 1000         # whole-set modes: judgements the gate weighs (`gate.py`); 0: no gate
    without: tuple[str, ...] = ()   # features held at 0 (an ablation: `spec_without`)

    @classmethod
    def for_spec(cls, spec: str, **kw) -> RankerConfig:
        """The configuration a spec names: the whole-set modes learn from every event against the set
        (more negatives per label, a larger first sample before they take over)."""
        model, weight = parse_spec(spec)
        without = spec_without(spec)
        if without:
            kw["without"] = without
        if weight is None:
            kw = {"negatives": 20, "min_examples": 2_000, "record_max": 100, **kw}
            if strip_without(spec).endswith(":ungated"):
                kw["gate_window"] = 0
        return cls(model=model, weight=weight, **kw)


class OnlineRanker:
    """A river model learning online from impressions joined to the users' next events (`FeedbackJoin`),
    scored in batches through a numpy mirror of its parameters. Active once it has learned
    `cfg.min_examples`; `state()`/`load_state()` are what the checkpoint stores."""

    def __init__(self, cfg: RankerConfig = RankerConfig()):
        self.cfg = cfg
        whole = cfg.weight is None
        self.join = FeedbackJoin(int(cfg.window_s * 1000), negatives=cfg.negatives, seed=cfg.seed,
                                 max_open=20_000 if whole else 200_000, close_on_next=whole)
        self.skipped = 0
        self._pending: list[Example] = []     # from superseded impressions, learned with the next feedback
        self.gate = OrderGate(cfg.gate_window) if whole and cfg.gate_window else None
        self.reset()

    def reset(self) -> None:
        """A model that has learned nothing (start, or a rejected checkpoint)."""
        self.model = make_model(self.cfg.model, self.cfg.seed, self.cfg.background_fit)
        self.n_learned = 0
        self._mirror_at = -1
        self._mirror = None

    # ---- learning -------------------------------------------------------------------------------
    def learn(self, examples: list[Example]) -> int:
        budget = self.cfg.max_learn_per_batch
        if len(examples) > budget:
            self.skipped += len(examples) - budget
            examples = examples[:budget]
        if isinstance(self.model, WindowedGBDT):
            self.model.learn_many(self._held(np.stack([ex.x for ex in examples])), np.array([ex.y for ex in examples]),
                                  np.array([ex.weight for ex in examples]))
        else:
            for ex in examples:
                self.model.learn_one(self.as_input(self._held(ex.x[None])[0]), ex.y, w=ex.weight)
        self.n_learned += len(examples)
        return len(examples)

    def _held(self, X: np.ndarray) -> np.ndarray:
        """X with the configuration's left-out features at 0 (a copy; X itself when none are)."""
        if not self.cfg.without:
            return X
        X = np.array(X, copy=True)
        X[:, [_COL[n] for n in self.cfg.without]] = 0.0
        return X

    def as_input(self, x: np.ndarray) -> dict:
        """A feature row as the river model takes it (the FM sees its subset)."""
        if self.cfg.model == "fm":
            return {n: float(x[_COL[n]]) for n in FM_FEATURES}
        return dict(zip(FEATURE_NAMES, x.tolist()))

    def feedback(self, snaps: dict) -> int:
        """Feed the users' newly applied events (bot-like users excluded) to the label join and learn
        from the impressions they close (the newest event time is the watermark). Returns the number
        of examples learned."""
        examples, self._pending = self._pending, []
        newest = 0
        for uid, snap in snaps.items():
            for ev in snap.fresh:
                newest = max(newest, ev.ts)
                if not snap.bot:
                    examples += self.join.observe(uid, ev.event_id, ev.type, ev.item_id, ev.ts)
        examples += self.join.advance(newest)
        if self.gate is not None:                  # judgements by the lists as they were shown (prequential)
            for gains in self.join.judged:
                self.gate.judge(gains)
        self.join.judged.clear()
        return self.learn(examples) if examples else 0

    @property
    def whole_set(self) -> bool:
        """Ranks (and learns from) the whole candidate set, not a cascade over the base's top."""
        return self.cfg.weight is None

    @property
    def masks_in_sample(self) -> bool:
        """Learns from rows whose model columns are missing (`features.in_sample`): the trees route NaN."""
        return isinstance(self.model, WindowedGBDT)

    def recorded(self, picked: list[int], scores: np.ndarray, rows: np.ndarray | None = None) -> list[int]:
        """The candidate rows an impression keeps: what was shown (cascade), or the best `record_max` of
        the whole set by the current order, the shown ones always among them. Rows masked as the model's
        in-sample (`features.in_sample`) that only the model's sources proposed are left out: their
        being there at all is the model's (inflated) judgement."""
        if not self.whole_set:
            return picked
        order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[: self.cfg.record_max]
        keep = list(dict.fromkeys([*picked, *order.tolist()]))
        if rows is not None and np.isnan(rows[:, _TRANSFORMER_Z]).any():
            keep = [i for i in keep if rows[i, _N_SOURCES] > 0]
        return keep

    def record(self, user: str, ts: int, key: str, items: list[str], X: np.ndarray, trigger_id=None,
               gains: dict | None = None) -> None:
        self._pending += self.join.impression(user, ts, key, items, np.asarray(X, dtype=np.float32), trigger_id,
                                              gains)

    # ---- scoring --------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        if isinstance(self.model, WindowedGBDT) and not self.model.fitted:
            return False
        return self.n_learned >= self.cfg.min_examples

    def importance(self) -> dict[str, float]:
        """How much each feature decides the order: the trees' share of split gain (gbdt), or the
        share of |weight| on standardised features (lr; the FM's linear part)."""
        if isinstance(self.model, WindowedGBDT):
            share = self.model.importance()
        else:
            p = self._params()
            if p is None:
                return {}
            w = np.abs(p[3])
            share = w / w.sum() if w.sum() > 0 else w
        return {n: float(v) for n, v in zip(FEATURE_NAMES, share)}

    def _params(self):
        if self._mirror_at != self.n_learned:
            self._mirror = mirror_params(self.model)
            self._mirror_at = self.n_learned
        return self._mirror

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(n, N_FEATURES) -> (n,) raw scores (log-odds) of the river model, vectorised."""
        X = self._held(X)
        if isinstance(self.model, WindowedGBDT):
            return self.model.logits(X)
        p = self._params()
        if p is None or len(X) == 0:
            return np.zeros(len(X))
        mean, scale, bias, w, V = p
        Z = (X - mean) * scale
        out = bias + Z @ w
        if V is not None:
            ZV = Z @ V
            out += 0.5 * ((ZV ** 2).sum(axis=1) - (Z ** 2) @ (V ** 2).sum(axis=1))
        return out

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return sigmoid(self.logits(X))

    # ---- persistence ----------------------------------------------------------------------------
    def state(self) -> bytes:
        return pickle.dumps({"model": self.model, "n_learned": self.n_learned, "cfg_model": self.cfg.model,
                             "gate": self.gate.state() if self.gate is not None else None},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def load_state(self, payload: bytes) -> None:
        st = pickle.loads(payload)   # noqa: S301 - written by our own workers to our own Redis, checksummed
        if st.get("cfg_model") != self.cfg.model:
            raise ValueError(f"checkpoint holds a {st.get('cfg_model')!r} model, this ranker is {self.cfg.model!r}")
        self.model, self.n_learned = st["model"], int(st["n_learned"])
        self._mirror_at = -1
        if self.gate is not None:
            self.gate.load_state(st.get("gate"))


def mirror_params(model):
    """(mean, 1/std, bias, weights, latents or None) as arrays in FEATURE_NAMES order, from a river
    `StandardScaler | LogisticRegression` or `StandardScaler | FMClassifier`; None before any learning."""
    scaler, head = model.steps["StandardScaler"], list(model.steps.values())[-1]
    if not scaler.means:
        return None
    names = FEATURE_NAMES
    mean = np.array([scaler.means.get(n, 0.0) for n in names])
    var = np.array([scaler.vars.get(n, 0.0) for n in names])
    scale = np.where(var > 0, 1.0 / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    w = np.array([head.weights.get(n, 0.0) for n in names])
    bias = float(head.intercept)
    V = None
    if hasattr(head, "latents"):
        lat = head.latents
        V = np.stack([np.asarray(lat[n], dtype=np.float64) if n in lat and n in scaler.means
                      else np.zeros(head.n_factors) for n in names])
    return mean, scale, bias, w, V
