"""The latency group's harness: the worker in its own process (or a plain consume->produce relay, the
broker's own two-hop floor) fed at a fixed rate, each recommendation's latency measured by the receiver,
and the worker's own account of where the time went (its heartbeat's `path`)."""
from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace

import numpy as np

from stream.config.settings import Settings
from stream.data.synth import SynthShop
from stream.ops.harness import Listener, WorkerProcess
from stream.ops.produce import produce_events, produce_items

from bench.rows import ROOT


def worker_env(s: Settings) -> dict:
    log_every = float(os.environ.get("BENCH_WORKER_LOG_EVERY_S", "3600"))
    return {**os.environ, **replace(s, metrics_port=0, log_every_s=log_every).to_env()}


RELAY = """
import os, signal, orjson
from confluent_kafka import Consumer, Producer
from stream.drivers.kafka import consumer_conf, producer_conf, take_batch
s = os.environ
c = Consumer(consumer_conf(s["RECSTREAM_BROKERS"], s["RECSTREAM_GROUP_ID"], session_timeout_ms=2000))
p = Producer(producer_conf(s["RECSTREAM_BROKERS"], **{"linger.ms": 1}))
c.subscribe([s["RECSTREAM_EVENTS_TOPIC"]])
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
open(s["BENCH_READY"], "w").close()
while not stop:
    for m in take_batch(c, 1000, 0.005):       # as the worker takes its batches
        if m.error() is None:
            ev = orjson.loads(m.value())
            p.produce(s["RECSTREAM_RECS_TOPIC"],
                      orjson.dumps({"trigger_event_id": ev["event_id"], "user_id": ev["user_id"]}), m.key())
    p.poll(0)
p.flush(10)
c.close()
"""


def latency_at(s: Settings, shop: SynthShop, events: list[dict], rate: float, seconds: float,
               relay: bool = False, warm: int = 0) -> dict:
    """Worker in its own process (or, with relay=True, a plain consume->produce relay: the broker's own
    two-hop floor); events produced at `rate`; latency = recommendation received - event sent. With `warm`,
    the worker starts in a steady state: the first `warm` events applied in process beforehand, its ranker
    fitted there and restored from the checkpoint (`bench.catchup.warm_worker_state`); the timed events are
    the ones after them (the relay sends the same ones)."""
    n = int(rate * (seconds + 1))
    warm = min(warm, max(0, len(events) - n))
    events_before, events = events[:warm], events[warm:]
    if relay:
        env = worker_env(s)
        ready = ROOT / ".state" / f"relay-{uuid.uuid4().hex[:6]}"
        env["BENCH_READY"] = str(ready)
        relay_proc = subprocess.Popen([sys.executable, "-c", RELAY], env=env, cwd=ROOT)
        deadline = time.time() + 60
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)   # group join
        ready.unlink(missing_ok=True)
        worker = None
    else:
        produce_items(shop.items, s.items_topic, s.brokers)
        if warm:
            from bench.catchup import warm_worker_state
            warm_worker_state(s, events_before, shop.items)
        worker = WorkerProcess(s, log=os.environ.get("BENCH_WORKER_LOG", os.devnull), cwd=ROOT,
                               log_every_s=float(os.environ.get("BENCH_WORKER_LOG_EVERY_S", "3600")))
        # ready once it has applied an item sent after it started (the warm state holds the catalog already,
        # so a catalog item proves nothing): no event is sent while the worker is still starting
        probe = {**shop.items[-1], "item_id": f"bench-ready-{uuid.uuid4().hex[:8]}"}
        produce_items([probe], s.items_topic, s.brokers)
        worker.wait_ready(probe["item_id"])
    warmup = int(rate)   # the first second warms the producer (metadata, producer id): not measured
    # This process sends and receives (its receive times are the latencies): no cyclic collection while it
    # measures (its full passes over the events and the warm-up's objects paused it for 50-100 ms at a time)
    gc.collect()
    gc.disable()
    try:
        with Listener(s.recs_topic, s.brokers) as recs:     # joined its group before anything is sent
            rep = produce_events(recs.tracked(events[:n], skip=warmup), s.events_topic, s.brokers, rate=rate)
            time.sleep(3.0)
    finally:
        gc.enable()
    path = None
    if worker is not None:
        from stream.core.storage.serving import WORKERS, fresh_workers
        from stream.core.storage.store import connect
        seen = fresh_workers(connect(s.redis_url).hgetall(s.key_prefix + WORKERS))   # its last heartbeat
        path = next(iter(seen.values()), {}).get("path")
        worker.stop()
    else:
        relay_proc.send_signal(signal.SIGTERM)
        relay_proc.wait(30)
    tl = recs.timeline()
    ms, last = tl[:, 1], tl[tl[:, 0] >= tl[0, 0] + seconds - 5, 1]      # the last 5 s: the state has grown most
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "n": len(ms),
            "last5_p50": float(np.percentile(last, 50)), "last5_p99": float(np.percentile(last, 99)),
            "achieved_rate": rep.rate, "path": path}


