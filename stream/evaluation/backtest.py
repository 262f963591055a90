"""Prequential (test-then-train) backtest: replay a log in event-time order; for each evaluated event,
first ask every system for the user's top-K using only what happened before, then reveal the event
and let every system learn from it.

Systems run side by side on the same events: most-popular (all-time and trending), sequential
co-visitation kNN, the user's own recent items, river's FunkMF learned online, and the recstream
pipeline core itself (the same code as the worker: profiles, candidates, scorer, ranking), with
whatever scorer is promoted in the registry. Events are processed in time-ordered micro-batches of
at most `batch_size` in which no user appears twice; every system is asked with the state after the
previous batch (all share the same view: every earlier event of the user, and everyone else's up to
the previous batch) and learns the batch afterwards. Nothing from an event's own batch or later is
visible when it is evaluated.
"""
from __future__ import annotations

import math
import sys
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
from tqdm import tqdm

from models.metrics import summarize
from schemas import Event, Rejected, validate_event
from stream.core.candidates import SOURCE_NAMES
from stream.data.adapters import open_log
from stream.evaluation.baselines import MostPopular, novelty
from stream.evaluation.shards import run_shards
from stream.evaluation.system import (NO_EXPLORE, RETRAINED, RecstreamSystem, make_systems, recstream_report,
                                     retrain_report)

KS = (5, 10, 20)


@dataclass(frozen=True)
class BacktestConfig:
    warmup_frac: float = 0.8      # the first 80 % of events (by time) only train; the rest are evaluated
    batch_size: int = 100
    k_request: int = 50           # asked per user, then seen items filtered (if exclude_seen), then top K
    exclude_seen: bool = False    # MovieLens: a user rates a movie once, so seen items are excluded for all
    seed: int = 42
    limit: int | None = None
    systems: tuple[str, ...] = ("most_popular", "trending", "covisit_knn", "covisit_sym", "recent_items", "river_mf",
                                "recstream")
    buckets: int = 20             # points of the metric-over-time curve
    encoder_dir: str | None = None    # an exported text encoder: content source, cold start, exploration
    explore: bool = True              # with the encoder: the fresh-item exploration slot
    rankers: tuple[str, ...] = ("gbdt",)      # online-ranker variants of recstream run beside it ("" = none)
    ranker_warmup_frac: float = 0.1   # the end of the warm-up (this fraction of it) already shows lists to
                                      # the ranker variants and lets them learn; nothing there is evaluated
    retrain_every_s: float | None = None   # also "recstream (retrained)": the model retrained at event time
    retrain_epochs: int = 2                # epochs of each warm-started retrain
    challenger: str | None = None          # also "recstream (candidate)": this model version (a shadow check)
    holdout: bool = True                   # serve the model's holdout over its training window's end (system.py)
    parallel: bool | None = None           # the systems in processes of their own (shards.py); None: by log and cores


@dataclass
class SystemTrack:
    ranks: list[int] = field(default_factory=list)
    by_type: dict = field(default_factory=lambda: defaultdict(list))
    by_segment: dict = field(default_factory=lambda: defaultdict(list))
    recommended: set = field(default_factory=set)
    novelty: list[float] = field(default_factory=list)


def load_events(path, fmt=None, limit=None) -> tuple[list[Event], list[dict]]:
    src = open_log(path, fmt)
    events = []
    for _, rec in src.events():
        ev = rec if isinstance(rec, Rejected) else validate_event(rec)
        if not isinstance(ev, Rejected):
            events.append(ev)
            if limit and len(events) >= limit:
                break
    events.sort(key=lambda e: e.ts)
    return events, list(src.items())


def validation_split(events: list[Event], warmup_frac: float) -> list[Event]:
    """The warm-up part of a time-ordered log (its first `warmup_frac`): backtested with the same split, it is
    where settings are chosen, so that nothing is chosen after looking at the log's evaluated period.

    >>> [e.ts for e in validation_split([Event("e%d" % t, "u", "i", "view", t) for t in range(10)], 0.8)]
    [0, 1, 2, 3, 4, 5, 6, 7]
    """
    return events[: int(len(events) * warmup_frac)]


def _rank(recs: list[str], target: str, seen: set | None, k_max: int) -> tuple[int, list[str]]:
    if seen:
        recs = [r for r in recs if r not in seen]
    recs = recs[:k_max]
    try:
        return recs.index(target) + 1, recs
    except ValueError:
        return 0, recs


def _user_disjoint_batches(events: list[Event], size: int, warmup: int = 0, warmup_size: int = 1000,
                           split: int | None = None):
    """Consecutive (time-ordered) batches of at most `size` events in which no user appears twice, so
    every evaluated event sees all of its user's earlier events (sequence models depend on the
    immediately preceding items, and real logs are bursty). The warm-up, where nothing is evaluated,
    goes in plain batches of `warmup_size`; no batch spans index `split` (the end of the warm-up when the
    ranker variants already learn before it). Yields (index of first event, batch)."""
    for start in range(0, warmup, warmup_size):
        yield start, events[start: min(warmup, start + warmup_size)]
    start, users = warmup, set()
    for i in range(warmup, len(events)):
        e = events[i]
        if i - start >= size or e.user_id in users or (i == split and i > start):
            yield start, events[start:i]
            start, users = i, set()
        users.add(e.user_id)
    if start < len(events):
        yield start, events[start:]


