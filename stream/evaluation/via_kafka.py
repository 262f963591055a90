"""`recstream backtest --via-kafka`: the same log replayed through the real stack and the real worker.

A private local stack (broker + redis-server on free ports) is started; the catalog is produced, a
worker process started, the events produced in time order, and the recommendations consumed back and
joined to the log by trigger event id. Each evaluated event is scored against the user's latest
recommendation whose trigger came earlier in the log (the worker emits one per user per batch).

Why the numbers differ a little from the in-process mode: there every system is asked with the state
after the previous micro-batch; here a recommendation is computed when the worker processes the
user's previous event, with whatever else was in that worker batch (other users' events up to the
batch's end, at most `RECSTREAM_BATCH_SIZE` events later) and without anything that came between that
batch and the evaluated event. Events are sent at a steady `rate` (default 500/s) so that worker
batches stay small, as in live traffic; as fast as possible, the worker coalesces each user's events
of a large batch into one recommendation and most events have no fresh one to be judged by.
Also reported: event -> recommendation latency and throughput.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from models.metrics import summarize
from schemas import Event
from stream.config.settings import Settings
from stream.evaluation.backtest import KS, BacktestConfig, _rank
from stream.ops import stack
from stream.ops.harness import Listener, WorkerProcess, run_settings
from stream.ops.produce import produce_events, produce_items


def run_via_kafka(events: list[Event], items: list[dict], cfg: BacktestConfig, *, model_dir: str | None = None,
                  idle_s: float = 8.0, progress: bool = False, rate: float | None = 500.0) -> dict:
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="recstream-bt-") as tmp:
        scfg = stack.StackConfig(Path(tmp), broker_port=stack.free_port(), redis_port=stack.free_port())
        stack.up(scfg, tied=True)
        try:
            base = Settings(brokers=scfg.brokers, redis_url=scfg.redis_url, session_timeout_ms=2000,
                            top_k=cfg.k_request, exclude_trigger=0, model_dir=model_dir or str(Path(tmp) / "none"),
                            log_every_s=3600)
            s = run_settings(base, "bt")
            if items:
                produce_items(items, s.items_topic, s.brokers)
            with WorkerProcess(s, log=Path(tmp) / "worker.log") as worker, \
                    Listener(s.recs_topic, s.brokers) as listener:
                worker.wait_ready(items[-1]["item_id"] if items else None)
                t_send = time.time()
                rep = produce_events(listener.tracked(e.to_dict() for e in events), s.events_topic, s.brokers,
                                     progress=progress, total=len(events), rate=rate)
                t_done = listener.wait_quiet(idle_s, lambda: worker.alive)
            recs = {eid: ([it["item_id"] for it in obj["items"]], t) for eid, (obj, t) in listener.by_trigger.items()}
            lat = listener.latencies_ms()
        finally:
            stack.down(scfg)
            log_tail = (Path(tmp) / "worker.log").read_text()[-3000:] if (Path(tmp) / "worker.log").exists() else ""
    # join and evaluate
    n = len(events)
    w = int(n * cfg.warmup_frac)
    warm_ts = events[w].ts if w < n else float("inf")
    latest: dict[str, list[str]] = {}
    seen: dict[str, set] = {}
    ranks, by_type = [], {}
    k_max = max(KS)
    for e in events:
        if e.ts >= warm_ts and e.item_id and e.type != "search":
            r, _ = _rank(latest.get(e.user_id, []), e.item_id, seen.get(e.user_id) if cfg.exclude_seen else None, k_max)
            ranks.append(r)
            by_type.setdefault(e.type, []).append(r)
        got = recs.get(e.event_id)
        if got is not None:
            latest[e.user_id] = got[0]
        if e.item_id:
            seen.setdefault(e.user_id, set()).add(e.item_id)
    if not recs:
        raise RuntimeError(f"the worker emitted no recommendation; its log ends with:\n{log_tail}")
    m = summarize(ranks, KS)
    m["by_type"] = {t: summarize(r, KS) for t, r in sorted(by_type.items())}
    return {"mode": "via-kafka", "events": n, "warmup_events": w, "evaluated": len(ranks),
            "recommendations": len(recs), "seconds": round(time.time() - t0, 1),
            "systems": {"recstream": m},
            "throughput_events_per_s": n / max(1e-9, t_done - t_send),
            "latency_ms": {"p50": float(np.percentile(lat, 50)) if len(lat) else None,
                           "p99": float(np.percentile(lat, 99)) if len(lat) else None},
            "produce_rate": rep.rate}
