"""The online ranker: a river model that keeps learning from what users do with what we showed them.

    impressions (what we ranked and showed, with feature rows) + the users' next events
        -> FeedbackJoin (stream/core/ranking/feedback.py) -> weighted examples -> river learn_one
    candidates -> features (stream/core/scoring/features.py) -> ranker logit -> blended with the base score

Two river models are offered and compared in the backtest:
- "lr": StandardScaler | LogisticRegression (SGD) over every feature
- "fm": StandardScaler | FMClassifier (8 factors: pairwise interactions) over `FM_FEATURES`, a
  subset: river's FM learns in pure Python over all feature pairs, about 6x dearer per example on the
  full set (595 pairs) than on these 14 (91 pairs)
river learns one example at a time; scoring a batch's thousands of candidates one dict at a time
would dominate the worker, so predictions use a numpy mirror of the river model's current
parameters (refreshed when it has learned since), tested for parity against `predict_proba_one`.

Persistence: `RankerCheckpoint` stores the river model in Redis (pickled, with a format tag, the
feature list, a SHA-256 of the payload and a version counter); a checkpoint that fails any check is
rejected with a log line and the ranker starts from scratch. Several workers: one model per
worker, each seeded at start from the group's newest checkpoint and writing it back (last writer
wins). The ranker learns population-level weights over 35 features, not per-user state, and key
partitioning gives each worker an unbiased sample of users, so the workers' models converge to the
same place; averaging would add coordination for little gain, and losing a checkpoint interval of
one worker's learning costs little.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import time
from dataclasses import dataclass

import numpy as np

from stream.core.scoring.features import FEATURE_NAMES, UserView, batch_features, zscore
from stream.core.ranking.feedback import Example, FeedbackJoin
from stream.core.scoring import CandidateBatch, components_of

log = logging.getLogger("recstream.ranker")

MODELS = ("lr", "fm")
FM_FEATURES = ("src_covisit", "src_recent", "src_model", "src_content", "transformer_z", "base_z", "base_rank",
               "log_popularity", "trend", "cat_affinity", "cat_log_hours", "price_rel", "log_since_last_s",
               "content_sim")
CHECKPOINT_FORMAT = "recstream-ranker/1"
_COL = {n: i for i, n in enumerate(FEATURE_NAMES)}


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def parse_spec(spec: str) -> tuple[str, float]:
    """'lr' or 'lr:2.5' (model, blend weight).

    >>> parse_spec("fm:2")
    ('fm', 2.0)
    """
    model, _, w = spec.partition(":")
    if model not in MODELS:
        raise ValueError(f"ranker model {model!r}: expected one of {', '.join(MODELS)}")
    return model, float(w) if w else RankerConfig.weight


def make_model(kind: str, seed: int = 0):
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
    min_examples: int = 200         # the ranker's score joins the blend once it has learned this many
    weight: float = 0.5             # final = base + weight * z(ranker logit), over the base's top `rerank`
    rerank: int = 50                # candidates re-ranked: what the ranker learned on (what was shown)
    max_learn_per_batch: int = 5000  # learning budget per batch (the rest are counted as skipped)
    seed: int = 0


class OnlineRanker:
    def __init__(self, cfg: RankerConfig = RankerConfig()):
        self.cfg = cfg
        self.join = FeedbackJoin(int(cfg.window_s * 1000), negatives=cfg.negatives, seed=cfg.seed)
        self.skipped = 0
        self._pending: list[Example] = []     # from superseded impressions, learned with the next feedback
        self.reset()

    def reset(self) -> None:
        """A model that has learned nothing (start, or a rejected checkpoint)."""
        self.model = make_model(self.cfg.model, self.cfg.seed)
        self.n_learned = 0
        self._mirror_at = -1
        self._mirror = None

    # ---- learning -------------------------------------------------------------------------------
    def learn(self, examples: list[Example]) -> int:
        budget = self.cfg.max_learn_per_batch
        if len(examples) > budget:
            self.skipped += len(examples) - budget
            examples = examples[:budget]
        for ex in examples:
            self.model.learn_one(self.as_input(ex.x), ex.y, w=ex.weight)
        self.n_learned += len(examples)
        return len(examples)

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
        return self.learn(examples) if examples else 0

    def record(self, user: str, ts: int, key: str, items: list[str], X: np.ndarray, trigger_id=None) -> None:
        self._pending += self.join.impression(user, ts, key, items, X, trigger_id)

    # ---- scoring --------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.n_learned >= self.cfg.min_examples

    def _params(self):
        if self._mirror_at != self.n_learned:
            self._mirror = mirror_params(self.model)
            self._mirror_at = self.n_learned
        return self._mirror

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(n, N_FEATURES) -> (n,) raw scores (log-odds) of the river model, vectorised."""
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
        return pickle.dumps({"model": self.model, "n_learned": self.n_learned, "cfg_model": self.cfg.model},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def load_state(self, payload: bytes) -> None:
        st = pickle.loads(payload)   # noqa: S301 - written by our own workers to our own Redis, checksummed
        if st.get("cfg_model") != self.cfg.model:
            raise ValueError(f"checkpoint holds a {st.get('cfg_model')!r} model, this ranker is {self.cfg.model!r}")
        self.model, self.n_learned = st["model"], int(st["n_learned"])
        self._mirror_at = -1


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


class RankerCheckpoint:
    """The ranker's state in Redis under `{prefix}ranker:{group}:{model}` (a hash)."""

    def __init__(self, client, prefix: str, group: str, model: str):
        self.client = client
        self.key = f"{prefix}ranker:{group}:{model}"

    def save(self, ranker: OnlineRanker) -> int:
        payload = ranker.state()
        version = int(self.client.hincrby(self.key, "version", 1))
        self.client.hset(self.key, mapping={
            "format": CHECKPOINT_FORMAT, "features": ",".join(FEATURE_NAMES), "model": ranker.cfg.model,
            "n_learned": ranker.n_learned, "saved_at": int(time.time() * 1000),
            "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload})
        log.info("ranker checkpoint v%d saved to %s (%d examples learned, %d bytes)", version, self.key,
                 ranker.n_learned, len(payload))
        return version

    def restore(self, ranker: OnlineRanker) -> bool:
        """Load the newest checkpoint into `ranker`; False (and a log line) if there is none or it is bad."""
        h = self.client.hgetall(self.key)
        if not h:
            log.info("no ranker checkpoint at %s: starting from scratch", self.key)
            return False
        try:
            fmt = h.get(b"format", b"").decode()
            if fmt != CHECKPOINT_FORMAT:
                raise ValueError(f"format {fmt!r}, expected {CHECKPOINT_FORMAT!r}")
            if h.get(b"features", b"").decode() != ",".join(FEATURE_NAMES):
                raise ValueError("it was trained on another feature list")
            payload = h.get(b"payload", b"")
            if hashlib.sha256(payload).hexdigest() != h.get(b"sha256", b"").decode():
                raise ValueError("payload checksum mismatch (corrupted)")
            ranker.load_state(payload)
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint must never stop the worker
            log.error("ranker checkpoint %s v%s rejected: %s; starting the ranker from scratch", self.key,
                      h.get(b"version", b"?").decode(), exc)
            ranker.reset()
            return False
        log.info("ranker restored from %s v%s (%d examples learned)", self.key, h[b"version"].decode(),
                 ranker.n_learned)
        return True


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


class RankerKeeper:
    """The worker's side of persistence: restore at start, save every `every_s` seconds (from the
    thread that trains the ranker, between two batches) and at shutdown."""

    def __init__(self, ranker: OnlineRanker, checkpoint: RankerCheckpoint, every_s: float = 30.0):
        self.ranker, self.checkpoint, self.every_s = ranker, checkpoint, every_s
        self._next = time.monotonic() + every_s
        self._saved_at = -1

    def restore(self) -> bool:
        ok = self.checkpoint.restore(self.ranker)
        self._saved_at = self.ranker.n_learned
        return ok

    def maybe_save(self, _result=None) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            if self.ranker.n_learned != self._saved_at:
                self.save()

    def save(self) -> None:
        self.checkpoint.save(self.ranker)
        self._saved_at = self.ranker.n_learned


class RankedScorer:
    """base scorer + online ranker, a cascade: the base scorer's top `rerank` candidates are re-ranked by
    base + weight * z(ranker logit over those candidates); the rest keep the base order below them.
    The ranker learned from shown lists, so it only judges the part of the list it knows; and only
    once it has learned `min_examples` (until then the base order; its probability is still reported)."""

    name = "ranked"
    needs_item_stats = True

    def __init__(self, base, ranker: OnlineRanker):
        self.base, self.ranker = base, ranker
        self.transformer = getattr(base, "transformer", None)
        self.version = f"{base.version}+ranker-{ranker.cfg.model}"

    def features(self, batch: CandidateBatch, comps: dict) -> list[np.ndarray]:
        tr = comps.get("transformer")
        stats = batch.item_stats or {}
        trend_max = max((v[1] for v in stats.values()), default=0.0) or 1.0
        none = (0.0, 0.0)
        views, metas, pops, trends = [], [], [], []
        for u, uid in enumerate(batch.users):
            items = batch.items[u]
            snap = batch.snapshots[uid]
            views.append(UserView(snap.affinity, snap.aff_ts, snap.last_ts, snap.prev_ts, snap.last_type,
                                  snap.price_mean, len(snap.recent)))
            metas.append([batch.meta.get(i, (None, None, None)) for i in items])
            st = [stats.get(i, none) for i in items]
            pops.append(np.array([p for p, _ in st], dtype=np.float64))
            trends.append(np.array([t for _, t in st], dtype=np.float64) / trend_max)
        return batch_features(batch.features, tr, comps[self.base.name], metas, views, batch.now_ts, pops, trends,
                              batch.content_sim)

    def score_components(self, batch: CandidateBatch) -> dict[str, list[np.ndarray]]:
        comps = components_of(self.base, batch)
        key = ("features", id(self.base))      # the same rows for every ranker over this base scorer
        feats = batch.cache.get(key)
        if feats is None:
            feats = batch.cache[key] = self.features(batch, comps)
        batch.extra["features"] = feats
        base = comps[self.base.name]
        probs, final = [], []
        active = self.ranker.active
        w = self.ranker.cfg.weight
        sizes = [len(X) for X in feats]
        all_logits = self.ranker.logits(np.vstack(feats)) if sum(sizes) else np.zeros(0)   # one product per batch
        all_probs = sigmoid(all_logits)
        ends = np.cumsum(sizes)
        for b, end, size in zip(base, ends, sizes):
            logit = all_logits[end - size: end]
            probs.append(all_probs[end - size: end])
            final.append(rerank_top(b, logit, self.ranker.cfg.rerank, w) if active else b.copy())
        return {**comps, "ranker": probs, self.name: final}

    def score(self, batch: CandidateBatch) -> list[np.ndarray]:
        return self.score_components(batch)[self.name]

