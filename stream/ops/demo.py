"""`make run`: the whole recommender on the embedded local stack, with a live view and a summary.

stack up -> topics -> synthetic catalog and events -> worker (a child process, as in production)
-> events replayed at a steady rate, plus a few malformed messages -> recommendations consumed
back -> summary (what flowed, per type, rejects, latency) and a few users' recommendations
-> worker stopped with SIGTERM -> stack down (unless it was already running, or --keep).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace

import numpy as np
import orjson

from stream.config.settings import Settings
from stream.core.storage.store import Keys
from stream.data.synth import SynthConfig, SynthShop
from stream.drivers.kafka import create_topics
from stream.ops import stack
from stream.ops.consume import records
from stream.ops.produce import produce_events, produce_items

BAD_MESSAGES = [
    b'{"event_id": "bad-1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": 1730000000}',   # seconds
    b'{"event_id": "bad-2", "user_id": "u1", "item_id": "i1", "type": "teleport", "ts": 1730000000000}',
    b'{"event_id": "bad-3", "user_id": "u1", "type": "view", "ts": 1730000000000}',                  # no item
    b'not json at all',
    b'{"event_id": "bad-5", "user_id": "u1", "item_id": "i1", "type": "purchase", "ts": 1730000000000, "price": -3}',
]


def _env(s: Settings) -> dict:
    return {**os.environ, **replace(s, metrics_port=0, log_every_s=5.0).to_env()}


def _ensure_encoder(s: Settings) -> None:
    """The content path needs the text encoder exported once (torch, ~20 s); the worker only reads it."""
    from pathlib import Path
    if (Path(s.encoder_dir) / "model.onnx").exists():
        print(f"== text encoder: {s.encoder_dir} (content similarity, cold start, new items)")
        return
    try:
        from exporters.encoder import export_encoder
        print(f"== text encoder: exporting all-MiniLM-L6-v2 to ONNX in {s.encoder_dir} (once, ~20 s)", flush=True)
        m = export_encoder(s.encoder_dir)
        print(f"  parity max abs diff {m['parity']['max_abs_diff']:.1e}")
    except ImportError as exc:
        print(f"== text encoder: not exported ({exc}); the worker runs without the content source")


def run_demo(base: Settings, args) -> int:
    cfg = stack.StackConfig.from_settings(base)
    already = stack.main_status_code(cfg) == 0
    print(f"== stack: {'already running' if already else 'starting'} (Tansu broker, memory-only; redis-server)")
    for line in stack.up(cfg, tied=not args.keep):
        print("  " + line)
    run = uuid.uuid4().hex[:6]
    s = replace(base, events_topic=f"demo.{run}.events", items_topic=f"demo.{run}.items",
                recs_topic=f"demo.{run}.recommendations", dlq_topic=f"demo.{run}.dlq",
                key_prefix=f"rs:demo:{run}:", group_id=f"demo-{run}")
    worker = None
    try:
        create_topics(s.brokers, [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic], s.partitions)
        n = args.events
        shop = SynthShop(SynthConfig(n_users=max(100, n // 10), n_items=max(200, n // 20), n_events=n, seed=7))
        events = list(shop.events())
        titles = {it["item_id"]: it["title"] for it in shop.items}
        print(f"== synthetic shop: {len(shop.items)} items, {len({e['user_id'] for e in events})} users, "
              f"{len(events)} events (topics demo.{run}.*)")
        rep = produce_items(shop.items, s.items_topic, s.brokers)
        print(f"  catalog: {rep.summary('items')}")
        _ensure_encoder(s)

        worker = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=_env(s),
                                  stdout=sys.stdout, stderr=sys.stderr,
                                  preexec_fn=None if args.keep else stack.die_with_parent)
        # ready when the worker has joined the group and applied the catalog (a group join takes
        # half the session timeout on the local broker)
        from stream.core.storage.store import connect
        rc = connect(s.redis_url)
        probe = Keys(s.key_prefix).item(shop.items[-1]["item_id"])
        deadline = time.time() + 60
        while not rc.exists(probe) and time.time() < deadline and worker.poll() is None:
            time.sleep(0.1)
        if not rc.exists(probe):
            print("worker did not start: see its log above", file=sys.stderr)
            return 1
        sent_at: dict[str, float] = {}
        got: dict[str, dict] = {}
        lat: list[float] = []
        dlq: list = []
        stop = threading.Event()
        ready = [threading.Event(), threading.Event()]

        def collect_recs():
            for rec in records(s.recs_topic, s.brokers, stop=stop.is_set, ready=ready[0], session_timeout_ms=2000):
                obj = orjson.loads(rec.value)
                got[obj["user_id"]] = obj
                t = sent_at.get(obj["trigger_event_id"])
                if t:
                    lat.append(time.time() - t)

        def collect_dlq():
            for rec in records(s.dlq_topic, s.brokers, stop=stop.is_set, ready=ready[1], session_timeout_ms=2000):
                dlq.append(rec)

        threads = [threading.Thread(target=collect_recs, daemon=True), threading.Thread(target=collect_dlq, daemon=True)]
        for t in threads:
            t.start()
        for ev in ready:
            ev.wait(30)   # the collectors have joined their groups before anything is sent

        def tracked():
            for i, ev in enumerate(events, 1):
                sent_at[ev["event_id"]] = time.time()
                yield i, ev

        print(f"== replaying {n} events at {args.rate:,.0f}/s into the worker")
        prog = threading.Thread(target=_live, args=(lambda: len(sent_at), n, got, lat, stop), daemon=True)
        prog.start()
        report = produce_events(tracked(), s.events_topic, s.brokers, rate=args.rate)
        produce_events(enumerate(BAD_MESSAGES, 1), s.events_topic, s.brokers, validate=False)
        users = {e["user_id"] for e in events}
        deadline = time.time() + 60
        while time.time() < deadline and (len(got.keys() & users) < len(users) or len(dlq) < len(BAD_MESSAGES)):
            time.sleep(0.2)
        stop.set()
        time.sleep(0.3)
        print()
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        lat_ms = np.array(lat) * 1000 if lat else np.zeros(1)
        print("== summary")
        print(f"  produced: {report.summary()}")
        print(f"  malformed messages sent raw: {len(BAD_MESSAGES)}; dead-lettered by the worker: {len(dlq)}")
        for r in dlq[:5]:
            print(f"    DLQ: {r.headers.get('recstream.reason', b'').decode()}  <- {r.value[:70]!r}")
        print(f"  recommendations: users covered {len(got.keys() & users)}/{len(users)}; "
              f"event->recommendation latency p50 {np.percentile(lat_ms, 50):.1f} ms, "
              f"p99 {np.percentile(lat_ms, 99):.1f} ms (at {args.rate:,.0f} events/s)")
        by_type = Counter(e["type"] for e in events)
        applied = Counter()
        pipe = rc.pipeline(transaction=False)
        for uid in users:
            pipe.hgetall(Keys(s.key_prefix).user(uid))
        for h in pipe.execute():
            for k, v in h.items():
                if k.startswith(b"n:") and k != b"n:bot_flagged":
                    applied[k[2:].decode()] += int(v)
        print(f"  produced by type:             {dict(sorted(by_type.items()))}")
        print(f"  consumed and applied by type: {dict(sorted(applied.items()))}")
        print("== a few users' latest recommendations")
        busiest = Counter(e["user_id"] for e in events).most_common(40)[::10]
        for uid, cnt in busiest:
            rec = got.get(uid)
            if not rec:
                continue
            hist = [titles.get(e.get("item_id"), e.get("query")) for e in events if e["user_id"] == uid][-3:]
            print(f"  {uid} ({cnt} events; last: {' / '.join(map(str, hist))})")
            for it in rec["items"][:5]:
                print(f"      {it['score']:.3f}  {titles.get(it['item_id'], it['item_id'])}  [{', '.join(it['sources'])}]")
        ok = len(got.keys() & users) == len(users) and len(dlq) == len(BAD_MESSAGES)
        print("== done" if ok else "== done, but not every user got a recommendation in time")
        return 0 if ok else 1
    finally:
        if worker and worker.poll() is None:     # interrupted: let it finish its batch and checkpoint
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        if not (already or args.keep):
            for line in stack.down(cfg):
                print("  " + line)
        elif args.keep:
            print(f"stack left running; topics demo.{run}.*; `recstream stack down` stops it")


def _live(sent, total, got, lat, stop):
    t0 = time.time()
    while not stop.is_set():
        el = time.time() - t0
        l = sorted(lat[-2000:]) or [0]
        print(f"\r  sent {sent():>7}/{total}  ({sent() / max(el, 1e-9):,.0f}/s)  users with recommendations "
              f"{len(got):>6}  latency p50 {l[len(l) // 2] * 1000:6.1f} ms  ", end="", file=sys.stderr, flush=True)
        time.sleep(1.0)

