"""recstream as a system of the backtest: the pipeline core against a private Redis key prefix, assembled
by the composition root, with its online-ranker variants beside it."""
from __future__ import annotations

import time
import uuid

import numpy as np

from schemas import Event, Rejected, validate_item
from stream.config.compose import assemble, make_ranker
from stream.core.ranking.cascade import RankedScorer
from stream.core.ranking.rank import RankConfig
from stream.core.scoring.transformer import BlendedScorer, OnnxScorer
from stream.core.stages import Ingested
from stream.core.storage.store import connect
from stream.evaluation.baselines import (CoVisitKNN, CoVisitSymmetric, MostPopular, RecentItems, RiverMF,
                                         TrendingPopular)

NO_EXPLORE = " (no exploration)"     # a variant's lists without the exploration slot (the backtest's tracks)
RETRAINED = " (retrained)"           # the same system with its model retrained at event time (--retrain-every)
CANDIDATE = " (candidate)"           # the same system with a candidate model version (a retrain's shadow check)


class RecstreamSystem:
    """The pipeline core against a private Redis key prefix; asked through `Pipeline.ask_variants`:
    "recstream" (the registered scorer) and, beside it on the same profiles and candidates,
    "recstream+{model}" for each online-ranker model, each learning from its own shown lists."""
    name = "recstream"

    def __init__(self, redis_url: str, items: list[dict], model_dir: str | None, k: int, seed: int,
                 exclude_seen: bool = False, rankers: tuple[str, ...] = (), encoder_dir: str | None = None,
                 explore: bool = True, label: str = "", model_path: str | None = None, learn_blend: bool = True,
                 holdout: bool = False):
        self.client = connect(redis_url)
        self.prefix = f"rs:bt:{uuid.uuid4().hex[:8]}:"
        self.label = label            # appended to every variant's name: "recstream+gbdt (retrained)"
        self.pipeline = assemble(self.client, self.prefix, rank_cfg=RankConfig(k=k), model_dir=model_dir,
                                 encoder_dir=encoder_dir, explore=explore, load_embeddings=False)
        self.pipeline.keep_item_stats(None)       # the only writer of its key space: cached, still exact
        if not learn_blend:           # a shadow check compares models, each at the scorer's fixed weight
            self.pipeline.learn_blend, self.pipeline.blend = False, None
        if model_path:                # a given model version instead of the registry's promoted one
            self.pipeline.set_scorer(BlendedScorer(OnnxScorer(model_path)))
        self.version = self.pipeline.scorer.version
        self.encoder = self.pipeline.content.encoder if self.pipeline.content is not None else None
        self.rankers = {f"recstream+{spec}": make_ranker(spec, seed=seed) for spec in rankers if spec}
        self._variants()
        self._main = None         # (the promoted model's scorer, its last training event) while its holdout serves
        if holdout and not model_path:
            self._serve_holdout()
        good = [it for it in (validate_item(i) for i in items) if not isinstance(it, Rejected)]
        t = time.time()
        for i in range(0, len(good), 5000):
            self.pipeline.catalog.upsert(good[i: i + 5000])
            if self.pipeline.content is not None:
                self.pipeline.content.upsert(good[i: i + 5000])
        self.embed_seconds = time.time() - t if self.pipeline.content is not None else 0.0
        self.batch_seconds: list[float] = []
        self.candidates: dict[str, list] = {}     # the last ask: user -> [(item, sources that proposed it)], best first
        self.unexplored: dict[str, dict] = {}     # the last ask: variant -> user -> its list without the exploration slot

    def _variants(self) -> None:
        base = self.pipeline.scorer
        self.variants = {"recstream" + self.label: base}
        for name, ranker in self.rankers.items():
            self.variants[name + self.label] = RankedScorer(base, ranker)

    def set_model(self, path) -> None:
        """Swap in another model version between batches (a retrain); every ranker keeps what it learned."""
        self._use(BlendedScorer(OnnxScorer(path)))

    def _use(self, scorer) -> None:
        self._main = None
        self.pipeline.set_scorer(scorer)
        self.version = self.pipeline.scorer.version
        self._variants()

    def _serve_holdout(self) -> None:
        """Serve the promoted version's holdout model (`exporters.pipeline.holdout_files`: the same model before
        fine-tuning, which never trained on the end of the training window) until the replay passes the
        model's own training events, then the model itself (`advance`). Over the end of the window the
        rankers then learn the model's columns from out-of-sample scores instead of missing ones."""
        main = self.pipeline.base_scorer
        model = getattr(main, "transformer", None)
        if model is None or model.trained_until is None or not (model.dir / "holdout" / "model.onnx").exists():
            return
        self.set_model(model.dir / "holdout")
        self._main = (main, model.trained_until)

    def advance(self, now_ts: int) -> None:
        """Before a batch at `now_ts`: the model itself replaces its holdout once its training events are past."""
        if self._main is not None and now_ts > self._main[1]:
            self._use(self._main[0])

    def ask(self, users: list[str], now_ts: int, k: int, exclude=None, only_rankers: bool = False):
        """name -> user -> items; every variant's list counts as shown to the user (its ranker's impressions)."""
        scorers = {n: s for n, s in self.variants.items() if not only_rankers or s.ranker is not None}
        if not scorers:
            return {}
        self.candidates, self.unexplored = {}, {}     # kept for evaluated asks only (candidate recall, exploration)
        return self.pipeline.ask_variants(users, now_ts, scorers, k=k, exclude=exclude, record=True,
                                          candidates=None if only_rankers else self.candidates,
                                          unexplored=None if only_rankers else self.unexplored)

    @property
    def explores(self) -> bool:
        return self.pipeline.explorer is not None

    def learn_batch(self, events: list[Event]) -> None:
        """Reveal a batch: the profile stage (the worker would also emit recommendations for these users;
        the backtest asks for them when they are evaluated instead), then the rankers' feedback."""
        t = time.perf_counter()
        applied = self.pipeline.apply(Ingested.of_events(events))
        self.batch_seconds.append(time.perf_counter() - t)
        self.pipeline.feedback(applied.snapshots, list(self.variants.values()))

    def ranker_stats(self) -> dict:
        out = {}
        for n, s in self.variants.items():
            r = s.ranker
            if r is not None:
                out[n] = {"examples_learned": r.n_learned, "examples_over_budget": r.skipped, **vars(r.join.stats),
                          **(r.gate.stats() if r.gate is not None else {})}
        return out

    def close(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=10_000))
        for i in range(0, len(keys), 10_000):
            self.client.unlink(*keys[i: i + 10_000])


