"""Catch-up runs over a pre-loaded topic: the plain consume -> produce ceiling and the in-process worker
(`bench.run`'s worker and full groups)."""
from __future__ import annotations

import resource
import time

from stream.config.settings import Settings
from stream.drivers.kafka import consumer_conf, producer_conf


def passthrough(s: Settings, n: int) -> float:
    """Plain consume -> produce of n messages (no decode, no work): the transport ceiling."""
    from confluent_kafka import Consumer, Producer
    c = Consumer(consumer_conf(s.brokers, s.group_id + "-pt", session_timeout_ms=2000))
    p = Producer(producer_conf(s.brokers))
    c.subscribe([s.events_topic])
    done, t0 = 0, None
    while done < n:
        msgs = c.consume(1000, 0.2)
        for m in msgs:
            if m.error():
                continue
            if t0 is None:
                t0 = time.perf_counter()
            while True:
                try:
                    p.produce(s.dlq_topic, m.value(), m.key())
                    break
                except BufferError:
                    p.poll(0.01)
            done += 1
        p.poll(0)
    p.flush(30)
    el = time.perf_counter() - t0
    c.close()
    return n / el


def warm_up(pipeline, events: list[dict], batch: int) -> dict:
    """Untimed and in-process: `events` through the pipeline (profiles, shared statistics, the learned
    ranker's examples), then the ranker's trees fitted on them and waited for. A timed catch-up that follows
    starts where a worker that has been running a while stands: its lists ordered by fitted trees. Without
    it a run starts with an empty ranker whose first fit (in the background, on a busy box) may land after
    the run: such a run never paid for the trees' predictions."""
    from schemas import Event, validate_event
    from stream.core.ranking.gbdt import WindowedGBDT
    evs = sorted((e for e in map(validate_event, events) if isinstance(e, Event)), key=lambda e: e.ts)
    t = time.perf_counter()
    for i in range(0, len(evs), batch):
        pipeline.process_events(evs[i: i + batch])
    rankers = {id(r): r for r in (pipeline.ranker, *pipeline.variant_rankers.values()) if r is not None}
    trees = [r.model for r in rankers.values() if isinstance(r.model, WindowedGBDT)]
    fitted = all([m.fit_now() for m in trees])
    info = {"warm_events": len(evs), "warm_seconds": round(time.perf_counter() - t, 1),
            "ranker_fitted_at_start": fitted if trees else None,
            "ranker_examples": sum(r.n_learned for r in rankers.values())}
    print(f"  warm-up (untimed): {info}", flush=True)
    return info


def warm_worker_state(s: Settings, events: list[dict], items: list[dict]) -> dict:
    """For a worker started in its own process afterwards (the latency rows): `warm_up` in process on the
    worker's key space and group, then the ranker's checkpoint saved where that worker restores it from at
    start (its trees are compiled again as they are restored, before its first batch)."""
    from schemas import validate_item
    from stream.config.compose import build_pipeline
    pipeline = build_pipeline(s)
    pipeline.catalog.upsert([validate_item(it) for it in items])
    info = warm_up(pipeline, events, s.batch_size)
    if pipeline.keeper is not None:
        pipeline.keeper.save()
    return info


def _cpu_now(client) -> tuple[float, float]:
    """(this process's CPU-seconds, its reaped children's included: the ranker's refits run in a child;
    Redis' CPU-seconds, every master's INFO CPU)."""
    from bench.store import redis_cpu_calls
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, redis_cpu_calls(client)[0]


def run_worker_catchup(s: Settings, n: int, warm: list[dict] | None = None, rows=None, label: str = ""
                       ) -> tuple[float, dict, dict | None]:
    """The in-process worker over a pre-loaded topic of `n` events: (events/s, stage timings, what the
    warm-up left: None without `warm`, the events put through the pipeline before the timed run). With `rows`,
    also the timed run's CPU per event, as rows `{label}_worker_cpu_per_event` (this process, the
    consumer's and producer's threads and the refit's child included) and `{label}_redis_cpu_per_event`."""
    from stream.config.compose import build_pipeline
    from stream.core.scoring.transformer import ModelWatcher
    from stream.core.storage.store import connect
    from stream.drivers.worker import ConfluentWorker
    pipeline = build_pipeline(s)
    watcher = ModelWatcher(s.model_dir, pipeline) if s.model_dir else None
    if watcher:
        watcher()                   # as `recstream worker` does: the promoted model from the first batch
    warmed = warm_up(pipeline, warm, s.batch_size) if warm else None
    w = ConfluentWorker(s, pipeline, between_batches=watcher)
    state = {"n": 0, "t0": None, "t": {}}
    client = connect(s.redis_url)

    def on_batch(res):
        if res.events and state["t0"] is None:
            state["t0"] = time.perf_counter() - sum(res.timings.values())
        state["n"] += res.events
        for k, v in res.timings.items():
            state["t"][k] = state["t"].get(k, 0.0) + v
        if state["n"] >= n:
            state["cpu1"] = _cpu_now(client)
            w.stop_event.set()
    w.on_batch = on_batch
    cpu0 = _cpu_now(client)
    w.run()
    if rows is not None:
        (wc0, rc0), (wc1, rc1) = cpu0, state.get("cpu1") or _cpu_now(client)
        rows.add(f"{label}_worker_cpu_per_event", 1e6 * (wc1 - wc0) / n, "us", events=n)
        rows.add(f"{label}_redis_cpu_per_event", 1e6 * (rc1 - rc0) / n, "us", events=n)
    return n / (time.perf_counter() - state["t0"]), state["t"], warmed
