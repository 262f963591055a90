"""Redis' CPU per event of the whole pipeline (state, candidates, scoring, ranking), in process, no broker;
this checkout and, side by side in the same run, other checkouts of the project (`--repo`).

    python -m bench.pipeline_cpu [--events 20000] [--batch N] [--rounds 2] [--repo DIR ...] [--out FILE]

The synthetic shop (10,000 users, 5,000 items, seed 3) is put through `Pipeline.process_events` in batches
of the default size on a throwaway redis-server: the first half untimed (the state fills and the ranker
learns; then, until the ranker orders lists, more events in batches of 200), then as many events again
measured, in batches of `--batch` (default: the worker's; 16 is what a worker takes at 1,000 events/s,
where a batch's fixed costs weigh most): Redis' CPU (INFO CPU: user + sys), the commands it ran and its time
per command (INFO COMMANDSTATS, calls inside scripts included), the worker's CPU (this process). The default
scorer (fallback) and ranker; no text encoder, no model. Each checkout runs in a process of its own with its
own code on the path, rounds interleaved (A, B, A, B: this box is shared and noisy), and the report gives
each round's figures and the ratio of the medians.

The measuring part below (`_measure`) uses only what every checkout since the first wave has
(`build_pipeline`, `Settings`, `SynthShop`, `validate_event`, `stack.private_redis`), so an older commit (a
`git worktree`) can be measured by this same code; the redis-server it starts is that checkout's (its server
settings included).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _redis_cpu(client) -> tuple[float, int, dict[str, float]]:
    info = client.info("cpu")
    calls, usec = 0, {}
    for k, v in client.info("commandstats").items():
        if (name := k.removeprefix("cmdstat_")) != "info":
            calls += v["calls"]
            usec[name] = float(v["usec"])
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"]), calls, usec


def _measure(n: int) -> dict:
    """Runs inside the checkout measured (its code first on sys.path)."""
    from dataclasses import replace

    import redis
    from schemas import Event, validate_event, validate_item
    from stream.config.compose import build_pipeline
    from stream.config.settings import Settings
    from stream.data.synth import SynthConfig, SynthShop
    from stream.ops import stack
    shop = SynthShop(SynthConfig(n_users=10_000, n_items=5_000, n_events=3 * n, seed=3))
    evs = sorted((e for e in map(validate_event, shop.events()) if isinstance(e, Event)), key=lambda e: e.ts)
    with stack.private_redis() as url:
        s = replace(Settings.from_env(), redis_url=url, encoder_dir="", model_dir="", key_prefix="rs:cpu:")
        p = build_pipeline(s)
        p.catalog.upsert([validate_item(it) for it in shop.items])
        b = s.batch_size
        for i in range(0, n, b):
            p.process_events(evs[i:i + b])
        start, ranker = n, getattr(p, "ranker", None)
        while ranker is not None and not ranker.active and start < 2 * n:     # (its first fit: in the background)
            p.process_events(evs[start:start + 200])
            start += 200
            time.sleep(0.05)
        b = int(os.environ.get("BENCH_PIPELINE_BATCH") or b)
        client = redis.Redis.from_url(url)
        (c0, k0, u0), w0, t0 = _redis_cpu(client), time.process_time(), time.perf_counter()
        for i in range(start, start + n, b):
            p.process_events(evs[i:i + b])
        wall, w1 = time.perf_counter() - t0, time.process_time()
        c1, k1, u1 = _redis_cpu(client)
        mem = client.info("memory")["used_memory"]
    timed = len(evs[start:start + n])
    by_cmd = {k: round((v - u0.get(k, 0.0)) / timed, 2) for k, v in u1.items() if v > u0.get(k, 0.0)}
    return {"events": timed, "batch": b, "events_per_s": round(timed / wall),
            "ranker_active": bool(ranker is not None and ranker.active),
            "redis_cpu_us_per_event": round(1e6 * (c1 - c0) / timed, 2),
            "worker_cpu_us_per_event": round(1e6 * (w1 - w0) / timed, 2),
            "redis_calls_per_event": round((k1 - k0) / timed, 2), "redis_used_memory_mb": round(mem / 2**20, 1),
            "redis_command_us_per_event": dict(sorted(by_cmd.items(), key=lambda kv: -kv[1])[:12])}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:                  # in the checkout measured (bench.checkouts.run_in)
        sys.path.insert(0, os.getcwd())
        print(json.dumps(_measure(int(argv[1]))))
        return 0
    from bench.checkouts import add_arguments, interleaved
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="events timed (as many again go first, untimed)")
    ap.add_argument("--batch", type=int, default=0, help="events per timed batch (default: the worker's)")
    add_arguments(ap, "pipeline-cpu.json")
    args = ap.parse_args(argv)
    if args.batch:
        os.environ["BENCH_PIPELINE_BATCH"] = str(args.batch)       # (read in each checkout's process)

    def each(k: int, r, got: dict) -> None:
        print(f"round {k + 1} {r}: Redis {got['redis_cpu_us_per_event']:.1f} us/event, worker "
              f"{got['worker_cpu_us_per_event']:.1f} us/event, {got['redis_calls_per_event']:.2f} Redis calls "
              f"an event, {got['events_per_s']:,} events/s", flush=True)
    repos, runs = interleaved(__file__, args.repo, args.events, args.rounds, each)
    med = {r: statistics.median(x["redis_cpu_us_per_event"] for x in v) for r, v in runs.items()}
    wmed = {r: statistics.median(x["worker_cpu_us_per_event"] for x in v) for r, v in runs.items()}
    for r in repos[1:]:
        print(f"this checkout / {r} (medians): Redis CPU per event {med[str(ROOT)] / med[str(r)]:.2f}x, "
              f"worker CPU per event {wmed[str(ROOT)] / wmed[str(r)]:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "python -m bench.pipeline_cpu " + " ".join(argv),
                                          "median_redis_cpu_us_per_event": med,
                                          "median_worker_cpu_us_per_event": wmed, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
