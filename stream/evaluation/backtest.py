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
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import orjson

from schemas import Event, Rejected, validate_event, validate_item
from stream.data.adapters import open_log
from stream.evaluation.baselines import CoVisitKNN, MostPopular, RecentItems, RiverMF, TrendingPopular, novelty
from models.metrics import summarize

KS = (5, 10, 20)


@dataclass(frozen=True)
class BacktestConfig:
    warmup_frac: float = 0.8      # the first 80 % of events (by time) only train; the rest are evaluated
    batch_size: int = 100
    k_request: int = 50           # asked per user, then seen items filtered (if exclude_seen), then top K
    exclude_seen: bool = False    # MovieLens: a user rates a movie once, so seen items are excluded for all
    seed: int = 42
    limit: int | None = None
    systems: tuple[str, ...] = ("most_popular", "trending", "covisit_knn", "recent_items", "river_mf", "recstream")
    buckets: int = 20             # points of the metric-over-time curve
    encoder_dir: str | None = None    # an exported text encoder: content source, cold start, exploration
    explore: bool = True              # with the encoder: the fresh-item exploration slot
    rankers: tuple[str, ...] = ("lr", "fm")   # online-ranker variants of recstream run beside it ("" = none)
    ranker_warmup_frac: float = 0.1   # the end of the warm-up (this fraction of it) already shows lists to
                                      # the ranker variants and lets them learn; nothing there is evaluated


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


class RecstreamSystem:
    """The pipeline core against a private Redis key prefix; asked through `Pipeline.ask_variants`:
    "recstream" (the registered scorer) and, beside it on the same profiles and candidates,
    "recstream+{model}" for each online-ranker model, each learning from its own shown lists."""
    name = "recstream"

    def __init__(self, redis_url: str, items: list[dict], model_dir: str | None, k: int, seed: int,
                 exclude_seen: bool = False, rankers: tuple[str, ...] = (), encoder_dir: str | None = None,
                 explore: bool = True):
        from stream.core.ranking.ranker import OnlineRanker, RankedScorer, RankerConfig, parse_spec
        from stream.core.pipeline import Pipeline
        from stream.core.ranking.rank import RankConfig
        from stream.core.storage.store import connect
        self.client = connect(redis_url)
        self.prefix = f"rs:bt:{uuid.uuid4().hex[:8]}:"
        self.pipeline = Pipeline(self.client, self.prefix, rank_cfg=RankConfig(k=k))
        self.version = self.pipeline.scorer.version
        if model_dir:
            from stream.core.scoring.transformer import load_promoted
            scorer = load_promoted(model_dir)
            if scorer is not None:
                self.pipeline.set_scorer(scorer)
                self.version = scorer.version
        self.encoder = None
        if encoder_dir:
            from stream.core.content import ContentEncoder, ContentStore
            self.encoder = ContentEncoder(encoder_dir)
            self.pipeline.attach_content(ContentStore(self.client, self.prefix, self.encoder), explore=explore)
        base = self.pipeline.scorer
        self.variants = {"recstream": base}
        for spec in rankers:
            if spec:
                m, w = parse_spec(spec)
                ranker = OnlineRanker(RankerConfig(model=m, weight=w, seed=seed))
                self.variants[f"recstream+{spec}"] = RankedScorer(base, ranker)
        good = [it for it in (validate_item(i) for i in items) if not isinstance(it, Rejected)]
        t = time.time()
        for i in range(0, len(good), 5000):
            self.pipeline.catalog.upsert(good[i: i + 5000])
            if self.pipeline.content is not None:
                self.pipeline.content.upsert(good[i: i + 5000])
        self.embed_seconds = time.time() - t if self.pipeline.content is not None else 0.0
        self.batch_seconds: list[float] = []

    def ask(self, users: list[str], now_ts: int, k: int, exclude=None, only_rankers: bool = False):
        """name -> user -> items; every variant's list counts as shown to the user (its ranker's impressions)."""
        scorers = {n: s for n, s in self.variants.items() if not only_rankers or hasattr(s, "ranker")}
        if not scorers:
            return {}
        return self.pipeline.ask_variants(users, now_ts, scorers, k=k, exclude=exclude, record=True)

    def learn_batch(self, events: list[Event]) -> None:
        """Reveal a batch: the profile stage (the worker would also emit recommendations for these users;
        the backtest asks for them when they are evaluated instead), then the rankers' feedback."""
        t = time.perf_counter()
        snaps = self.pipeline.apply_profiles(events, {})
        self.batch_seconds.append(time.perf_counter() - t)
        self.pipeline.feedback(snaps, list(self.variants.values()))

    def ranker_stats(self) -> dict:
        out = {}
        for n, s in self.variants.items():
            r = getattr(s, "ranker", None)
            if r is not None:
                out[n] = {"examples_learned": r.n_learned, "examples_over_budget": r.skipped, **vars(r.join.stats)}
        return out

    def close(self) -> None:
        keys = list(self.client.scan_iter(match=self.prefix + "*", count=10_000))
        for i in range(0, len(keys), 10_000):
            self.client.unlink(*keys[i: i + 10_000])


