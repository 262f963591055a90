"""The pipeline core: one batch of messages in, recommendations and dead letters out.

Transport-agnostic: the Kafka drivers (stream/drivers/worker.py, stream/drivers/faust_driver.py), the
in-process backtest and the benchmarks all call `Pipeline.process_batch`, so what we measure
is what we ship. Redis is touched once per stage per batch (pipelined), never per event.

    validate+dedupe -> profile update -> candidates -> scoring -> filters/rank -> recommendation
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import redis

from schemas import Event, Recommendation
from stream.core import emit
from stream.core.candidates import SOURCE_NAMES, BatchContext, CandidateSource, default_sources
from stream.core.storage.catalog import Catalog
from stream.core.storage.profile import ProfileConfig, ProfileStore
from stream.core.ranking.rank import RankConfig, top_k
from stream.core.scoring import CandidateBatch, FallbackScorer, Scorer, components_of
from stream.core.validate import DeadLetter, InMessage, validate_with_origins

PIPELINE_VERSION = "recstream-0.1"


@dataclass(frozen=True)
class Ingested:
    """Stage 1's output: valid events (batch order, deduplicated per user), the message each came from,
    dead letters, catalog upserts applied, and the stage timings so far."""
    events: list[Event]
    origins: list[InMessage]
    dead_letters: list[DeadLetter]
    items: int
    timings: dict


@dataclass
class BatchResult:
    recommendations: list[Recommendation]
    dead_letters: list[DeadLetter]
    events: int = 0            # valid events in the batch (after in-batch dedupe)
    applied: int = 0           # events that changed state (not seen before)
    items: int = 0             # catalog upserts
    timings: dict[str, float] = field(default_factory=dict)   # stage -> seconds


class Pipeline:
    explore_position = 10           # the exploration slot: 10th in a list (the last one of a top-10)

    def __init__(self, client: redis.Redis, prefix: str = "rs:", *, scorer: Scorer | None = None,
                 sources: list[CandidateSource] | None = None, profile_cfg: ProfileConfig = ProfileConfig(),
                 rank_cfg: RankConfig = RankConfig(), init_store: bool = True, guard: bool = True):
        """`init_store`: mark the store live if it has no marker (a new deployment, a backtest, a test).
        The worker passes False and decides itself: a store without a marker whose consumer group has
        committed offsets lost its data and must be rebuilt, not silently served from."""
        self.client, self.prefix = client, prefix
        self.profiles = ProfileStore(client, prefix, profile_cfg, init_store=init_store, guard=guard)
        self.catalog = Catalog(client, prefix)
        self.sources = sources if sources is not None else default_sources(prefix, profile_cfg.trend_half_life_s)
        self.scorer: Scorer = scorer or FallbackScorer()
        self.rank_cfg = rank_cfg
        self._asks = 0
        self.ranker = None
        self.keeper = None          # the online ranker's checkpointing (set by the worker's builder)
        self.content = None         # ContentStore: item embeddings, the "content" source, cold start
        self.explorer = None        # FreshExplorer: one exploration slot for fresh items
        self.pseudonymiser = None   # stream.secrets.Pseudonymiser: user ids replaced right after validation

    def attach_content(self, store, explore: bool = True) -> None:
        """Content embeddings (stream/core/content.py): catalog upserts are embedded as they arrive, the
        "content" candidate source joins, items unknown to the transformer borrow the score of their
        nearest known item, and (with `explore`) fresh items get a bounded exploration slot."""
        from stream.core.content import ContentSimilar
        from stream.core.ranking.explore import FreshExplorer
        self.content = store
        self.sources = [s for s in self.sources if s.name != "content"] + [ContentSimilar(store)]
        self.explorer = FreshExplorer() if explore else None
        self._known = (None, 0, None)

    def attach_ranker(self, ranker) -> None:
        """Put an online ranker (stream/core/ranking/ranker.py) on top of the scorer, now and after every hot swap."""
        from stream.core.ranking.ranker import RankedScorer
        self.ranker = ranker
        self.scorer = RankedScorer(self.scorer, ranker)

    def set_scorer(self, scorer: Scorer) -> None:
        """Swap the scorer between batches (hot-swap of a promoted model). A transformer scorer also
        becomes a candidate source ("model": its own top items for the user's sequence)."""
        from stream.core.scoring.transformer import ModelRetrieval
        if self.ranker is not None:
            from stream.core.ranking.ranker import RankedScorer
            scorer = RankedScorer(scorer, self.ranker)
        transformer = getattr(scorer, "transformer", None)
        sources = [s for s in self.sources if s.name != "model"]
        if transformer is not None:
            sources.append(ModelRetrieval(transformer))
        self.sources = sources
        self.scorer = scorer

    def process_batch(self, messages: list[InMessage]) -> BatchResult:
        ing = self.ingest(messages)
        result = self.process_events(ing.events, ing.timings)
        result.dead_letters = list(ing.dead_letters)
        result.items = ing.items
        return result

    def ingest(self, messages: list[InMessage]) -> Ingested:
        """Stage 1 (validate, dedupe) and catalog upserts."""
        t = time.perf_counter
        t0 = t()
        events, origins, items, dead = validate_with_origins(messages)
        if self.pseudonymiser is not None:
            user = self.pseudonymiser.user
            events = [replace(ev, user_id=user(ev.user_id)) for ev in events]
        timings = {"validate": t() - t0}
        if items:
            t1 = t()
            self.catalog.upsert(items)
            timings["catalog"] = t() - t1
            if self.content is not None:
                t1 = t()
                self.content.upsert(items)
                timings["embed"] = t() - t1
        return Ingested(events, origins, dead, len(items), timings)

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
        Users with no profile get what a new user gets (trending). What an HTTP endpoint would call."""
        return self.ask_variants(users, now_ts, {"": self.scorer}, k=k, exclude=exclude)[""]

    def ask_variants(self, users: list[str], now_ts: int, scorers: dict, *, k: int | None = None,
                     exclude: dict[str, set] | None = None, record: bool = False) -> dict[str, dict[str, list[str]]]:
        """`ask` for several scorers over one candidate stage (the backtest compares variants side by side);
        with `record`, what is returned counts as shown (an impression for each scorer's online ranker)."""
        snaps = self.profiles.read(users)
        ctx, batch = self._candidates(snaps, now_ts, {}, exclude, None)
        out = {}
        for name, scorer in scorers.items():
            ranked = self._score_rank(ctx, batch, scorer, {}, k=k, triggers=None, record=record)
            out[name] = {uid: [items[i] for i, _ in picked] for uid, (items, _, picked, _) in ranked.items()}
        return out

    def feedback(self, snaps: dict, scorers=None) -> int:
        """Hand the users' newly applied events to the online ranker(s) as feedback on what they were
        shown. Returns the examples learned."""
        if self.explorer is not None:
            self.explorer.feedback(snaps)
        n = 0
        for sc in scorers or [self.scorer]:
            ranker = getattr(sc, "ranker", None)
            if ranker is not None:
                n += ranker.feedback(snaps)
        return n

    def recommend(self, events: list[Event], snaps: dict, timings: dict) -> BatchResult:
        """Stages 3-6 for users whose profiles were just updated."""
        if not events:
            return BatchResult([], [], timings=timings)
        triggers = {uid: snap.events[-1] for uid, snap in snaps.items()}
        scorer = self.scorer          # read once: a hot swap lands between batches, never inside one
        t = time.perf_counter
        t0 = t()
        if getattr(scorer, "ranker", None) is not None or self.explorer is not None:
            self.feedback(snaps, [scorer])   # what these events say about earlier recommendations
            timings["feedback"] = t() - t0
        ctx, batch = self._candidates(snaps, max(ev.ts for ev in events), timings, None, triggers)
        ranked = self._score_rank(ctx, batch, scorer, timings, triggers=triggers, record=True)
        t4 = t()
        recs = []
        versions = {"pipeline": PIPELINE_VERSION, "scorer": scorer.version}
        if getattr(scorer, "ranker", None) is not None:
            versions["ranker"] = f"{scorer.ranker.cfg.model}@{scorer.ranker.n_learned}"
        now_ms = int(time.time() * 1000)
        for uid, (items, feats, picked, comps) in ranked.items():
            recs.append(emit.build(uid, triggers[uid], items, feats, picked, comps, versions, now_ms))
        timings["emit_build"] = t() - t4
        return BatchResult(recs, [], events=len(events), applied=sum(s.applied for s in snaps.values()),
                           timings=timings)

    def _candidates(self, snaps: dict, now_ts: int, timings: dict, exclude: dict | None, triggers: dict | None):
        """Stage 3 for the users in `snaps`: every source's reads in one round-trip, plus the items'
        metadata (and popularity, for a scorer that asks) in a second."""
        t = time.perf_counter
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
        users = list(snaps)
        cand_items, feats = [], []
        width = len(SOURCE_NAMES)
        for uid in users:
            cands = ctx.cands.get(uid, {})
            cand_items.append(list(cands))
            feats.append(np.array(list(cands.values()), dtype=np.float64).reshape(-1, width))
        all_items = {i for ids in cand_items for i in ids}
        if self.content is not None:
            self._map_unknown(all_items)
        batch = CandidateBatch(users, cand_items, feats, [snaps[u].recent for u in users],
                               [triggers[u].type if triggers else (snaps[u].last_type or "query") for u in users],
                               snapshots=snaps, now_ts=now_ts, meta=self.catalog.meta(all_items))
        if self.content is not None:
            batch.content_sim = self._content_sim(ctx.vectors, cand_items, users)
        timings["candidates"] = t() - t2
        return ctx, batch

    def _content_sim(self, uvec: dict, cand_items: list[list[str]], users: list[str]) -> list[np.ndarray]:
        """Per user, each candidate's cosine to the user's content vector (the one the content source
        searched with; NaN: no embedding either side)."""
        index = self.content.index
        out = []
        for uid, items in zip(users, cand_items):
            sim = np.full(len(items), np.nan)
            q = uvec.get(uid)
            if q is not None and items:
                rows = np.array([index.row.get(i, -1) for i in items])
                ok = rows >= 0
                if ok.any():
                    sim[ok] = index.mat[rows[ok]] @ q
            out.append(sim)
        return out

    def _map_unknown(self, items) -> None:
        """Items the transformer never saw (new ones) borrow its score for their nearest known item in
        content space (cosine >= 0.6): the transformer and the content path cooperate."""
        tr = getattr(self.scorer, "transformer", None)
        if tr is None:
            return
        unknown = [i for i in items if i not in tr.index and i not in tr.proxy and self.content.index.vector(i) is not None]
        if not unknown:
            return
        from stream.core.content import ContentIndex
        idx, size, owner = self._known
        if owner is not tr or len(self.content.index) > size * 1.1:
            known = [i for i in self.content.index.ids if i in tr.index]
            idx = ContentIndex(self.content.index.dim, max(1, len(known)))
            if known:
                idx.add(known, np.stack([self.content.index.vector(i) for i in known]))
            self._known = (idx, len(self.content.index), tr)
        hits = idx.search(np.stack([self.content.index.vector(i) for i in unknown]), 1)
        for item, h in zip(unknown, hits):
            tr.proxy[item] = tr.index[h[0][0]] if h and h[0][1] >= 0.6 else 0

    def item_stats(self, items: list[str], now_ts: int) -> dict[str, tuple[float, float]]:
        """item -> (all-time weighted interactions, trend score at now) in one round-trip (ZMSCORE)."""
        if not items:
            return {}
        epoch_ms = 64 * self.profiles.cfg.trend_half_life_s * 1000
        e = math.floor(now_ts / epoch_ms)
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("ZMSCORE", self.profiles.keys.pop(), *items)
        pipe.execute_command("ZMSCORE", self.profiles.keys.trend(e), *items)
        pop, tr = pipe.execute()
        scale = 2.0 ** (-(now_ts - e * epoch_ms) / (epoch_ms / 64))
        return {i: (float(p or 0.0), float(r or 0.0) * scale) for i, p, r in zip(items, pop, tr)}

    def _score_rank(self, ctx: BatchContext, batch: CandidateBatch, scorer: Scorer, timings: dict, *,
                    k: int | None = None, triggers=None, record: bool = False):
        """Scoring and ranking: user -> (items, feats, picked, components). With `record` and an online
        ranker, what is picked is recorded as shown, with the feature rows it was ranked with."""
        t = time.perf_counter
        t3 = t()
        if (getattr(scorer, "needs_item_stats", False) or self.explorer is not None) and batch.item_stats is None:
            batch.item_stats = self.item_stats(sorted(batch.meta), batch.now_ts)   # once per candidate set
        batch = replace(batch, extra={})     # per scorer: ask_variants scores one candidate set several ways
        components = components_of(scorer, batch)
        scores = components[scorer.name]
        t4 = t()
        timings["scoring"] = t4 - t3
        cats = {i: m[0] for i, m in batch.meta.items()}
        cfg = self.rank_cfg if k is None else replace(self.rank_cfg, k=k)
        ranker = getattr(scorer, "ranker", None) if record else None
        rows = batch.extra.get("features")
        pops = {i: st[0] for i, st in batch.item_stats.items()} if self.explorer is not None else {}
        out = {}
        for u, uid in enumerate(batch.users):
            snap = batch.snapshots[uid]
            items = batch.items[u]
            drop = set(snap.bought) | ctx.exclude.get(uid, set())
            trigger = triggers.get(uid) if triggers else None
            if trigger is not None and trigger.item_id and cfg.exclude_trigger:
                drop.add(trigger.item_id)
            if cfg.exclude_recent:
                drop.update(snap.recent)
            picked = top_k(items, scores[u], exclude=drop, category_of=cats, cfg=cfg)
            if self.explorer is not None and picked:
                j = self.explorer.choose(items, batch.features[u], pops, picked, drop)
                if j is not None:
                    pos = min(len(picked), self.explore_position) - 1
                    picked = picked[:pos] + [(j, float(scores[u][j]))] + picked[pos:cfg.k - 1]
                    if record:
                        self.explorer.shown(uid, items[j])
            out[uid] = (items, batch.features[u], picked, {name: arrs[u] for name, arrs in components.items()})
            if ranker is not None and rows is not None and picked and not snap.bot:
                idx = [i for i, _ in picked]
                self._asks += trigger is None
                key = emit.recommendation_id(uid, trigger.event_id) if trigger is not None else f"ask:{uid}:{batch.now_ts}:{self._asks}"
                ranker.record(uid, trigger.ts if trigger is not None else batch.now_ts, key,
                              [items[i] for i in idx], rows[u][idx], trigger.event_id if trigger else None)
        timings["rank"] = t() - t4
        return out