def latency_group(rows, rate: int, seconds: float, repeat: int, shop: SynthShop, events: list[dict], stack, cleanup
                  ) -> None:
    """The latency rows at `rate`: the worker and the relay floor `repeat` times in turn (the relay first every
    other time), each on a fresh stack (`stack(tag)` -> (client, settings)); a row is the median over the runs,
    and the added latency is each run's worker minus its own relay, the median of those (the runs kept in the
    row's settings). The worker's own account (`latency_path_*`) is its first run's."""
    got: list[tuple[dict, dict]] = []
    for k in range(max(1, repeat)):
        pair = {}
        for relay in ((False, True) if k % 2 == 0 else (True, False)):
            what = "broker floor: plain consume->produce relay, same two hops" if relay else "worker in its own process"
            print(f"== latency at {rate} events/s, run {k + 1}/{repeat}: {what}", flush=True)
            client, s = stack(f"{'r' if relay else 'l'}{rate}")
            pair[relay] = latency_at(s, shop, events, rate, seconds, relay=relay, warm=len(events) // 2)  # steady
            cleanup(s, client)
        got.append((pair[False], pair[True]))
    med = lambda vals: float(np.median(vals))     # noqa: E731
    res = {key: med([w[key] for w, _ in got]) for key in ("p50", "p99", "last5_p50", "last5_p99", "achieved_rate")}
    floor = {key: med([f[key] for _, f in got]) for key in ("p50", "p99", "last5_p50", "last5_p99")}
    n, n_floor, runs = got[0][0]["n"], got[0][1]["n"], len(got)
    rows.add(f"latency_p50_at_{rate}", res["p50"], "ms", rate=rate, seconds=seconds, samples=n, runs=runs)
    rows.add(f"latency_p99_at_{rate}", res["p99"], "ms", rate=rate, seconds=seconds, samples=n, runs=runs)
    rows.add(f"achieved_input_rate_at_{rate}", res["achieved_rate"], "events/s", rate=rate)
    rows.add(f"latency_last5s_p50_at_{rate}", res["last5_p50"], "ms", rate=rate, seconds=5, runs=runs)
    rows.add(f"latency_last5s_p99_at_{rate}", res["last5_p99"], "ms", rate=rate, seconds=5, runs=runs)
    # where the worker says the time went (its heartbeat: the last 30 s, the whole run; the intake is a median
    # over batches, so the first second's events, the producer's warm-up that the receiver does not time and
    # that reached the worker up to 0.85 s late in a trial run, count little)
    path = got[0][0]["path"] or {}
    for k in ("intake_p50_ms", "handoff_ms", "events_per_batch"):
        if path.get(k) is not None:
            rows.add(f"latency_path_{k.removesuffix('_ms')}_at_{rate}", path[k], "ms" if k.endswith("ms") else "events",
                     rate=rate)
    for stage, ms in (path.get("stages_ms") or {}).items():
        rows.add(f"latency_path_stage_{stage}_at_{rate}", ms, "ms per batch", rate=rate)
    rows.add(f"relay_latency_p50_at_{rate}", floor["p50"], "ms", rate=rate, seconds=seconds, samples=n_floor, runs=runs)
    rows.add(f"relay_latency_p99_at_{rate}", floor["p99"], "ms", rate=rate, seconds=seconds, samples=n_floor, runs=runs)
    rows.add(f"relay_latency_last5s_p50_at_{rate}", floor["last5_p50"], "ms", rate=rate, seconds=5, runs=runs)
    rows.add(f"relay_latency_last5s_p99_at_{rate}", floor["last5_p99"], "ms", rate=rate, seconds=5, runs=runs)
    for q in ("p99", "p50"):
        each = [round(w[q] - f[q], 2) for w, f in got]
        rows.add(f"latency_{q}_minus_relay_{q}_at_{rate}", med(each), "ms", rate=rate, runs=runs, each_run=each)