@dataclass
class Replay:
    """What the replay has revealed so far, and each system's ranks of the evaluated events."""
    cfg: BacktestConfig
    systems: dict
    popular: MostPopular
    split: int                                    # index of the first evaluated event
    tracks: dict = field(default_factory=dict)
    seen_by_user: dict = field(default_factory=lambda: defaultdict(set))
    user_events: Counter = field(default_factory=Counter)
    item_first: dict = field(default_factory=dict)
    item_counts: Counter = field(default_factory=Counter)
    catalog_seen: set = field(default_factory=set)
    eval_ts: list[int] = field(default_factory=list)
    candidate_ranks: list[int] = field(default_factory=list)   # the evaluated item's place in recstream's candidates
    candidate_counts: list[int] = field(default_factory=list)
    candidate_sources: list = field(default_factory=list)      # per evaluated event: which sources proposed it

    def __post_init__(self):
        self.rs = [s for s in self.systems.values() if isinstance(s, RecstreamSystem)]
        self.baselines = len(self.rs) < len(self.systems)
        names = [n for n, s in self.systems.items() if s not in self.rs]
        for rs in self.rs:
            names += list(rs.variants)
            if rs.explores:       # the same lists without the exploration slot: what the slot costs
                names += [n + NO_EXPLORE for n in rs.variants]
        self.tracks = {name: SystemTrack() for name in names}

    def excluded(self, users: list[str]) -> dict:
        """With exclude_seen every system is told what each user has seen, so none wastes slots on it."""
        return {u: self.seen_by_user[u] for u in users} if self.cfg.exclude_seen else {}

    def show_rankers(self, batch: list[Event]) -> None:
        """End of the warm-up: the ranker variants are shown lists and learn; nothing is scored."""
        users = list(dict.fromkeys(e.user_id for e in batch if e.item_id and e.type != "search"))
        for rs in self.rs if users else ():
            rs.ask(users, batch[0].ts, self.cfg.k_request, self.excluded(users) or None, only_rankers=True)

    def evaluate(self, batch: list[Event], evaluate: list[Event], start: int) -> None:
        """Ask every system for the users of `evaluate` (the state before the batch), then rank each
        event's item in each system's list."""
        cfg, k_max = self.cfg, max(KS)
        now = batch[0].ts
        users = list(dict.fromkeys(e.user_id for e in evaluate))
        answers = {}
        excl = self.excluded(users)
        for name, sysm in self.systems.items():
            if sysm in self.rs:
                answers.update(sysm.ask(users, now, cfg.k_request, excl or None))
                if sysm.explores:
                    answers.update({n + NO_EXPLORE: lists for n, lists in sysm.unexplored.items()})
            else:
                answers[name] = {u: sysm.recommend(u, cfg.k_request, now, excl.get(u, frozenset())) for u in users}
        total_pop = sum(self.item_counts.values())
        for e in evaluate:
            seg = []
            if self.user_events[e.user_id] < 3:
                seg.append("user_first_3_events")
            if self.item_first.get(e.item_id, start) >= self.split:
                seg.append("item_new_after_warmup")
            if not cfg.exclude_seen and self.user_events[e.user_id]:
                seg.append("repeat" if e.item_id in self.seen_by_user[e.user_id] else "new_to_user")
            seen = self.seen_by_user[e.user_id] if cfg.exclude_seen else None
            if self.rs:
                cands = self.rs[0].candidates.get(e.user_id, [])
                at = next((j for j, (item, _) in enumerate(cands) if item == e.item_id), -1)
                self.candidate_ranks.append(at)
                self.candidate_counts.append(len(cands))
                self.candidate_sources.append(cands[at][1] if at >= 0 else None)
            for name, tr in self.tracks.items():
                r, shown = _rank(answers[name].get(e.user_id, []), e.item_id, seen, k_max)
                tr.ranks.append(r)
                tr.by_type[e.type].append(r)
                for sgm in seg:
                    tr.by_segment[sgm].append(r)
                tr.recommended.update(shown[:10])
                tr.novelty.append(novelty(shown[:10], self.item_counts, total_pop))
            self.eval_ts.append(e.ts)

    def reveal(self, batch: list[Event], start: int) -> None:
        """Every system learns the batch, in order."""
        for j, e in enumerate(batch):
            if "most_popular" not in self.systems and self.baselines:
                self.popular.learn(e)          # shared by co-visitation's and MF's fallbacks
            for sysm in self.systems.values():
                if sysm not in self.rs:
                    sysm.learn(e)
            if e.item_id:
                self.seen_by_user[e.user_id].add(e.item_id)
                self.item_first.setdefault(e.item_id, start + j)
                self.item_counts[e.item_id] += 1
                self.catalog_seen.add(e.item_id)
            self.user_events[e.user_id] += 1
        for rs in self.rs:
            rs.learn_batch(batch)