def recstream_names(cfg: BacktestConfig) -> list[str]:
    """The recstream systems of a backtest with "recstream" among its systems: itself, its twin retrained at
    event time (`retrain_every_s`), its twin with a candidate model (`challenger`, a shadow check)."""
    return (["recstream"] + (["recstream" + RETRAINED] if cfg.retrain_every_s else [])
            + (["recstream" + CANDIDATE] if cfg.challenger else []))


def make_systems(cfg: BacktestConfig, items: list[dict], redis_url: str | None, model_dir: str | None,
                 only: frozenset | None = None):
    """name -> system (those named in `only`, else all), and the most-popular model the co-visitation and MF
    fallbacks share."""
    popular = MostPopular()
    systems = {}
    for name in cfg.systems:
        if name != "recstream" and only is not None and name not in only:
            continue
        if name == "most_popular":
            systems[name] = popular
        elif name == "trending":
            systems[name] = TrendingPopular()
        elif name == "covisit_knn":
            systems[name] = CoVisitKNN(fallback=popular)
        elif name == "covisit_sym":
            systems[name] = CoVisitSymmetric(fallback=popular)
        elif name == "recent_items":
            systems[name] = RecentItems()
        elif name == "river_mf":
            systems[name] = RiverMF(seed=cfg.seed, popular=popular)
        elif name == "recstream":
            if redis_url is None:
                raise ValueError("the recstream system needs a Redis (redis_url)")
            args = (redis_url, items, model_dir, cfg.k_request, cfg.seed, cfg.exclude_seen, cfg.rankers,
                    cfg.encoder_dir, cfg.explore)
            learn = not cfg.challenger          # a shadow check compares two models, not two learned weights
            kwargs = {name: dict(learn_blend=learn, holdout=cfg.holdout),
                      name + RETRAINED: dict(label=RETRAINED, holdout=cfg.holdout),
                      name + CANDIDATE: dict(label=CANDIDATE, model_path=cfg.challenger, learn_blend=False)}
            for rs in recstream_names(cfg):
                if only is None or rs in only:
                    systems[rs] = RecstreamSystem(*args, **kwargs[rs])
        else:
            raise ValueError(f"unknown system {name!r}")
    return systems, popular


