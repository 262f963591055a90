"""recstream benchmarks: prints a table and writes bench/results/<name>.json (a list of rows:
name, value, unit, settings). Figures are measured side by side in one run, so report ratios;
this 2-core box is shared and noisy.

    python -m bench.run [--only worker] [--events 50000]   # everything (about 4 minutes), one group, smaller

Groups:
  worker   - plain confluent consume->produce passthrough (the ceiling) and the full worker (confluent
             driver; the default ranker, none, the lr cascade) over the same pre-loaded topic, catch-up
  full     - SeqRec + text encoder + ranker (what runs after `recstream train`) vs fallback + ranker (bench/full.py)
  faust    - the faust-streaming driver over the same kind of topic
  latency  - event -> recommendation latency with the worker in its own process, at fixed input rates, beside a
             plain relay's (the broker's floor); `--repeat N`: N runs of each in turn, rows the medians
  scorer   - the transformer: onnxruntime fp32/int8 vs torch eager, batch 1/32/256, 100/500 candidates
  decode   - bytes to a checked Event: orjson + our checks vs the msgspec fast path (bench/decode.py)
  encoder  - the text encoder (all-MiniLM-L6-v2): onnxruntime+tokenizers vs torch eager at batch 1 and 64;
             exact content-index search over 100k items

The catch-up groups (worker, full) measure a steady state: each row's pipeline takes the first half of the events
untimed, its learned ranker's trees are fitted there, and the timed run is the second half (`timed_events`). The
latency group likewise: its worker process restores the ranker fitted on the first half, then the events after it
are sent at the rate.
Rows other than `full` run with no text encoder and no model, whatever `artifacts/` holds. Each group starts
on a fresh broker (the local broker slows down as it accumulates data). BENCH_WORKER_LOG=FILE and
BENCH_WORKER_LOG_EVERY_S=N keep the latency runs' worker log (rate and worker-side latency every N s).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # as the CLI does (stream/cli/__init__.py), before numpy loads

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess
import sys
import time
from dataclasses import replace

import orjson

from stream.config.settings import Settings
from stream.data.synth import SynthConfig, SynthShop
from stream.drivers.kafka import delete_topics
from stream.ops import stack
from stream.ops.harness import run_settings
from stream.ops.produce import produce_events, produce_items

from bench.catchup import passthrough, run_worker_catchup  # noqa: E402
from bench.latency import latency_group, worker_env  # noqa: E402
from bench.rows import RESULTS, ROOT, Rows  # noqa: E402


def fresh_settings(base: Settings, tag: str) -> Settings:
    return run_settings(base, tag, session_timeout_ms=2000, metrics_port=0, log_every_s=3600)


def cleanup(s: Settings, client) -> None:
    delete_topics(s.brokers, [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic])
    for k in client.scan_iter(match=s.key_prefix + "*", count=10_000):
        client.unlink(k)


def run_faust_catchup(s: Settings, n: int) -> float:
    code = (
        "import sys, time, os, signal, orjson\n"
        "from stream.config.settings import Settings\nfrom stream.config.compose import build_pipeline\n"
        "from stream.drivers.faust_driver import run_faust_worker\n"
        "s = Settings.from_env(); n = int(sys.argv[1]); st = {'n': 0, 't0': None}\n"
        "def on_batch(r):\n"
        "    st['t0'] = st['t0'] or time.perf_counter() - sum(r.timings.values()); st['n'] += r.events\n"
        "    if st['n'] >= n:\n"
        "        print('RATE', n / (time.perf_counter() - st['t0']), flush=True); os.kill(os.getpid(), signal.SIGTERM)\n"
        "run_faust_worker(s, build_pipeline(s), on_batch=on_batch)\n")
    out = subprocess.run([sys.executable, "-c", code, str(n)], env=worker_env(s), capture_output=True, text=True,
                         timeout=900, cwd=ROOT)
    for line in out.stdout.splitlines():
        if "RATE " in line:   # faust may prefix terminal escapes
            return float(line.split("RATE ", 1)[1].split()[0])
    raise RuntimeError(f"faust run failed (rc {out.returncode}): {out.stdout[-1500:]} {out.stderr[-1500:]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--faust-events", type=int, default=50_000)
    ap.add_argument("--only", choices=["worker", "full", "faust", "latency", "scorer", "encoder", "decode"], action="append")
    ap.add_argument("--name", default=time.strftime("bench-%Y%m%d-%H%M%S"))
    ap.add_argument("--rates", type=int, nargs="+", default=[1000, 4000], help="input rates for the latency group")
    ap.add_argument("--seconds", type=int, default=15, help="timed seconds of each latency row (a longer run lets "
                    "the ranker's window fill and its refits come, as in a worker that has run a while)")
    ap.add_argument("--repeat", type=int, default=1, help="latency runs per rate, worker and relay in turn; the rows "
                    "are the medians and each run's added latency is kept (one 15-s run moves by about 4 ms at p50)")
    ap.add_argument("--partitions", type=int, default=4, help="partitions per topic")
    ap.add_argument("--ranker", help="the worker's online ranker for every row (default: the shipped default)")
    ap.add_argument("--no-state-path", action="store_true",
                    help="score with the transformer graph's single run, as before its state path (a comparison)")
    args = ap.parse_args(argv)
    if args.no_state_path:
        from stream.core.scoring.transformer import OnnxScorer
        OnnxScorer.state_path = False
    groups = set(args.only or ["worker", "full", "faust", "latency", "scorer", "encoder", "decode"])

    cfg = stack.StackConfig(ROOT / ".state" / "bench", broker_port=stack.free_port(), redis_port=stack.free_port())
    from stream.core.storage.store import connect

    def fresh_stack():
        # the local broker keeps every message ever produced in memory and slows down as it grows
        # (../shared/notes/broker.md): each group starts on a fresh broker and an empty Redis
        stack.down(cfg)
        stack.up(cfg)
        return connect(cfg.redis_url)
    base = Settings(brokers=cfg.brokers, redis_url=cfg.redis_url, partitions=args.partitions, encoder_dir="",
                    model_dir="")   # what `artifacts/` holds must not change a row (the `full` group adds both)
    if args.ranker:
        base = replace(base, ranker=args.ranker)
    client = fresh_stack()
    rows = Rows({"host": platform.node(), "cpus": os.cpu_count(), "broker": "tansu (local, memory)",
                 "events": args.events, "users": args.users, "items": args.items, "scorer": "fallback-v1",
                 "batch_size": base.batch_size})
    try:
        if groups & {"worker", "full", "faust", "latency"}:
            print(f"== synthetic shop: {args.events} events, {args.users} users, {args.items} items", flush=True)
            shop = SynthShop(SynthConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=1))
            events = list(shop.events())
        if "worker" in groups:
            print("== passthrough ceiling vs the full worker (same topic, catch-up mode)", flush=True)
            s = fresh_settings(base, "w")
            produce_items(shop.items, s.items_topic, s.brokers)
            # steady state: each row's pipeline takes the first half untimed (its ranker fitted there), the
            # timed catch-up the second half (bench.catchup.warm_up)
            half = len(events) // 2
            warm, timed = events[:half], events[half:]
            produce_events(enumerate(timed, half + 1), s.events_topic, s.brokers)
            pt = passthrough(s, len(timed))
            rows.add("passthrough_consume_produce", pt, "msg/s")
            rate, timings, warmed = run_worker_catchup(s, len(timed), warm=warm, rows=rows, label="worker")
            rows.add("worker_confluent_end_to_end", rate, "events/s", timed_events=len(timed), **(warmed or {}))
            rows.add("worker_vs_passthrough_ratio", rate / pt, "x")
            total = sum(timings.values())
            for k, v in sorted(timings.items(), key=lambda kv: -kv[1]):
                rows.add(f"worker_stage_share_{k}", 100 * v / total, "%")
            # the same topic again, each a new group on its own key space (warmed the same way): no ranker; the lr
            # cascade (old default)
            for label, spec in (("off", "off"), ("lr_cascade", "lr")):
                other = replace(s, ranker=spec, group_id=f"{s.group_id}-{spec}", key_prefix=f"{s.key_prefix}{spec}:")
                rate_other, _, warmed = run_worker_catchup(other, len(timed), warm, rows, f"worker_ranker_{label}")
                rows.add(f"worker_ranker_{label}_end_to_end", rate_other, "events/s", timed_events=len(timed),
                         **(warmed or {}))
                rows.add(f"worker_ranker_{s.ranker}_vs_{label}_ratio", rate / rate_other, "x")
            cleanup(s, client)
        if "full" in groups:
            from bench.full import run_full
            client = fresh_stack()
            run_full(rows, base, shop, events, client)
        if "faust" in groups:
            client = fresh_stack()
            print(f"== faust-streaming driver ({args.faust_events} events)", flush=True)
            s = fresh_settings(base, "f")
            produce_items(shop.items, s.items_topic, s.brokers)
            produce_events(enumerate(events[: args.faust_events], 1), s.events_topic, s.brokers)
            fr = run_faust_catchup(s, args.faust_events)
            client = fresh_stack()
            rows.add("worker_faust_end_to_end", fr, "events/s", events=args.faust_events)
            if "worker" in groups:
                rows.add("confluent_vs_faust_ratio", rate / fr, "x")
            cleanup(s, client)
        if "latency" in groups:
            for r in args.rates:
                latency_group(rows, r, args.seconds, args.repeat, shop, events,
                              lambda tag: (fresh_stack(), fresh_settings(base, tag)), cleanup)
        if "scorer" in groups:
            print("== transformer scorer: onnxruntime vs torch eager (d=64, 2 layers, T=50, 5000 items)", flush=True)
            from bench import scorer
            scorer.run(rows)
        if "decode" in groups:
            print("== decode and validate: orjson + our checks vs msgspec's typed decoder first", flush=True)
            from bench import decode
            decode.run(rows)
        if "encoder" in groups:
            print("== text encoder: onnxruntime + tokenizers vs torch eager (all-MiniLM-L6-v2)", flush=True)
            from bench import encoder
            encoder.run(rows)
    finally:
        stack.down(cfg)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.name}.json"
    out.write_bytes(orjson.dumps(rows.rows, option=orjson.OPT_INDENT_2))
    print(f"\n{'name':48s} {'value':>12s} unit")
    for r in rows.rows:
        print(f"{r['name']:48s} {r['value']:>12,.4g} {r['unit']}")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
