"""The one composition root: every `Pipeline` recstream runs is assembled here.

`assemble` wires a pipeline from its parts (Redis, key prefix, ranking config, the promoted model, the
text encoder and its exploration slot, pseudonymisation); `build_pipeline` does it from `Settings` for the
worker, `recstream rebuild`, the demo's worker and the benchmarks, adding the online ranker with its
checkpoint keeper; the backtest calls `assemble` and `make_ranker` for its side-by-side variants.
"""
from __future__ import annotations

import logging
from pathlib import Path

from stream.config.settings import Settings
from stream.core.content import ContentEncoder, ContentStore
from stream.core.experiments import HOLDOUT_VARIANT, Experiment, OutcomeJoin
from stream.core.pipeline import Pipeline
from stream.core.ranking.checkpoint import Keepers, RankerCheckpoint, RankerKeeper
from stream.core.scoring.blendstore import BlendKeeper, BlendStore
from stream.core.ranking.rank import RankConfig
from stream.core.ranking.ranker import OnlineRanker, RankerConfig
from stream.core.scoring.transformer import load_promoted
from stream.core.search.learn import SearchFeedback
from stream.core.search.rerank import RerankConfig
from stream.core.storage.profile import ProfileConfig
from stream.core.storage.store import connect, key_part
from stream.secrets import Pseudonymiser

log = logging.getLogger("recstream.compose")


def assemble(client, prefix: str, *, rank_cfg: RankConfig = RankConfig(), model_dir: str | None = None,
             encoder_dir: str | None = None, explore: bool = True, load_embeddings: bool = True,
             pseudonymise_key: str = "", init_store: bool = True, guard: bool = True,
             profile_cfg: ProfileConfig = ProfileConfig()) -> Pipeline:
    """A pipeline over `client` under `prefix`: the fallback scorer, or the model promoted in `model_dir`;
    with an exported encoder in `encoder_dir`, content embeddings (those already in Redis loaded when
    `load_embeddings`) and, with `explore`, the exploration slot."""
    pipeline = Pipeline(client, prefix, rank_cfg=rank_cfg, init_store=init_store, guard=guard, profile_cfg=profile_cfg)
    if pseudonymise_key:
        pipeline.pseudonymiser = Pseudonymiser(pseudonymise_key.encode())
    if model_dir:
        scorer = load_promoted(model_dir)
        if scorer is not None:
            pipeline.set_scorer(scorer)
        else:
            log.info("no promoted model in %s: the fallback scorer (`recstream models list` shows what is "
                     "registered and why a version was kept out)", model_dir)
    if encoder_dir and (Path(encoder_dir) / "model.onnx").exists():
        store = ContentStore(client, prefix, ContentEncoder(encoder_dir))
        if load_embeddings:
            store.load()
        pipeline.attach_content(store, explore=explore)
    elif encoder_dir:
        log.info("no text encoder at %s: no content source (export one with `recstream encoder export`)",
                 encoder_dir)
    return pipeline


def make_ranker(spec: str, *, seed: int = 0, window_s: float | None = None, background_fit: bool = False) -> OnlineRanker:
    """An online ranker from 'gbdt' (trees, whole set), 'lr' or 'fm' (the cascade), 'MODEL:WEIGHT', or
    'MODEL:learned' (whole set). The worker fits trees in the background; the backtest inline."""
    window = {} if window_s is None else {"window_s": window_s}
    return OnlineRanker(RankerConfig.for_spec(spec, seed=seed, background_fit=background_fit, **window))


def build_pipeline(s: Settings, group_id: str | None = None, *, init_store: bool = True, guard: bool = True,
                   ranker: bool = True) -> Pipeline:
    """The pipeline as the worker runs it; with an online ranker, also its keeper (restored already), as
    `pipeline.keeper`. The promoted model is the worker's `ModelWatcher`'s to load (and swap). The worker
    passes init_store=False (it decides whether a store without a marker is new or emptied); `recstream
    rebuild` passes guard=False and ranker=False."""
    pipeline = assemble(connect(s.redis_url), s.key_prefix,
                        rank_cfg=RankConfig(k=s.top_k, exclude_trigger=bool(s.exclude_trigger),
                                            exclude_bought=bool(s.exclude_bought), max_per_category=s.max_per_category),
                        encoder_dir=s.encoder_dir, pseudonymise_key=s.pseudonymise_key, init_store=init_store,
                        guard=guard, profile_cfg=ProfileConfig(covis_cap=s.covis_cap,
                                                                  cache_ids=s.profile_cache_ids))
    if s.stats_max_age_ms > 0:
        pipeline.keep_item_stats(s.stats_max_age_ms / 1000)
    if s.ranker != "off" and ranker:
        online = make_ranker(s.ranker, window_s=s.ranker_window_s, background_fit=True)
        pipeline.keeper = RankerKeeper(online, RankerCheckpoint(pipeline.client, s.key_prefix, group_id or s.group_id,
                                                                online.cfg.model), s.ranker_checkpoint_s)
        pipeline.keeper.restore()
        pipeline.attach_ranker(online)
    if s.search_learn and ranker:              # what users click after a search teaches the re-ranker
        pipeline.observers.append(SearchFeedback(pipeline.client, s.key_prefix, pipeline.profiles.keys,
                                                 RerankConfig(window_s=s.search_window_s)))
    if s.experiments and ranker:
        exp = Experiment.load(s.experiments)
        attach_experiment(pipeline, exp, window_s=s.outcome_window_s, attribution=s.outcome_attribution,
                          background_fit=True)
        # a variant's own ranker is checkpointed beside the deployment's, under the variant's name
        own = [RankerKeeper(r, RankerCheckpoint(pipeline.client, s.key_prefix,
                                                f"{group_id or s.group_id}.{key_part(exp.name)}.{key_part(v)}",
                                                r.cfg.model), s.ranker_checkpoint_s)
               for v, r in sorted(pipeline.variant_rankers.items()) if r is not None and r is not pipeline.ranker]
        for k in own:
            k.restore()
        if own:
            pipeline.keeper = Keepers(([pipeline.keeper] if pipeline.keeper else []) + own)
    if ranker:      # the base order's learned transformer weight, saved and resumed after a restart
        blend = BlendKeeper(pipeline, BlendStore(pipeline.client, s.key_prefix, group_id or s.group_id),
                            s.ranker_checkpoint_s)
        pipeline.keeper = Keepers(([pipeline.keeper] if pipeline.keeper else []) + [blend])
    return pipeline


def attach_experiment(pipeline: Pipeline, exp: Experiment, *, window_s: float = 1800.0, attribution: str = "window",
                      background_fit: bool = False, seed: int = 0) -> None:
    """Split the pipeline's users between `exp`'s variants: a variant with no ranker named shares the
    deployment's (`pipeline.ranker`), "off" has none, any other spec gets its own, learning from its
    own users' lists only."""
    rankers = {}
    for v in (*exp.variants, HOLDOUT_VARIANT):
        if v.ranker is None:
            rankers[v.name] = pipeline.ranker
        elif v.ranker != "off":
            rankers[v.name] = make_ranker(v.ranker, seed=seed, background_fit=background_fit)
    pipeline.attach_experiment(exp, rankers, OutcomeJoin(int(window_s * 1000), attribution=attribution))