def recstream_report(rs: RecstreamSystem, report: dict, n: int) -> dict:
    """recstream's own figures: version, rankers, content, batch latency, ratios to the best baseline."""
    bs = np.asarray(rs.batch_seconds) * 1000
    out = {"recstream_version": rs.version, "rankers": rs.ranker_stats()}
    if rs.pipeline.blend is not None:          # the base order's transformer weight, learned on the stream
        out["blend"] = rs.pipeline.blend.stats()
    if rs.encoder is not None:
        out["content"] = {"encoder": rs.encoder.version, "provider": rs.encoder.provider,
                          "items_embedded": len(rs.pipeline.content.index),
                          "embed_seconds": round(rs.embed_seconds, 1),
                          "exploration_slots": rs.pipeline.explorer.slots_used if rs.pipeline.explorer else 0}
    out["recstream_batch_ms"] = {"p50": float(np.percentile(bs, 50)), "p99": float(np.percentile(bs, 99)),
                                 "events_per_s": float(n / (bs.sum() / 1000)) if bs.sum() else 0.0}
    out["_batch_ms"] = bs.tolist()
    systems = report["systems"]
    baselines = {k: v["ndcg@10"] for k, v in systems.items() if not k.startswith("recstream")}
    if baselines:
        best = max(baselines, key=baselines.get)
        out["best_baseline"] = best
        out["recstream_ndcg@10_ratio_to_best_baseline"] = (
            systems["recstream"]["ndcg@10"] / baselines[best] if baselines[best] else None)
        out["ndcg@10_ratio_to_best_baseline"] = {
            k: (v["ndcg@10"] / baselines[best] if baselines[best] else None)
            for k, v in systems.items() if k.startswith("recstream") and not k.endswith(NO_EXPLORE)}
    base = systems["recstream"]["ndcg@10"]
    out["ndcg@10_ratio_ranker_vs_without"] = {
        k: (v["ndcg@10"] / base if base else None) for k, v in systems.items()
        if k.startswith("recstream+") and not k.endswith(NO_EXPLORE)}
    # what the exploration slot costs: each variant's NDCG@10 against its own lists without the slot
    out["exploration_ndcg@10_ratio"] = {
        k: (v["ndcg@10"] / systems[k + NO_EXPLORE]["ndcg@10"] if systems[k + NO_EXPLORE]["ndcg@10"] else None)
        for k, v in systems.items() if k + NO_EXPLORE in systems}
    return out


def retrain_report(report: dict, every_s: float, retrains: list[dict]) -> dict:
    """What retraining at event time did: each retrain, and every variant's NDCG@10 against its frozen twin."""
    systems = report["systems"]
    ratios = {k: (v["ndcg@10"] / systems[k.replace(RETRAINED, "")]["ndcg@10"]
                  if systems[k.replace(RETRAINED, "")]["ndcg@10"] else None)
              for k, v in systems.items() if RETRAINED in k}
    return {"every_s": every_s, "retrains": retrains, "seconds": round(sum(r["seconds"] for r in retrains), 1),
            "ndcg@10_ratio_retrained_vs_frozen": ratios}
