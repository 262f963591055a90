"""Personalised re-ranking of a search result page: the shop's engine returns a list for a query, recstream
reorders it for the user.

    (user, query, [(item, engine score?)...], k) --features--> X (items x FEATURES) --SearchModel--> order

Rules, in this order (the answer's `rule` says which one decided):
  1. it never drops an item the engine returned and never adds one: the answer is a permutation of the
     request's items (only the first `k` places are re-ranked; the rest follow in the engine's order);
  2. a user with no history (no profile, no affinity) gets the engine's order: a cold user is never worse off;
  3. until the model has learned from `min_examples` shown items it keeps the engine's order;
  4. the control keeps the engine's order: users in the `holdout` share (RECSTREAM_SEARCH_HOLDOUT, by a salted
     hash, sticky) or a caller's `keep_order`;
  5. otherwise: by the learned score, ties in the engine's order.

Features per item (`model.FEATURES`): the engine's rank and score, the query-item text match (cosine of the
text encoder's embeddings; word overlap with the title without an encoder), the user's affinity for the
item's category and brand, whether the user touched the item, the item's similarity to the user's recent
items, the transformer's score for the item after the user's sequence, popularity and trend. Page-relative
features (scores, popularity) are z-scored within the page. Every page shown is recorded under the user's
keys (with the feature rows and the displayed order) for the learner (`learn.py`).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np
import orjson

from stream.core.candidates.gather import item_stats
from stream.core.experiments import unit_hash
from stream.core.search.model import FEATURES, SearchModel

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class RerankConfig:
    min_examples: int = 200          # shown items learned from before the model may reorder a page
    holdout: float = 0.0             # share of users (a salted hash) kept on the engine's order: the control
    salt: str = "search"
    window_s: float = 600.0          # a page's clicks count within this much event time after it was shown
    max_pages: int = 5               # open pages kept per user
    max_records: int = 20            # page records kept per user at most, whatever the worker has seen (a
                                     # client that searches without sending events: the oldest are dropped)
    page_ttl_s: int = 3600
    learn_top: int = 20              # displayed places recorded for learning
    reasons: int = 3                 # reasons given per item


PAGES_OUTCOMES = "search:pages"        # {P}search:pages: "<rule>:shown|clicked" -> pages closed, by the rule that ordered them


RULES = {"cold": "engine order: no history", "learning": "engine order: the model has learned from {} of {} shown items",
         "control": "engine order: control", "reranked": "re-ranked"}   # the decision's code -> the answer's `rule`


def in_share(user: str, share: float, salt: str) -> bool:
    """Whether `user` falls in the first `share` of users by a salted BLAKE2b hash (sticky, as experiments
    assign): the engine-order control, or an arm of the search simulator.

    >>> sum(in_share(f"u{n}", 0.25, "s") for n in range(4000)) / 4000
    0.2445
    """
    return share > 0 and unit_hash(salt, user) < share


def pages_key(user_key: str) -> str:
    """The user's open search pages: a hash (page id -> record) in the user's hash slot."""
    return f"{user_key}:sp"


def _z(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 1e-12 else np.zeros_like(x)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (b @ a) / ((np.linalg.norm(b, axis=1) + 1e-12) * (np.linalg.norm(a) + 1e-12))


def words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


class SearchReranker:
    """Re-ranks result pages over a pipeline's state (profiles, catalog, content, scorer). Read-only on the
    profiles; writes only the page records."""

    def __init__(self, pipeline, cfg: RerankConfig = RerankConfig(), model: SearchModel | None = None):
        self.p, self.cfg = pipeline, cfg
        self.model = model or SearchModel(pipeline.client, pipeline.prefix)
        self._n = 0
        self.dropped_pages = 0          # page records dropped past `max_records` (never learned from)

    # ---- features ---------------------------------------------------------------------------------------
    def features(self, snap, query: str, items: list[str], engine_scores: list[float | None], now_ts: int) -> np.ndarray:
        p, n = self.p, len(items)
        X = np.zeros((n, len(FEATURES)))
        col = {f: j for j, f in enumerate(FEATURES)}
        X[:, col["engine_rank"]] = 1.0 / np.log2(2 + np.arange(n))
        given = [s for s in engine_scores if s is not None]
        if given:                                  # an item without a score gets the page's lowest
            X[:, col["engine_score"]] = _z(np.array([min(given) if s is None else s for s in engine_scores], float))
        meta = p.catalog.meta(items)
        cats = snap.top("c", 1000) if snap else []
        brands = snap.top("b", 1000) if snap else []
        ctot = sum(v for _, v in cats) or 1.0
        btot = sum(v for _, v in brands) or 1.0
        cat_aff, brand_aff = dict(cats), dict(brands)
        touched = set(snap.recent) | set(snap.bought) if snap else set()
        for i, it in enumerate(items):
            c, b, _ = meta[it]
            X[i, col["category"]] = cat_aff.get(c, 0.0) / ctot if c else 0.0
            X[i, col["brand"]] = brand_aff.get(b, 0.0) / btot if b else 0.0
            X[i, col["history"]] = 1.0 if it in touched else 0.0
        self._text(X, col, snap, query, items)
        tr = p.scorer.transformer
        if tr is not None and snap and snap.recent:
            known = np.array([it in tr.index for it in items])
            if known.any():
                ids = np.array([[tr.index.get(it, 0) for it in items]], dtype=np.int64)
                s = tr.score_many(tr.encode_history(snap.recent)[None, :], ids)[0].astype(float)
                X[known, col["transformer"]] = _z(s[known])
        stats = item_stats(p.client, p.profiles.keys, p.profiles.cfg.trend_half_life_s, items, now_ts)
        X[:, col["popularity"]] = _z(np.log1p([stats[i][0] for i in items]))
        X[:, col["trend"]] = _z(np.log1p([stats[i][1] for i in items]))
        return X

    def _text(self, X: np.ndarray, col: dict, snap, query: str, items: list[str]) -> None:
        content = self.p.content
        vecs = [content.index.vector(it) for it in items] if content is not None else [None] * len(items)
        have = np.array([v is not None for v in vecs])
        if have.any():
            V = np.stack([v for v in vecs if v is not None])
            X[have, col["text_match"]] = _cos(content.embed_queries([query])[0], V)
            recent = [content.index.vector(i) for i in (snap.recent[:5] if snap else [])]
            recent = [v for v in recent if v is not None]
            if recent:
                X[have, col["content_affinity"]] = _cos(np.average(np.stack(recent), axis=0,
                                                                   weights=0.7 ** np.arange(len(recent))), V)
        if not have.all():                     # no embedding: the words of the query found in the title
            q = words(query) or {""}
            pipe = self.p.client.pipeline(transaction=False)
            missing = [i for i, h in enumerate(have) if not h]
            for i in missing:
                pipe.hget(self.p.catalog.keys.item(items[i]), "title")
            for i, title in zip(missing, pipe.execute()):
                X[i, col["text_match"]] = len(q & words((title or b"").decode())) / len(q)

    # ---- the answer ---------------------------------------------------------------------------------------
    def rerank(self, user: str, query: str, items: list[str], engine_scores: list[float | None] | None = None,
               k: int | None = None, *, now_ts: int, keep_order: bool = False, search_id: str | None = None,
               snap=None) -> dict:
        """The page for `user`, as a dict: search_id, rule, model_examples, items (item_id, engine_rank, score,
        reasons). `snap`: the user's profile if the caller read it already."""
        n = len(items)
        if len(set(items)) != n:
            raise ValueError("items: an item appears twice in the engine's list")
        engine_scores = list(engine_scores) if engine_scores is not None else [None] * n
        k = n if k is None else max(0, min(k, n))
        if snap is None:
            snap = self.p.profiles.read([user])[user]
        cold = not snap.recent and not snap.affinity
        w = self.model.read()
        learned = self.model.examples(w)
        X = self.features(None if cold else snap, query, items, engine_scores, now_ts) if n else np.zeros((0, len(FEATURES)))
        weights = self.model.weights(w)
        score = X @ weights
        if cold:
            code = "cold"
        elif learned < self.cfg.min_examples:
            code = "learning"
        elif keep_order or in_share(user, self.cfg.holdout, self.cfg.salt):
            code = "control"
        else:
            code = "reranked"
        order = list(range(n))
        if code == "reranked":
            top = sorted(range(n), key=lambda i: (-score[i], i))[:k]
            order = top + sorted(set(range(n)) - set(top))
        self._n += 1
        sid = search_id or hashlib.blake2b(f"{user}\x00{query}\x00{now_ts}\x00{self._n}".encode(),
                                           digest_size=8).hexdigest()
        contrib = (X - X.mean(axis=0)) * weights if n else X
        out = [{"item_id": items[i], "engine_rank": i, "score": round(float(score[i]), 4),
                "reasons": self._reasons(contrib[i], X[i])} for i in order]
        self._record(user, sid, query, now_ts, [items[i] for i in order], X[order], code)
        rule = RULES[code].format(learned, self.cfg.min_examples)
        return {"search_id": sid, "user_id": user, "query": query, "rule": rule, "model_examples": learned,
                "model_rate": self.model.chosen(w), "items": out}

    def _reasons(self, contrib: np.ndarray, x: np.ndarray) -> list[dict]:
        top = [j for j in np.argsort(-contrib, kind="stable")[: self.cfg.reasons] if contrib[j] > 1e-6]
        return [{"feature": FEATURES[j], "value": round(float(x[j]), 4), "contribution": round(float(contrib[j]), 4)}
                for j in top]

    def _record(self, user: str, sid: str, query: str, ts: int, shown: list[str], X: np.ndarray, code: str) -> None:
        m = self.cfg.learn_top
        rec = {"id": sid, "ts": ts, "q": query, "items": shown[:m], "x": np.round(X[:m], 5).tolist(), "clicked": [],
               "rule": code}
        key = pages_key(self.p.profiles.keys.user(user))
        pipe = self.p.client.pipeline(transaction=False)
        pipe.hset(key, sid, orjson.dumps(rec))
        pipe.expire(key, self.cfg.page_ttl_s)
        pipe.hlen(key)
        if pipe.execute()[-1] > self.cfg.max_records:
            self._trim(key)

    def _trim(self, key: str) -> None:
        """Drop a user's oldest page records beyond `max_records` (unreadable ones first). The worker closes
        all but the newest `max_pages` when the user's events come; a client that only searches would
        otherwise grow the record until it expires, which each new search postpones."""
        def age(item):
            try:
                pg = orjson.loads(item[1])
                return (1, int(pg["ts"]), str(pg["id"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                return (0, 0, "")
        records = sorted(self.p.client.hgetall(key).items(), key=age)
        drop = [field for field, _ in records[: max(0, len(records) - self.cfg.max_records)]]
        if drop:
            self.p.client.hdel(key, *drop)
            self.dropped_pages += len(drop)

