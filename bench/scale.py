"""Scale-out: 1 against 2 worker processes over one 8-partition topic, and the CPU each event costs.

    python -m bench.scale [--events 40000] [--cluster 3] [--out bench/results/scale.json]

A throwaway broker and redis-server (or, with --cluster N, an N-master Redis Cluster) per run. For each
worker count, the workers start on a fresh consumer group and key prefix and join; then the events are
produced (the synthetic shop, catalog first) and the clock runs until the group's committed offsets cover
every event. Reported: events/s, and the CPU-seconds per 1,000 events of the worker processes (from
/proc/<pid>/stat) and of Redis (every master's INFO CPU): on this 2-core box the broker, Redis and the
workers share the cores, so the CPU figures, not the wall clock, predict scale-out on a bigger box.
Configuration, stated and controlled: the fallback scorer with the default gbdt ranker, no text encoder,
no model (`RECSTREAM_ENCODER_DIR` and `RECSTREAM_MODEL_DIR` empty).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from bench.store import redis_cpu_calls
from stream.config.settings import Settings
from stream.core.storage.store import connect
from stream.data.synth import SynthConfig, SynthShop
from stream.drivers.kafka import consumer_conf
from stream.ops import stack
from stream.ops.harness import WorkerProcess, run_settings
from stream.ops.produce import produce_events, produce_items

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK          # utime + stime


def _committed(s: Settings, parts: int) -> int:
    c = Consumer(consumer_conf(s.brokers, s.group_id))
    try:
        got = c.committed([TopicPartition(s.events_topic, p) for p in range(parts)], timeout=10)
        return sum(max(tp.offset, 0) for tp in got)
    finally:
        c.close()


def run(base: Settings, shop: SynthShop, events: list, n_workers: int, logdir: Path) -> dict:
    s = run_settings(base, f"scale{n_workers}")
    produce_items(shop.items, s.items_topic, s.brokers)
    client = connect(s.redis_url)
    workers = [WorkerProcess(s, log=logdir / f"w{n_workers}-{i}.log") for i in range(n_workers)]
    try:
        for w in workers:
            w.wait_ready(shop.items[-1]["item_id"], timeout=90)
        time.sleep(2)                                    # every member assigned before the clock starts
        cpu0, r0, t0 = [_cpu_s(w.proc.pid) for w in workers], redis_cpu_calls(client)[0], time.perf_counter()
        produce_events(enumerate(events, 1), s.events_topic, s.brokers)
        while _committed(s, base.partitions) < len(events):
            if not all(w.alive for w in workers):
                raise RuntimeError(f"a worker died (logs in {logdir})")
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        wcpu = sum(_cpu_s(w.proc.pid) - c for w, c in zip(workers, cpu0))
        rcpu = redis_cpu_calls(client)[0] - r0
    finally:
        for w in workers:
            w.stop()
    k = len(events) / 1000
    return {"workers": n_workers, "events": len(events), "events_per_s": len(events) / wall,
            "worker_cpu_s_per_1k": wcpu / k, "redis_cpu_s_per_1k": rcpu / k}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--cluster", type=int, default=0, help="Redis: an N-master cluster instead of one server")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "scale.json"))
    args = ap.parse_args(argv)
    shop = SynthShop(SynthConfig(n_users=8000, n_items=5000, n_events=args.events, seed=3))
    events = list(shop.events())
    rows = []
    with tempfile.TemporaryDirectory(prefix="recstream-scale-") as tmp:
        cfg = stack.StackConfig(Path(tmp), broker_port=stack.free_port(), redis_port=stack.free_port())
        stack.up(cfg, tied=True, **({"redis_server": False} if args.cluster else {}))
        try:
            url = cfg.redis_url
            if args.cluster:
                from stream.ops.cluster import private_cluster
                pc = private_cluster(args.cluster)
                url = pc.__enter__()
            base = Settings(brokers=cfg.brokers, redis_url=url, partitions=8, encoder_dir="", model_dir="",
                            metrics_port=0, session_timeout_ms=3000)
            for n in (1, 2):
                rows.append({"store": f"cluster-{args.cluster}" if args.cluster else "redis",
                             **run(replace(base), shop, events, n, Path(tmp))})
                r = rows[-1]
                print(f"{n} worker(s): {r['events_per_s']:8,.0f} events/s   worker CPU {r['worker_cpu_s_per_1k']:.3f} s "
                      f"and Redis CPU {r['redis_cpu_s_per_1k']:.3f} s per 1,000 events", flush=True)
            if args.cluster:
                pc.__exit__(None, None, None)
        finally:
            stack.down(cfg)
    rows.append({"ratio_2_vs_1": rows[1]["events_per_s"] / rows[0]["events_per_s"]})
    print(f"2 workers / 1 worker: {rows[-1]['ratio_2_vs_1']:.2f}x (2 cores shared with the broker and Redis)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
