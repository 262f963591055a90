"""The pipeline core: one batch of messages in, recommendations and dead letters out, in typed stages.

    messages --ingest--> Ingested --apply--> Applied --recommend--> BatchResult
    (validate, dedupe,    (profiles, one      (feedback, candidates, scoring,
     catalog upserts)      write per user)      ranking, exploration, emit)

Transport-agnostic: the confluent worker (`apply`, then `prepare`: the observers, candidates and their item
statistics read ahead; then `recommend` on another thread), the faust driver (`process_batch`), the backtest
(`apply`, then the read-only `ask_variants`) and the benchmarks all call these stages: what we measure is
what we ship. Redis is touched once per stage per batch (pipelined), never per event. The values between
stages are frozen (`stream/core/stages.py`); what is attached between batches (ranker, model, experiment)
is in `stream/core/wiring.py`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace

import redis

from stream.core import emit
from stream.core.asking import Asking
from stream.core.candidates import BatchContext, CandidateSource, default_sources
from stream.core.candidates.gather import ItemStatsCache, gather, item_stats
from stream.core.ranking.gate import list_gains
from stream.core.ranking.rank import RankConfig, drop_set, top_k
from stream.core.scoring import CandidateBatch, FallbackScorer, Scorer, scored
from stream.core.scoring.blendweight import observe_events, record_lists
from stream.core.stages import Applied, BatchResult, Ingested
from stream.core.storage.catalog import Catalog
from stream.core.storage.profile import ProfileConfig, ProfileStore
from stream.core.storage.rawpipe import pipeline
from stream.core.storage.serving import add_outcomes, put_latest
from stream.core.validate import InMessage, validate_with_origins
from stream.core.wiring import Wiring

log = logging.getLogger("recstream.pipeline")

PIPELINE_VERSION = "recstream-0.1"


class Pipeline(Wiring, Asking):
    """The serving core over one Redis (key prefix `prefix`): profiles, catalog, candidate sources, a
    scorer (hot-swappable between batches) with an optional online ranker, optional content embeddings
    and exploration slot. Built from settings by `stream.config.compose.build_pipeline`. `init_store`,
    `guard`: see `ProfileStore`."""

    explore_position = 10           # the exploration slot: 10th in a list (the last one of a top-10)
    learn_blend = True              # learn the base order's transformer weight (off: a shadow check's fixed weight)

    def __init__(self, client: redis.Redis, prefix: str = "rs:", *, scorer: Scorer | None = None,
                 sources: list[CandidateSource] | None = None, profile_cfg: ProfileConfig = ProfileConfig(),
                 rank_cfg: RankConfig = RankConfig(), init_store: bool = True, guard: bool = True):
        self.client, self.prefix = client, prefix
        self.profiles = ProfileStore(client, prefix, profile_cfg, init_store=init_store, guard=guard)
        self.catalog = Catalog(client, prefix)
        self.sources = sources if sources is not None else default_sources(prefix, profile_cfg.trend_half_life_s)
        self.scorer: Scorer = scorer or FallbackScorer()
        self.base_scorer: Scorer = self.scorer      # without the online ranker (an experiment's variants wrap it)
        self.rank_cfg = rank_cfg
        self._asks = 0
        self.ranker = None
        self.keeper = None          # the online ranker's checkpointing (set by the composition root)
        self.content = None         # ContentStore: item embeddings, the "content" source, cold start
        self.explorer = None        # FreshExplorer: one exploration slot for fresh items
        self.pseudonymiser = None   # stream.secrets.Pseudonymiser: user ids replaced right after validation
        self.experiment = None      # stream.core.experiments.Experiment: users split between variants
        self.variant_rankers: dict = {}   # variant name -> its online ranker (None: none)
        self.outcomes = None        # OutcomeJoin: what the experiment's shown lists led to
        self.observers: list = []   # .observe(snapshots) each batch: the search re-ranker's learner
        self.blend = None           # BlendWeight: the base order's transformer weight, learned (with a model)
        self.blend_store = None     # BlendStore: where a swapped-in model's learned weight is resumed from
        self.stats_cache = None     # ItemStatsCache: the worker's item statistics reused briefly (None: read each batch)
        self._fallback, self._variant_scorers, self._explorers = FallbackScorer(), {}, {}   # explorer_for's

    # ---- the stages -------------------------------------------------------------------------------
    def process_batch(self, messages: list[InMessage]) -> BatchResult:
        """All stages for one batch of consumed messages."""
        return self.recommend(self.apply(self.ingest(messages)))

    def process_events(self, events: list) -> BatchResult:      # all stages after validation
        return self.recommend(self.apply(Ingested.of_events(events)))

    def ingest(self, messages: list[InMessage]) -> Ingested:
        """Stage 1: validate and dedupe; catalog upserts (and their embeddings) applied."""
        t = time.perf_counter
        t0, (events, origins, items, dead) = t(), validate_with_origins(messages)
        if self.pseudonymiser is not None:
            events = self.pseudonymiser.events(events)
        timings = {"validate": t() - t0}
        for name, store in (("catalog", self.catalog), ("embed", self.content)) if items else ():
            if store is not None:               # the catalog, then the items' embeddings
                t1 = t()
                store.upsert(items)
                timings[name] = t() - t1
        return Ingested(events, origins, dead, len(items), timings)

    def apply(self, ing: Ingested, share: bool = True) -> Applied:
        """Stage 2: the events applied to their users' profiles (one write per user, pipelined), and to the
        shared statistics unless `share` is False (the worker calls `share` once per batch, after isolating)."""
        t0 = time.perf_counter()
        snaps = self.profiles.apply(ing.events, ing.origins, share=share) if ing.events else {}
        return Applied(ing, snaps, [], {**ing.timings, "profile": time.perf_counter() - t0})

    def share(self, applied: Applied) -> None:     # the shared statistics of a batch applied with share=False
        t0 = time.perf_counter()
        self.profiles.share(applied.snapshots, applied.ingested.origins)
        applied.timings["shared"] = time.perf_counter() - t0

    def prepare(self, applied: Applied) -> Applied:
        """Reads done ahead on the consuming thread, right after the batch's shared statistics were written,
        while another thread scores the batch before: the observers, the candidates and their item statistics.
        An optimisation only: whatever fails here `recommend` does itself, under the driver's failure isolation."""
        if not (events := applied.events):
            return applied
        t, timings = time.perf_counter, applied.timings
        t0 = t()
        observed = self._observe(applied.snapshots, 0, ahead=True)
        timings["observe"] = t() - t0
        try:
            ctx, batch = self._candidates(applied.snapshots, max(ev.ts for ev in events), timings, None,
                                          {uid: snap.events[-1] for uid, snap in applied.snapshots.items()})
            t0 = t()
            self._item_stats(self.scorer, batch)    # (in `recommend`, when not done here, part of "scoring")
            timings["item_stats"] = t() - t0
        except Exception as exc:  # noqa: BLE001 - recommend does it again, and reports what persists
            log.debug("not prepared ahead (%s: %s): recommend does it", type(exc).__name__, exc)
            return replace(applied, observed=observed)
        return replace(applied, prepared=(self.scorer, ctx, batch), observed=observed)

    def recommend(self, applied: Applied) -> BatchResult:
        """Stages 3-6 for the users whose profiles were just updated: feedback to the learners, candidates,
        scoring, ranking, one recommendation per user (a user's events in one batch coalesce)."""
        ing, snaps = applied.ingested, applied.snapshots
        timings = dict(applied.timings)
        dead = ing.dead_letters + applied.dead_letters
        events = applied.events
        if not events:
            return BatchResult([], dead, items=ing.items, timings=timings)
        triggers = {uid: snap.events[-1] for uid, snap in snaps.items()}
        exp = self.experiment         # read once, like the scorer: a hot swap lands between batches
        variant = {uid: exp.assign(uid) for uid in snaps} if exp is not None else {uid: None for uid in snaps}
        scorers = {v: self.variant_scorer(v) if exp else self.scorer for v in sorted(set(variant.values()), key=str)}
        t = time.perf_counter
        t0 = t()
        if any(sc.ranker is not None for sc in scorers.values()) or self.explorer is not None or self.blend is not None:
            self.feedback(snaps, list(scorers.values()))   # what these events say about earlier recommendations
            timings["feedback"] = t() - t0
        if self.outcomes is not None:
            self.outcomes.observe(snaps)             # what these events say about the lists shown
        self._observe(snaps, applied.observed)       # those that did not see them ahead (`prepare`)
        ahead = applied.prepared[1:] if applied.prepared and applied.prepared[0] is self.scorer else None
        ctx, batch = ahead or self._candidates(snaps, max(ev.ts for ev in events), timings, None, triggers)
        self._record_blend(ctx, batch, triggers)
        ranked = {}
        for name, scorer in scorers.items():
            users = [u for u in batch.users if variant[u] == name]
            if not users:
                continue
            v = exp.variant(name) if exp is not None else None
            part = batch if exp is None else batch.subset(users)
            ranked[name] = self._score_rank(ctx, part, scorer, timings, triggers=triggers, record=True,
                                            k=v.top_k if v else None, explore=v.explore if v else True)
        t4, now_ms, recs = t(), int(time.time() * 1000), []
        for name, got in ranked.items():
            scorer = scorers[name]
            versions = {"pipeline": PIPELINE_VERSION, "scorer": scorer.version}
            if scorer.ranker is not None:
                versions["ranker"] = f"{scorer.ranker.cfg.model}@{scorer.ranker.n_learned}"
            recs += [emit.build(uid, triggers[uid], items, feats, picked, comps, versions, now_ms, variant=name)
                     for uid, (items, feats, picked, comps) in got.items()]
        if self.outcomes is not None:
            self.outcomes.shown_all(recs)
        timings["emit_build"] = t() - t4
        return BatchResult(recs, dead, events=len(events), applied=sum(s.applied for s in snaps.values()),
                           items=ing.items, timings=timings)

    def publish(self, result: BatchResult, latest_ttl_s: int) -> None:
        """After a batch was emitted: each user's latest list (the API's cached read), the outcome counts."""
        pipe = pipeline(self.client)
        put_latest(pipe, self.prefix, result.recommendations, latest_ttl_s)
        if self.outcomes is not None and self.experiment is not None:
            add_outcomes(pipe, self.prefix, self.experiment.name, self.outcomes.drain())
        pipe.execute()                              # nothing queued: no round-trip

    def feedback(self, snaps: dict, scorers=None) -> int:
        """Hand the users' newly applied events to the online ranker(s) as feedback on what they were
        shown, and to the exploration slot. Returns the examples learned."""
        for explorer in [self.explorer, *self._explorers.values()] if self.explorer is not None else ():
            explorer.feedback(snaps)
        if self.blend is not None:
            self.base_scorer.weight = observe_events(self.blend, snaps)
        rankers = {id(sc.ranker): sc.ranker for sc in scorers or [self.scorer] if sc.ranker is not None}
        return sum(r.feedback(snaps) for r in rankers.values())

    # ---- stages 3-5 -------------------------------------------------------------------------------
    def _candidates(self, snaps: dict, now_ts: int, timings: dict, exclude: dict | None, triggers: dict | None):
        t0 = time.perf_counter()
        out = gather(self.client, self.sources, self.catalog, snaps, now_ts, exclude=exclude, triggers=triggers,
                     content=self.content, transformer=self.scorer.transformer)
        timings["candidates"] = time.perf_counter() - t0
        return out

    def _observe(self, snaps: dict, start: int, ahead: bool = False) -> int:
        """The observers from `start` on see what these events say about the pages shown; returns how many
        have seen them. Ahead (`prepare`), a failure stops there: `recommend` goes on from that observer."""
        for n, obs in enumerate(self.observers[start:], start):
            try:
                obs.observe(snaps)
            except Exception as exc:  # noqa: BLE001 - recommend calls it again, under the driver's isolation
                if not ahead:
                    raise
                log.debug("observer %s not run ahead (%s: %s)", type(obs).__name__, type(exc).__name__, exc)
                return n
        return len(self.observers)

    def keep_item_stats(self, max_age_s: float | None) -> None:
        """Item statistics kept between batches (`ItemStatsCache`): for `max_age_s` of wall time (a worker,
        beside other writers), or (None) exactly, each forgotten when this pipeline writes it (a backtest's
        system, the only writer of its key space)."""
        self.stats_cache = ItemStatsCache(max_age_s)
        if max_age_s is None:
            self.profiles.written = self.stats_cache.forget

    def _item_stats(self, scorer: Scorer, batch: CandidateBatch) -> None:
        if (scorer.needs_item_stats or self.explorer_for(scorer) is not None) and batch.item_stats is None:
            read = self.stats_cache.read if self.stats_cache is not None else item_stats
            batch.item_stats = read(self.client, self.profiles.keys, self.profiles.cfg.trend_half_life_s,
                                    list(batch.meta), batch.now_ts)   # once per candidate set (any order)

    def _record_blend(self, ctx: BatchContext, batch: CandidateBatch, triggers: dict | None) -> None:
        """The lists each of the base order's transformer weights would serve now, judged by the users' next
        events (`stream/core/scoring/blendweight.py`)."""
        if self.blend is not None:
            def drop_of(uid: str) -> set:
                return drop_set(batch.snapshots[uid], ctx.exclude.get(uid), (triggers or {}).get(uid), self.rank_cfg)
            record_lists(self.blend, batch, scored(self.base_scorer, batch).components, self.rank_cfg.k, drop_of)

    def _score_rank(self, ctx: BatchContext, batch: CandidateBatch, scorer: Scorer, timings: dict, *,
                    k: int | None = None, triggers=None, record: bool = False, unexplored: dict | None = None,
                    explore: bool = True):
        """Scoring and ranking: user -> (items, feats, picked, components). With `record` and an online
        ranker, what is picked is recorded as shown, with the feature rows it was ranked with. `unexplored`
        receives user -> what was picked before the exploration slot was placed."""
        t, explorer = time.perf_counter, self.explorer_for(scorer)
        t3 = t()
        self._item_stats(scorer, batch)
        result = scored(scorer, batch)
        scores = result.final
        t4 = t()
        timings["scoring"] = t4 - t3
        cfg = self.rank_cfg if k is None else replace(self.rank_cfg, k=k)
        cats = {i: m[0] for i, m in batch.meta.items()} if cfg.max_per_category else {}   # (read only for the cap)
        ranker = scorer.ranker if record else None
        rows = result.rows
        pops = {i: st[0] for i, st in batch.item_stats.items()} if explorer is not None else {}
        out = {}
        for u, uid in enumerate(batch.users):
            snap = batch.snapshots[uid]
            items = batch.items[u]
            trigger = triggers.get(uid) if triggers else None
            drop = drop_set(snap, ctx.exclude.get(uid), trigger, cfg)
            picked = top_k(items, scores[u], exclude=drop, category_of=cats, cfg=cfg)
            if unexplored is not None:
                unexplored[uid] = picked
            if explorer is not None and explore and picked:
                slot = explorer.choose(items, batch.features[u], pops, picked, drop, cfg.k)
                if slot is not None:
                    pos, j = min(len(picked), self.explore_position) - 1, slot.index
                    picked = picked[:pos] + [(j, float(scores[u][j]))] + picked[pos:cfg.k - 1]
                    if record:
                        explorer.shown(uid, items[j], slot.displaced)
            out[uid] = (items, batch.features[u], picked, {name: arrs[u] for name, arrs in result.components.items()})
            if ranker is not None and rows is not None and picked and not snap.bot:
                idx = ranker.recorded([i for i, _ in picked], scores[u], rows[u])
                key = (emit.recommendation_id(uid, trigger.event_id) if trigger is not None
                       else f"ask:{uid}:{batch.now_ts}:{self._asks}")
                ranker.record(uid, trigger.ts if trigger is not None else batch.now_ts, key,
                              [items[i] for i in idx], rows[u][idx], trigger.event_id if trigger else None,
                              list_gains(items, *result.judge[u], exclude=drop, category_of=cats, cfg=cfg)
                              if result.judge else None)
        timings["rank"] = t() - t4
        return out
