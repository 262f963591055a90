"""The HTTP API under load: `python -m bench.api` prints a table and writes bench/results/api.json.

On a private local stack, a worker fills Redis from a synthetic shop (5,000 events), then `recstream serve`
runs in its own process and Debian's `hey` (apt-get install hey) sends requests at a fixed rate (-c workers
x -q requests/s each) for a fixed time. Rows:
  cached read   GET /v1/users/U/recommendations: the worker's latest list (one async Redis GET)
  fresh ask     the same with RECSTREAM_API_FRESH_AFTER_S=0 on a second API process: every request runs the
                read-only pipeline core (candidates from Redis, scoring)
  similar       GET /v1/items/I/similar
Each at the rates given (default 1,000/s for reads; the fresh ask also at 100/s and 250/s), spread over the
10 busiest users (one hey process each), p50/p99 over every request, achieved requests/s, and the answers'
status codes. The load generator shares this 2-core
box with the API, Redis and the broker: the figures are an upper bound on what a dedicated box shows.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def hey(urls: list[str], rate: int, seconds: int, workers: int = 10) -> dict:
    """`hey` at `rate` requests/s in all for `seconds`, spread over `urls` (one hey process per URL, each
    at rate/len(urls) with workers/len(urls) workers or at least 1); latencies from every request (hey's
    CSV output), so the percentiles are over all of them. hey's workers tick in step: every 1/q s all of a
    process's workers send at once, so a request can wait behind the others of its burst. Fewer workers,
    smaller bursts (at 1,000/s on the cached read of one user: p99 13.6 ms with 10 workers, 15 ms with 20,
    82 ms with 50, one run each); each worker waits for its answer, so 1/q must exceed the latency."""
    per = max(1, workers // len(urls))
    q = rate / (len(urls) * per)
    procs = [subprocess.Popen(["hey", "-z", f"{seconds}s", "-c", str(per), "-q", f"{q:.3f}", "-t", "5", "-o", "csv", u],
                              stdout=subprocess.PIPE, text=True) for u in urls]
    lat, codes = [], {}
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 60)
        for line in out.splitlines()[1:]:
            f = line.split(",")
            if len(f) >= 7:
                lat.append(float(f[0]) * 1000)
                codes[int(f[6])] = codes.get(int(f[6]), 0) + 1
    import numpy as np
    a = np.array(lat) if lat else np.zeros(1)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "rps": len(lat) / seconds, "codes": codes, "urls": len(urls)}


def serve(s, port: int, workers: int = 1, cpus: set[int] | None = None, **env) -> subprocess.Popen:
    e = {**os.environ, **s.to_env(), **env, "PYTHONUNBUFFERED": "1"}
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    p = subprocess.Popen([sys.executable, "-m", "stream.cli", "serve", "--port", str(port), "--workers", str(workers)],
                         env=e, cwd=ROOT, stderr=subprocess.DEVNULL, preexec_fn=pin)
    import httpx
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return p
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError("the API did not start")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=1000, help="requests/s for the reads (default 1000)")
    ap.add_argument("--api-workers", type=int, default=1, help="recstream serve --workers (default 1)")
    ap.add_argument("--users", type=int, default=10, help="distinct users asked for, one hey process each (default 10)")
    ap.add_argument("--fresh-rates", default="100,250,1000", help="requests/s for the fresh ask (default 100,250,1000)")
    ap.add_argument("--pin", action="store_true",
                    help="the API on CPU 0 alone; this process, the broker, Redis, the worker and hey on the others "
                         "(what a load generator on another machine would leave the API)")
    args = ap.parse_args(argv)
    api_cpus = None
    if args.pin:
        cpus = os.sched_getaffinity(0)
        api_cpus = {min(cpus)}
        os.sched_setaffinity(0, cpus - api_cpus)          # inherited by the stack, the worker and hey
    if shutil.which("hey") is None:
        print("bench.api needs Debian's `hey` load generator: apt-get install hey", file=sys.stderr)
        return 2
    from stream.config.settings import Settings
    from stream.core.storage.serving import latest_key
    from stream.core.storage.store import connect
    from stream.data.synth import SynthConfig, SynthShop
    from stream.drivers.kafka import create_topics
    from stream.ops import stack
    from stream.ops.harness import WorkerProcess, run_settings
    from stream.ops.produce import produce_events, produce_items
    state = Path(".state/bench-api")
    cfg = stack.StackConfig(state, broker_port=stack.free_port(), redis_port=stack.free_port())
    list(stack.up(cfg, tied=True))
    rows, procs = [], []
    try:
        s = run_settings(Settings(brokers=cfg.brokers, redis_url=cfg.redis_url), "benchapi",
                         session_timeout_ms=2000, metrics_port=0)
        s = replace(s, encoder_dir="", model_dir=str(state / "models"))
        create_topics(s.brokers, [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic], 4)
        shop = SynthShop(SynthConfig(n_users=500, n_items=1000, n_events=5000, seed=1))
        events = list(shop.events())
        produce_items(shop.items, s.items_topic, s.brokers)
        worker = WorkerProcess(s, log=state / "worker.log")
        procs.append(worker.proc)
        produce_events(enumerate(events, 1), s.events_topic, s.brokers)
        by_user: dict[str, int] = {}
        for e in events:
            by_user[e["user_id"]] = by_user.get(e["user_id"], 0) + 1
        users = sorted(by_user, key=lambda u: -by_user[u])[: args.users]   # the busiest: the longest histories
        item = events[-1]["item_id"]
        r = connect(s.redis_url)
        deadline = time.time() + 120
        while not all(r.exists(latest_key(s.key_prefix, u)) for u in users) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        worker.stop()
        cached_port, fresh_port = stack.free_port(), stack.free_port()
        procs.append(serve(s, cached_port, args.api_workers, api_cpus, RECSTREAM_API_FRESH_AFTER_S=str(10 ** 9)))
        procs.append(serve(s, fresh_port, args.api_workers, api_cpus, RECSTREAM_API_FRESH_AFTER_S="0"))
        def recs(port):
            return [f"http://127.0.0.1:{port}/v1/users/{u}/recommendations" for u in users]
        # (name, urls, rate): a closed-loop hey worker sends at most 1/latency per second, so each row gets
        # one worker per 25 requests/s (40 ms per request), at least 10
        runs = [("cached read", recs(cached_port), args.rate),
                ("similar items", [f"http://127.0.0.1:{cached_port}/v1/items/{item}/similar"], args.rate)]
        runs += [("fresh ask", recs(fresh_port), int(x)) for x in args.fresh_rates.split(",")]
        print(f"{'endpoint':16s} {'target/s':>9s} {'achieved/s':>11s} {'p50 ms':>8s} {'p99 ms':>8s}  answers "
              f"({len(users)} users)")
        for name, url, rate in runs:
            workers = max(10, rate // 25)
            hey(url, min(rate, 200), 3, workers)                # warm-up
            got = hey(url, rate, args.seconds, workers)
            rows.append({"name": name, "target_rps": rate, **got, "seconds": args.seconds, "url": url[0],
                         "hey_workers": workers})
            print(f"{name:16s} {rate:>9,d} {got['rps']:>11,.0f} {got['p50_ms']:>8.2f} {got['p99_ms']:>8.2f}  {got['codes']}",
                  flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(20)
        list(stack.down(cfg))
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "api.json" if args.api_workers == 1 else f"api-{args.api_workers}-workers.json"
    if args.pin:
        name = name.replace(".json", "-pinned.json")
    (RESULTS / name).write_text(json.dumps({"rows": rows, "machine": f"{os.cpu_count()} cores",
                                                  "load_generator": "hey (Debian)",
                                            "api_workers": args.api_workers, "pinned": args.pin}, indent=1))
    print(f"wrote {RESULTS / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