def run_backtest(events: list[Event], items: list[dict], cfg: BacktestConfig, *, redis_url: str | None = None,
                 model_dir: str | None = None, progress: bool = False) -> dict:
    t_start = time.time()
    n = len(events)
    w = int(n * cfg.warmup_frac)
    warm_ts = events[w].ts if w < n else math.inf
    popular = MostPopular()
    systems = {}
    for name in cfg.systems:
        if name == "most_popular":
            systems[name] = popular
        elif name == "trending":
            systems[name] = TrendingPopular()
        elif name == "covisit_knn":
            systems[name] = CoVisitKNN(fallback=popular)
        elif name == "recent_items":
            systems[name] = RecentItems()
        elif name == "river_mf":
            systems[name] = RiverMF(seed=cfg.seed, popular=popular)
        elif name == "recstream":
            if redis_url is None:
                raise ValueError("the recstream system needs a Redis (redis_url)")
            systems[name] = RecstreamSystem(redis_url, items, model_dir, cfg.k_request, cfg.seed, cfg.exclude_seen,
                                            cfg.rankers, cfg.encoder_dir, cfg.explore)
        else:
            raise ValueError(f"unknown system {name!r}")
    track_names = [n for n in systems if n != "recstream"]
    if "recstream" in systems:
        track_names += list(systems["recstream"].variants)
    tracks = {name: SystemTrack() for name in track_names}
    w_ranker = w - int(w * cfg.ranker_warmup_frac) if "recstream" in systems else w
    seen_by_user: dict[str, set] = defaultdict(set)
    user_events: Counter = Counter()
    item_first: dict[str, int] = {}
    item_counts: Counter = Counter()
    catalog_seen: set = set()
    eval_idx = 0
    eval_ts: list[int] = []
    from tqdm import tqdm
    bar = tqdm(total=n, desc="backtest", unit="ev", disable=not progress, file=sys.stderr, mininterval=1)
    k_max = max(KS)
    try:
        for start, batch in _user_disjoint_batches(events, cfg.batch_size, warmup=w_ranker, split=w):
            evaluate = [e for e in batch if e.ts >= warm_ts and e.item_id and e.type != "search"]
            if start >= w_ranker and not evaluate:
                # end of the warm-up: the ranker variants are shown lists and learn; nothing is scored
                users = list(dict.fromkeys(e.user_id for e in batch if e.item_id and e.type != "search"))
                if users:
                    excl = {u: seen_by_user[u] for u in users} if cfg.exclude_seen else None
                    systems["recstream"].ask(users, batch[0].ts, cfg.k_request, excl, only_rankers=True)
            if evaluate:
                now = batch[0].ts
                users = list(dict.fromkeys(e.user_id for e in evaluate))
                answers = {}
                # with exclude_seen every system is told what each user has seen, so none wastes slots on it
                excl = {u: seen_by_user[u] for u in users} if cfg.exclude_seen else {}
                for name, sysm in systems.items():
                    if name == "recstream":
                        answers.update(sysm.ask(users, now, cfg.k_request, excl or None))
                    else:
                        answers[name] = {u: sysm.recommend(u, cfg.k_request, now, excl.get(u, frozenset()))
                                         for u in users}
                total_pop = sum(item_counts.values())
                for e in evaluate:
                    seg = []
                    if user_events[e.user_id] < 3:
                        seg.append("user_first_3_events")
                    if item_first.get(e.item_id, start) >= w:
                        seg.append("item_new_after_warmup")
                    seen = seen_by_user[e.user_id] if cfg.exclude_seen else None
                    for name in tracks:
                        r, shown = _rank(answers[name].get(e.user_id, []), e.item_id, seen, k_max)
                        tr = tracks[name]
                        tr.ranks.append(r)
                        tr.by_type[e.type].append(r)
                        for sgm in seg:
                            tr.by_segment[sgm].append(r)
                        tr.recommended.update(shown[:10])
                        tr.novelty.append(novelty(shown[:10], item_counts, total_pop))
                    eval_ts.append(e.ts)
                    eval_idx += 1
            # reveal the batch: every system learns it, in order
            for j, e in enumerate(batch):
                if "most_popular" not in systems:
                    popular.learn(e)          # shared by co-visitation's and MF's fallbacks
                for name, sysm in systems.items():
                    if name != "recstream":
                        sysm.learn(e)
                if e.item_id:
                    seen_by_user[e.user_id].add(e.item_id)
                    item_first.setdefault(e.item_id, start + j)
                    item_counts[e.item_id] += 1
                    catalog_seen.add(e.item_id)
                user_events[e.user_id] += 1
            if "recstream" in systems:
                systems["recstream"].learn_batch(batch)
            bar.update(len(batch))
    finally:
        bar.close()
        if "recstream" in systems:
            systems["recstream"].close()
    report = {"config": {**asdict(cfg), "systems": list(cfg.systems)}, "events": n, "warmup_events": w,
              "evaluated": eval_idx, "catalog_items_seen": len(catalog_seen), "seconds": round(time.time() - t_start, 1),
              "systems": {}, "over_time": {}}
    for name, tr in tracks.items():
        m = summarize(tr.ranks, KS)
        m["coverage@10"] = len(tr.recommended) / max(1, len(catalog_seen))
        m["novelty@10"] = float(np.mean(tr.novelty)) if tr.novelty else 0.0
        m["by_type"] = {t: summarize(r, KS) for t, r in sorted(tr.by_type.items())}
        m["by_segment"] = {s: summarize(r, KS) for s, r in sorted(tr.by_segment.items())}
        report["systems"][name] = m
        # NDCG@10 over time, in equal-count buckets of evaluated events
        chunks = [c for c in np.array_split(np.asarray(tr.ranks), cfg.buckets) if len(c)] if tr.ranks else []
        report["over_time"][name] = [summarize(c, (10,))["ndcg@10"] for c in chunks]
    if eval_ts:
        report["over_time_ts"] = [int(c[0]) for c in np.array_split(np.asarray(eval_ts), cfg.buckets) if len(c)]
    if "recstream" in systems:
        bs = np.asarray(systems["recstream"].batch_seconds) * 1000
        report["recstream_version"] = systems["recstream"].version
        report["rankers"] = systems["recstream"].ranker_stats()
        rs = systems["recstream"]
        if rs.encoder is not None:
            report["content"] = {"encoder": rs.encoder.version, "provider": rs.encoder.provider,
                                 "items_embedded": len(rs.pipeline.content.index),
                                 "embed_seconds": round(rs.embed_seconds, 1),
                                 "exploration_slots": rs.pipeline.explorer.slots_used if rs.pipeline.explorer else 0}
        report["recstream_batch_ms"] = {"p50": float(np.percentile(bs, 50)), "p99": float(np.percentile(bs, 99)),
                                        "events_per_s": float(n / (bs.sum() / 1000)) if bs.sum() else 0.0}
        report["_batch_ms"] = bs.tolist()
        baselines = {k: v["ndcg@10"] for k, v in report["systems"].items() if not k.startswith("recstream")}
        if baselines:
            best = max(baselines, key=baselines.get)
            report["best_baseline"] = best
            report["recstream_ndcg@10_ratio_to_best_baseline"] = (
                report["systems"]["recstream"]["ndcg@10"] / baselines[best] if baselines[best] else None)
            report["ndcg@10_ratio_to_best_baseline"] = {
                k: (v["ndcg@10"] / baselines[best] if baselines[best] else None)
                for k, v in report["systems"].items() if k.startswith("recstream")}
        base = report["systems"]["recstream"]["ndcg@10"]
        report["ndcg@10_ratio_ranker_vs_without"] = {
            k: (v["ndcg@10"] / base if base else None) for k, v in report["systems"].items() if k.startswith("recstream+")}
    return report


