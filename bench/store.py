"""The state stage alone: what applying events costs the worker and Redis, per event.

    python -m bench.store [--events 50000] [--batch 500] [--cluster 3] [--log PATH:FORMAT] [--out FILE]

Synthetic shop events (the project's generator; or a real log's, `--log`) are applied batch by batch through the pipeline's state
stage (`Pipeline.apply`: the per-user profile scripts and the shared statistics) on a throwaway
redis-server (or, with --cluster N, a throwaway N-master Redis Cluster). Per event it reports the worker's
CPU (this process, from /proc via `time.process_time`), Redis' CPU (INFO CPU of every master: user + sys),
and the commands Redis ran (INFO COMMANDSTATS, calls inside scripts included). No broker: the Kafka side
is measured by `bench.run --only worker`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import redis

from schemas import validate_event
from stream.core.stages import Ingested
from stream.core.validate import InMessage
from stream.data.synth import SynthConfig, SynthShop
from stream.ops import stack

ROOT = Path(__file__).resolve().parents[1]


def _masters(client) -> list:
    if isinstance(client, redis.RedisCluster):
        return [client.get_redis_connection(n) for n in client.get_primaries()]
    return [client]


def redis_cpu_calls(client) -> tuple[float, int, dict[str, float]]:
    """Redis' CPU-seconds (user + sys), commands run and microseconds per command so far (INFO CPU and
    COMMANDSTATS, summed over every master; a script's own time is under evalsha, and the commands it ran
    inside it count also on their own)."""
    cpu, calls, usec = 0.0, 0, {}
    for node in _masters(client):
        info = node.info("cpu")
        cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        for k, v in node.info("commandstats").items():
            name = k.removeprefix("cmdstat_")
            if name != "info":
                calls += v["calls"]
                usec[name] = usec.get(name, 0.0) + float(v["usec"])
    return cpu, calls, usec


def measure(url: str, events: list, batch: int, label: str) -> dict:
    from stream.core.pipeline import Pipeline
    from stream.core.storage.store import connect
    client = connect(url)
    p = Pipeline(client, "rs:bench:")
    msgs = [(ev, InMessage(b"", None, "bench", 0, n)) for n, ev in enumerate(events)]
    cpu0, calls0, usec0 = redis_cpu_calls(client)
    w0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(msgs), batch):
        part = msgs[i:i + batch]
        p.apply(Ingested([e for e, _ in part], [m for _, m in part]))
    wall, wcpu = time.perf_counter() - t0, time.process_time() - w0
    cpu1, calls1, usec1 = redis_cpu_calls(client)
    n = len(events)
    by_cmd = {k: (v - usec0.get(k, 0.0)) / n for k, v in usec1.items()}
    return {"store": label, "events": n, "batch": batch, "events_per_s": n / wall,
            "worker_cpu_us_per_event": 1e6 * wcpu / n, "redis_cpu_us_per_event": 1e6 * (cpu1 - cpu0) / n,
            "redis_calls_per_event": (calls1 - calls0) / n,
            "redis_command_us_per_event": dict(sorted(((k, round(v, 2)) for k, v in by_cmd.items() if v > 0),
                                                      key=lambda kv: -kv[1]))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--cluster", type=int, default=0, help="also measure on an N-master Redis Cluster (0: not)")
    ap.add_argument("--log", help="a real log instead of the synthetic shop, PATH:FORMAT (e.g. "
                                  "../shared/data/rees46-ecommerce-2019oct-head/2019-Oct.head.csv:rees46)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "store.json"))
    args = ap.parse_args(argv)
    if args.log:
        from stream.evaluation.backtest import load_events
        path, fmt = args.log.rsplit(":", 1)
        events = load_events(path, fmt)[0][:args.events]
    else:
        shop = SynthShop(SynthConfig(n_users=5000, n_items=20_000, n_events=args.events, seed=11))
        events = [validate_event(e) for e in shop.events()]
    rows = []
    with stack.private_redis() as url:
        rows.append(measure(url, events, args.batch, "redis"))
    if args.cluster:
        from stream.ops.cluster import private_cluster
        with private_cluster(args.cluster) as url:
            rows.append(measure(url, events, args.batch, f"cluster-{args.cluster}"))
    print(f"{'store':12s} {'events/s':>10s} {'worker us/ev':>13s} {'redis us/ev':>12s} {'redis calls/ev':>15s}")
    for r in rows:
        print(f"{r['store']:12s} {r['events_per_s']:10,.0f} {r['worker_cpu_us_per_event']:13.1f} "
              f"{r['redis_cpu_us_per_event']:12.1f} {r['redis_calls_per_event']:15.2f}")
        print("   Redis time per event by command (us): " + ", ".join(
            f"{k} {v:.1f}" for k, v in list(r["redis_command_us_per_event"].items())[:8]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