def run_backtest(events: list[Event], items: list[dict], cfg: BacktestConfig, *, redis_url: str | None = None,
                 model_dir: str | None = None, progress: bool = False) -> dict:
    """Prequential: events in time order, in user-disjoint batches; each evaluated event is first asked
    of every system (state before it), then revealed to all of them. Returns the report (metrics.json).
    Unless `cfg.parallel` is False, groups of systems replay the same log in processes of their own
    (`shards`): the same figures as one process, in less time where there are cores."""
    t_start = time.time()
    replay, retrains = run_shards(replay_log, events, items, cfg, redis_url, model_dir, progress)
    report = build_report(replay, len(events), round(time.time() - t_start, 1))
    if retrains is not None:
        report["retrain"] = retrain_report(report, cfg.retrain_every_s, retrains)
    return report


def replay_log(events: list[Event], items: list[dict], cfg: BacktestConfig, redis_url: str | None,
               model_dir: str | None, progress: bool = False, only: frozenset | None = None):
    """The replay of `events` by the systems named in `only` (None: all). Returns (the Replay, the retrains
    done, or None without a retrained system)."""
    n = len(events)
    w = int(n * cfg.warmup_frac)
    warm_ts = events[w].ts if w < n else math.inf
    systems, popular = make_systems(cfg, items, redis_url, model_dir, only)
    replay = Replay(cfg, systems, popular, w)
    w_ranker = w - int(w * cfg.ranker_warmup_frac) if "recstream" in cfg.systems else w   # every group: one batching
    retrainer = None
    if cfg.retrain_every_s and "recstream" + RETRAINED in systems:
        from stream.evaluation.retrain import ReplayRetrainer
        retrainer = ReplayRetrainer(systems["recstream" + RETRAINED], model_dir, cfg.retrain_every_s,
                                    events[0].ts, epochs=cfg.retrain_epochs, seed=cfg.seed)
    bar = tqdm(total=n, desc="backtest", unit="ev", disable=not progress, file=sys.stderr, mininterval=1)
    try:
        for start, batch in _user_disjoint_batches(events, cfg.batch_size, warmup=w_ranker, split=w):
            evaluate = [e for e in batch if e.ts >= warm_ts and e.item_id and e.type != "search"]
            for rs in replay.rs:
                rs.advance(batch[0].ts)
            if retrainer is not None:           # a retrain loop running since the log began, like a cron job
                retrainer.maybe(batch[0].ts)       # on what was revealed before this batch
            if start >= w_ranker and not evaluate:
                replay.show_rankers(batch)
            if evaluate:
                replay.evaluate(batch, evaluate, start)
            replay.reveal(batch, start)
            if retrainer is not None:
                retrainer.observe(batch)
            bar.update(len(batch))
    finally:
        bar.close()
        for rs in replay.rs:
            rs.close()
        if retrainer is not None:
            retrainer.close()
    return replay, (retrainer.log if retrainer is not None else None)


def build_report(replay: Replay, n: int, seconds: float) -> dict:
    cfg, systems = replay.cfg, replay.systems
    report = {"config": {**asdict(cfg), "systems": list(cfg.systems)}, "events": n, "warmup_events": replay.split,
              "evaluated": len(replay.eval_ts), "catalog_items_seen": len(replay.catalog_seen), "seconds": seconds,
              "systems": {}, "over_time": {}}
    for name, tr in replay.tracks.items():
        m = summarize(tr.ranks, KS)
        m["coverage@10"] = len(tr.recommended) / max(1, len(replay.catalog_seen))
        m["novelty@10"] = float(np.mean(tr.novelty)) if tr.novelty else 0.0
        m["by_type"] = {t: summarize(r, KS) for t, r in sorted(tr.by_type.items())}
        m["by_segment"] = {s: summarize(r, KS) for s, r in sorted(tr.by_segment.items())}
        report["systems"][name] = m
        # NDCG@10 over time, in equal-count buckets of evaluated events
        chunks = [c for c in np.array_split(np.asarray(tr.ranks), cfg.buckets) if len(c)] if tr.ranks else []
        report["over_time"][name] = [summarize(c, (10,))["ndcg@10"] for c in chunks]
    if replay.eval_ts:
        report["over_time_ts"] = [int(c[0]) for c in np.array_split(np.asarray(replay.eval_ts), cfg.buckets) if len(c)]
    if "recstream" in systems:
        report.update(recstream_report(systems["recstream"], report, n))
        ranks = np.asarray(replay.candidate_ranks)
        if len(ranks):
            report["candidate_recall"] = {
                "all": float((ranks >= 0).mean()), "@100": float(((ranks >= 0) & (ranks < 100)).mean()),
                "@10": float(((ranks >= 0) & (ranks < 10)).mean()),
                "mean_candidates": float(np.mean(replay.candidate_counts)),
                "by_source": {name: float(np.mean([p is not None and bool(p[j]) for p in replay.candidate_sources]))
                              for j, name in enumerate(SOURCE_NAMES)}}
    return report
