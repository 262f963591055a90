"""`make run`: the whole recommender on the embedded local stack, with a live view and a summary.

stack up -> topics -> synthetic catalog and events -> worker (a child process, as in production) and the
archive sink -> the first 60 % of the events replayed at a steady rate, served by the fallback scorer ->
continuous training: a small SeqRec trained on what the archive holds, shadow-checked against the scorer in
service, promoted if it wins -> the rest replayed, the worker now serving the transformer (no restart), plus a
few malformed messages -> recommendations consumed back -> summary (what flowed, per type, rejects, latency,
recommendations per scorer version) and a few users' recommendations -> worker stopped with SIGTERM -> stack
down (unless it was already running, or --keep).

Beside it the HTTP API and the live dashboard run in this process (`recstream serve`; their URL is printed
first), and the users are split between the variants of `experiments/example.toml`; the summary ends with
a `curl` of one user's recommendations and the experiment's table.
"""
from __future__ import annotations

import contextlib
import io
import shutil
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from stream.config.settings import Settings
from stream.core.storage.store import connect, profile_fields
from stream.data.synth import SynthConfig, SynthShop
from stream.drivers.archiver import Archiver
from stream.ops import stack
from stream.ops.demo_search import show_search, start_trends
from stream.ops.harness import Listener, WorkerProcess, run_settings
from stream.ops.produce import produce_events, produce_items

BAD_MESSAGES = [
    b'{"event_id": "bad-1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": 1730000000}',   # seconds
    b'{"event_id": "bad-2", "user_id": "u1", "item_id": "i1", "type": "teleport", "ts": 1730000000000}',
    b'{"event_id": "bad-3", "user_id": "u1", "type": "view", "ts": 1730000000000}',                  # no item
    b'not json at all',
    b'{"event_id": "bad-5", "user_id": "u1", "item_id": "i1", "type": "purchase", "ts": 1730000000000, "price": -3}',
]


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


# the demo's retrain: a small transformer, early stopping (about 25 epochs, 10 s on a 2-core box; at most 50)
DEMO_MODEL = {"dim": 32, "layers": 1, "heads": 2, "max_len": 20, "epochs": 50, "patience": 3, "stride": 5}


def _retrain(s: Settings, retrain, archive, items, expected: int) -> None:
    """Wait for the archive to hold the events sent so far, then one retrain decision on it."""
    from stream.data.archive import archive_span, read_archive
    deadline = time.time() + 30
    while time.time() < deadline and (archive_span(archive) or (0, 0, 0))[2] < expected:   # rows, footers only
        time.sleep(0.5)
    events = read_archive(archive)
    print(f"\n== continuous training: a small SeqRec on the {len(events):,} archived events (the newest 20 % "
          f"kept out to shadow-check it against the scorer in service)", flush=True)
    t = time.time()
    try:
        with contextlib.redirect_stderr(io.StringIO()):      # the epochs' lines; the live line pauses meanwhile
            out = retrain(events, items, s.model_dir, s.redis_url, shadow_frac=0.2, train_cfg=DEMO_MODEL)
    except (ValueError, RuntimeError) as exc:
        print(f"  retrain failed: {exc}; the worker keeps its scorer")
        return
    print(f"  {out['candidate']}: {out['decision']} ({out['reason']}), {time.time() - t:.0f} s; "
          f"the worker swaps between two batches, no restart")


