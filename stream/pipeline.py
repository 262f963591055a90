"""The pipeline core: one batch of messages in, recommendations and dead letters out.

Transport-agnostic: the Kafka drivers (stream/worker.py, stream/faust_driver.py), the
in-process backtest and the benchmarks all call `Pipeline.process_batch`, so what we measure
is what we ship. Redis is touched once per stage per batch (pipelined), never per event.

    validate+dedupe -> profile update -> candidates -> scoring -> filters/rank -> recommendation
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import redis

from schemas import Event, Recommendation
from stream import emit
from stream.candidates import SOURCE_NAMES, BatchContext, CandidateSource, default_sources
from stream.catalog import Catalog
from stream.profile import ProfileConfig, ProfileStore
from stream.rank import RankConfig, top_k
from stream.scoring import CandidateBatch, FallbackScorer, Scorer
from stream.validate import DeadLetter, InMessage, validate_batch

PIPELINE_VERSION = "recstream-0.1"


@dataclass
class BatchResult:
    recommendations: list[Recommendation]
    dead_letters: list[DeadLetter]
    events: int = 0            # valid events in the batch (after in-batch dedupe)
    applied: int = 0           # events that changed state (not seen before)
    items: int = 0             # catalog upserts
    timings: dict[str, float] = field(default_factory=dict)   # stage -> seconds


class Pipeline:
    def __init__(self, client: redis.Redis, prefix: str = "rs:", *, scorer: Scorer | None = None,
                 sources: list[CandidateSource] | None = None, profile_cfg: ProfileConfig = ProfileConfig(),
                 rank_cfg: RankConfig = RankConfig()):
        self.client, self.prefix = client, prefix
        self.profiles = ProfileStore(client, prefix, profile_cfg)
        self.catalog = Catalog(client, prefix)
        self.sources = sources if sources is not None else default_sources(prefix, profile_cfg.trend_half_life_s)
        self.scorer: Scorer = scorer or FallbackScorer()
        self.rank_cfg = rank_cfg

    def set_scorer(self, scorer: Scorer) -> None:
        """Swap the scorer between batches (hot-swap of a promoted model). A transformer scorer also
        becomes a candidate source ("model": its own top items for the user's sequence)."""
        from stream.onnx_scorer import ModelRetrieval
        transformer = getattr(scorer, "transformer", None)
        sources = [s for s in self.sources if s.name != "model"]
        if transformer is not None:
            sources.append(ModelRetrieval(transformer))
        self.sources = sources
        self.scorer = scorer

    def process_batch(self, messages: list[InMessage]) -> BatchResult:
        events, dead, n_items, timings = self.ingest(messages)
        result = self.process_events(events, timings)
        result.dead_letters = dead
        result.items = n_items
        return result

    def ingest(self, messages: list[InMessage]) -> tuple[list[Event], list[DeadLetter], int, dict]:
        """Stage 1 (validate, dedupe) and catalog upserts."""
        t = time.perf_counter
        t0 = t()
        events, items, dead = validate_batch(messages)
        timings = {"validate": t() - t0}
        if items:
            t1 = t()
            self.catalog.upsert(items)
            timings["catalog"] = t() - t1
        return events, dead, len(items), timings

    def process_events(self, events: list[Event], timings: dict | None = None) -> BatchResult:
        """The stages after validation, in order; the backtest calls this with already-parsed events."""
        timings = {} if timings is None else timings
        if not events:
            return BatchResult([], [], timings=timings)
        return self.recommend(events, self.apply_profiles(events, timings), timings)

    def apply_profiles(self, events: list[Event], timings: dict) -> dict:
        """Stage 2 alone (the worker overlaps it with the previous batch's later stages)."""
        t1 = time.perf_counter()
        snaps = self.profiles.apply(events) if events else {}
        timings["profile"] = time.perf_counter() - t1
        return snaps

    def ask(self, users: list[str], now_ts: int, k: int | None = None,
            exclude: dict[str, set] | None = None) -> dict[str, list[str]]:
        """Read-only: each user's current top-k from the state as it is now (no event applied),
        leaving out `exclude[user]` (e.g. what the caller knows the user has already watched).
        Users with no profile get what a new user gets (trending). Used by the backtest."""
        snaps = self.profiles.read(users)
        ranked = self._rank(snaps, now_ts, {}, k=k, triggers=None, exclude=exclude)
        return {uid: [items[i] for i, _ in picked] for uid, (items, _, picked, _) in ranked.items()}

    def recommend(self, events: list[Event], snaps: dict, timings: dict) -> BatchResult:
        """Stages 3-6 for users whose profiles were just updated."""
        if not events:
            return BatchResult([], [], timings=timings)
        triggers = {uid: snap.events[-1] for uid, snap in snaps.items()}
        scorer = self.scorer          # read once: a hot swap lands between batches, never inside one
        ranked = self._rank(snaps, max(ev.ts for ev in events), timings, triggers=triggers, scorer=scorer)
        t = time.perf_counter
        t4 = t()
        recs = []
        versions = {"pipeline": PIPELINE_VERSION, "scorer": scorer.version}
        now_ms = int(time.time() * 1000)
        for uid, (items, feats, picked, comps) in ranked.items():
            recs.append(emit.build(uid, triggers[uid], items, feats, picked, comps, versions, now_ms))
        timings["emit_build"] = t() - t4
        return BatchResult(recs, [], events=len(events), applied=sum(s.applied for s in snaps.values()),
                           timings=timings)

    def _rank(self, snaps: dict, now_ts: int, timings: dict, *, k: int | None = None, triggers=None, scorer=None,
              exclude: dict[str, set] | None = None):
        """Candidates, scoring and ranking for the users in `snaps`: user -> (items, feats, picked, components)."""
        t = time.perf_counter
        scorer = scorer or self.scorer
        t2 = t()
        ctx = BatchContext(snaps, now_ts=now_ts, exclude=exclude or {})
        pipe = self.client.pipeline(transaction=False)
        collectors = []
        for src in self.sources:
            before = len(pipe.command_stack)
            fn = src.plan(ctx, pipe)
            collectors.append((fn, before, len(pipe.command_stack)))
        replies = pipe.execute() if pipe.command_stack else []
        for fn, a, b in collectors:
            fn(replies[a:b])
        t3 = t()
        timings["candidates"] = t3 - t2

        users = list(snaps)
        cand_items, feats = [], []
        width = len(SOURCE_NAMES)
        for uid in users:
            cands = ctx.cands.get(uid, {})
            cand_items.append(list(cands))
            feats.append(np.array(list(cands.values()), dtype=np.float64).reshape(-1, width))
        batch = CandidateBatch(users, cand_items, feats, [snaps[u].recent for u in users],
                               [triggers[u].type if triggers else "query" for u in users])
        components = scorer.score_components(batch)
        scores = components[scorer.name]
        t4 = t()
        timings["scoring"] = t4 - t3

        cats = self.catalog.categories({i for ids in cand_items for i in ids})
        cfg = self.rank_cfg if k is None else replace(self.rank_cfg, k=k)
        out = {}
        for u, uid in enumerate(users):
            snap = snaps[uid]
            drop = set(snap.bought) | ctx.exclude.get(uid, set())
            trigger = triggers.get(uid) if triggers else None
            if trigger is not None and trigger.item_id and cfg.exclude_trigger:
                drop.add(trigger.item_id)
            if cfg.exclude_recent:
                drop.update(snap.recent)
            picked = top_k(cand_items[u], scores[u], exclude=drop, category_of=cats, cfg=cfg)
            out[uid] = (cand_items[u], feats[u], picked, {name: arrs[u] for name, arrs in components.items()})
        timings["rank"] = t() - t4
        return out
