"""Catch-up runs over a pre-loaded topic: the plain consume -> produce ceiling and the in-process worker
(`bench.run`'s worker and full groups)."""
from __future__ import annotations

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


def run_worker_catchup(s: Settings, n: int) -> tuple[float, dict]:
    from stream.config.compose import build_pipeline
    from stream.core.scoring.transformer import ModelWatcher
    from stream.drivers.worker import ConfluentWorker
    pipeline = build_pipeline(s)
    watcher = ModelWatcher(s.model_dir, pipeline) if s.model_dir else None
    if watcher:
        watcher()                   # as `recstream worker` does: the promoted model from the first batch
    w = ConfluentWorker(s, pipeline, between_batches=watcher)
    state = {"n": 0, "t0": None, "t": {}}

    def on_batch(res):
        if res.events and state["t0"] is None:
            state["t0"] = time.perf_counter() - sum(res.timings.values())
        state["n"] += res.events
        for k, v in res.timings.items():
            state["t"][k] = state["t"].get(k, 0.0) + v
        if state["n"] >= n:
            w.stop_event.set()
    w.on_batch = on_batch
    w.run()
    return n / (time.perf_counter() - state["t0"]), state["t"]