def format_ratios(report: dict) -> str:
    lines = []
    best = report.get("best_baseline")
    for k, r in (report.get("ndcg@10_ratio_to_best_baseline") or {}).items():
        extra = ""
        if k in report.get("ndcg@10_ratio_ranker_vs_without", {}):
            extra = f"; vs recstream without the ranker: {report['ndcg@10_ratio_ranker_vs_without'][k]:.3f}x"
        lines.append(f"{k} NDCG@10 / best baseline ({best}): {r:.3f}x{extra}")
    return "\n".join(lines)


def format_table(report: dict) -> str:
    cols = ["hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20", "mrr", "coverage@10", "novelty@10"]
    lines = ["| system | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in report["systems"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)


def format_segments(report: dict) -> str:
    segs = sorted({s for m in report["systems"].values() for s in m["by_segment"]} |
                  {f"type:{t}" for m in report["systems"].values() for t in m["by_type"]})
    lines = ["| system | " + " | ".join(f"{s} ndcg@10 (n)" for s in segs) + " |", "|---|" + "---:|" * len(segs)]
    for name, m in report["systems"].items():
        cells = []
        for s in segs:
            src = m["by_type"].get(s[5:]) if s.startswith("type:") else m["by_segment"].get(s)
            cells.append(f"{src['ndcg@10']:.4f} ({src['n']})" if src else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(report: dict, out: str | Path, title: str) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    batch_ms = report.pop("_batch_ms", [])
    (out / "metrics.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    ratio = report.get("recstream_ndcg@10_ratio_to_best_baseline")
    md = [f"# Backtest: {title}", "",
          f"{report['events']} events in time order; the first {report['warmup_events']} only train, "
          f"{report['evaluated']} are evaluated prequentially (asked first, then revealed) in time-ordered, "
          f"user-disjoint batches of at most {report['config']['batch_size']}. "
          f"Seen items excluded: {report['config']['exclude_seen']}. "
          f"Catalog items seen: {report['catalog_items_seen']}. Took {report['seconds']} s.", "",
          format_table(report), ""]
    if ratio is not None:
        md.append(f"recstream scorer: {report.get('recstream_version')}; `recstream+lr` / `recstream+fm` add the "
                  f"online river ranker (logistic regression / factorization machine), learning from its own "
                  f"shown lists.")
        md.append("")
        md += [f"- {line}" for line in format_ratios(report).splitlines()]
        md.append("")
    if report.get("content"):
        c = report["content"]
        md.append(f"Content: {c['items_embedded']:,} items embedded by {c['encoder']} on {c['provider']} in "
                  f"{c['embed_seconds']} s; exploration slots given: {c['exploration_slots']:,}.")
        md.append("")
    if report.get("rankers"):
        md.append("Online rankers: " + "; ".join(
            f"{k}: {v['examples_learned']:,} examples learned from {v['impressions']:,} impressions "
            f"({v['with_positive']:,} with a positive)" for k, v in report["rankers"].items()))
        md.append("")
    md += ["## By event type and segment (NDCG@10, events)", "", format_segments(report), ""]
    if "recstream_batch_ms" in report:
        b = report["recstream_batch_ms"]
        md.append(f"recstream pipeline (in-process): per batch p50 {b['p50']:.1f} ms, p99 {b['p99']:.1f} ms; "
                  f"{b['events_per_s']:,.0f} events/s through the pipeline core.")
    files = [out / "metrics.json", out / "report.md"]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 4))
        for name, ys in report["over_time"].items():
            ax.plot(range(len(ys)), ys, label=name, lw=2.5 if name == "recstream" else 1.2)
        ax.set_xlabel("evaluated events, in time order (equal-count buckets)")
        ax.set_ylabel("NDCG@10")
        ax.set_title(f"NDCG@10 over time: {title}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "ndcg_over_time.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(8, 3.5))
        names = list(report["systems"])
        ax.bar(names, [report["systems"][n]["coverage@10"] for n in names])
        ax.set_ylabel("catalog coverage of top-10")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        fig.savefig(out / "coverage.png", dpi=110)
        plt.close(fig)
        if batch_ms:
            fig, ax = plt.subplots(figsize=(8, 3.5))
            ax.hist(batch_ms, bins=50)
            ax.set_xlabel("profile-stage ms per batch (in-process; batches are user-disjoint)")
            ax.set_ylabel("batches")
            fig.tight_layout()
            fig.savefig(out / "latency_hist.png", dpi=110)
            plt.close(fig)
        files += [out / "ndcg_over_time.png", out / "coverage.png"] + ([out / "latency_hist.png"] if batch_ms else [])
        md += ["", "![NDCG@10 over time](ndcg_over_time.png)", "", "![coverage](coverage.png)", "",
               "![pipeline latency](latency_hist.png)"]
    except ImportError:
        md += ["", "(plots skipped: matplotlib is not installed; pip install 'recstream[train]')"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return files