def run_demo(base: Settings, args, retrain=None) -> int:
    """`retrain`: stream.evaluation.retrain.retrain_once (the CLI passes it; None = no training step)."""
    cfg = stack.StackConfig.from_settings(base)
    already = stack.main_status_code(cfg) == 0
    print(f"== stack: {'already running' if already else 'starting'} (Tansu broker, memory-only; redis-server)")
    for line in stack.up(cfg, tied=not args.keep):
        print("  " + line)
    s = run_settings(base, "demo")
    own = Path(s.state_dir) / "demo" / s.group_id          # this run's registry and archive, removed after
    s = replace(s, model_dir=str(own / "models"), archive_dir=str(own / "archive"),
                experiments=s.experiments or (str(EXAMPLE_EXPERIMENT) if EXAMPLE_EXPERIMENT.exists() else ""))
    worker = archiver = api = trends = None
    try:
        n = args.events
        shop = SynthShop(SynthConfig(n_users=max(100, n // 10), n_items=max(200, n // 20), n_events=n, seed=7))
        events = list(shop.events())
        titles = {it["item_id"]: it["title"] for it in shop.items}
        print(f"== synthetic shop: {len(shop.items)} items, {len({e['user_id'] for e in events})} users, "
              f"{len(events)} events (topics {s.events_topic.rsplit('.', 1)[0]}.*)")
        rep = produce_items(shop.items, s.items_topic, s.brokers)
        print(f"  catalog: {rep.summary('items')}")
        _ensure_encoder(s)
        worker = WorkerProcess(s, tied=not args.keep, log_every_s=5.0)
        archiver = Archiver(s, roll_s=1.0)
        threading.Thread(target=archiver.run, name="archive", daemon=True).start()
        trends = start_trends(s)
        api = _serve(s, args)
        # ready when the worker has joined the group and applied the catalog (a group join takes
        # half the session timeout on the local broker)
        if not worker.wait_ready(shop.items[-1]["item_id"]):
            print("worker did not start: see its log above", file=sys.stderr)
            return 1
        dlq: list = []
        recs = Listener(s.recs_topic, s.brokers).start()     # both have joined before anything is sent
        dead = Listener(s.dlq_topic, s.brokers, on_record=dlq.append).start()
        got, stop = recs.latest, threading.Event()
        first = int(n * 0.6) if retrain is not None else n
        print(f"== replaying {n} events at {args.rate:,.0f}/s into the worker"
              + (f" ({first} now, the rest after a retrain)" if first < n else ""))
        prog = threading.Thread(target=_live, args=(lambda: len(recs.sent), n, recs, stop), daemon=True)
        prog.start()
        report = produce_events(recs.tracked(events[:first]), s.events_topic, s.brokers, rate=args.rate)
        if first < n:
            _retrain(s, retrain, s.archive_dir, shop.items, first)
            rest = produce_events(recs.tracked(events[first:]), s.events_topic, s.brokers, rate=args.rate)
            report.merge(rest)
        produce_events(enumerate(BAD_MESSAGES, 1), s.events_topic, s.brokers, validate=False)
        users = {e["user_id"] for e in events}
        deadline = time.time() + 60
        while time.time() < deadline and (len(got.keys() & users) < len(users) or len(dlq) < len(BAD_MESSAGES)):
            time.sleep(0.2)
        stop.set()
        recs.stop()
        dead.stop()
        print()
        worker.stop()
        archiver.stop_event.set()
        lat = recs.latencies_ms() / 1000
        lat_ms = lat * 1000 if len(lat) else np.zeros(1)
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
        for h in profile_fields(connect(s.redis_url), s.key_prefix, list(users)):
            for k, v in h.items():
                if k.startswith("n:") and k != "n:bot_flagged":
                    applied[k[2:]] += int(v)
        print(f"  produced by type:             {dict(sorted(by_type.items()))}")
        print(f"  recommendations by scorer:    {dict(recs.scorers.most_common())}")
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
        if api is not None:
            _show_api(api, busiest[0][0], s)
            show_search(api[1], busiest[0][0], events, shop.items, titles)
        ok = len(got.keys() & users) == len(users) and len(dlq) == len(BAD_MESSAGES)
        print("== done" if ok else "== done, but not every user got a recommendation in time")
        return 0 if ok else 1
    finally:
        if api is not None:
            api[0].should_exit = True
        if worker is not None:     # interrupted: let it finish its batch and checkpoint
            worker.stop(20)
        if archiver is not None:
            archiver.stop_event.set()
        if trends is not None:
            trends.stop_event.set()
        shutil.rmtree(own, ignore_errors=True)
        if not (already or args.keep):
            for line in stack.down(cfg):
                print("  " + line)
        elif args.keep:
            print(f"stack left running; topics {s.events_topic.rsplit('.', 1)[0]}.*; `recstream stack down` stops it")


EXAMPLE_EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "example.toml"


def _serve(s: Settings, args):
    """The HTTP API and dashboard in a thread of this process, on --api-port (or a free port)."""
    import uvicorn

    from stream.drivers.api import create_app
    port = getattr(args, "api_port", 0) or 0
    if not port or stack.port_open("127.0.0.1", port):
        port = stack.free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(s), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, name="api", daemon=True).start()
    print(f"== HTTP API on http://127.0.0.1:{port}  (live dashboard: http://127.0.0.1:{port}/dashboard, "
          f"OpenAPI docs: /docs)")
    return server, port


def _show_api(api, user: str, s: Settings) -> None:
    """One user's recommendations through the API, and the experiment's click-through per variant."""
    import logging

    import httpx
    logging.getLogger("httpx").setLevel(logging.WARNING)
    url = f"http://127.0.0.1:{api[1]}/v1/users/{user}/recommendations?k=3"
    print(f"== asking the API: curl '{url}'")
    try:
        print("  " + httpx.get(url, timeout=10).text[:600])
    except httpx.HTTPError as exc:
        print(f"  the API did not answer: {exc}")
    if not s.experiments:
        return
    from stream.core.abstats import summarise
    from stream.core.experiments import Experiment
    from stream.core.storage.serving import read_outcomes
    exp = Experiment.load(s.experiments)
    print(f"== experiment {exp.name!r} (users split by a salted hash; `recstream ab report` for the full table; "
          "a replayed log's shoppers never saw these lists: `recstream simulate` closes the loop)")
    for r in summarise(read_outcomes(connect(s.redis_url), s.key_prefix, exp.name), exp.control):
        ct = r["click_through"]
        vs = ct.get("vs_control")
        print(f"  {r['variant']:<16} {r['lists']:>6} lists  click-through {100 * ct['value']:5.1f} % "
              f"(95 % CI {100 * ct['ci95'][0]:.1f} … {100 * ct['ci95'][1]:.1f})"
              + (f"  vs {exp.control}: {100 * vs['diff']:+.1f} points, p = {vs['p']:.2f}" if vs else "  (control)"))


def _live(sent, total, recs, stop):
    t0 = time.time()
    while not stop.is_set():
        el = time.time() - t0
        lat = np.sort(recs.latencies_ms()[-2000:]) if recs.by_trigger else np.zeros(1)
        scorer = recs.last_scorer.split("+")[0] or "-"
        print(f"\r  sent {sent():>7}/{total}  ({sent() / max(el, 1e-9):,.0f}/s)  users with recommendations "
              f"{len(recs.latest):>6}  latency p50 {lat[len(lat) // 2]:6.1f} ms  scorer {scorer:<22}", end="",
              file=sys.stderr, flush=True)
        time.sleep(1.0)
