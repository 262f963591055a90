"""`recstream` commands: moving events: produce a log, tail a topic, make a synthetic shop, replay a log at its own pace."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

from stream.cli._common import topic_of
from stream.config.settings import Settings


def cmd_produce(s: Settings, args) -> int:
    from stream.data.adapters import ColumnMapping, open_log
    from stream.ops.produce import count_lines, print_rejects, produce_events, produce_items
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
        report = produce_items(items, topic_of(s, args.topic or "items"), s.brokers)
        print(report.summary("items"))
    else:
        records = src.events()
        if args.limit:
            import itertools
            records = itertools.islice(records, args.limit)
        total = args.limit or (count_lines(args.file) if Path(args.file).is_file() else None)
        report = produce_events(records, topic_of(s, args.topic or "events"), s.brokers, rate=args.rate,
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
    from stream.ops.consume import records
    topic = topic_of(s, args.topic)
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
    from stream.data.synth import SynthConfig, SynthShop
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


def cmd_replay(s: Settings, args) -> int:
    from stream.evaluation.backtest import load_events
    from stream.ops.produce import produce_events
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
    report = produce_events(paced(), topic_of(s, args.topic or "events"), s.brokers, progress=sys.stderr.isatty(),
                            total=len(events))
    span = (events[-1].ts - events[0].ts) / 1000
    print(f"replayed {report.sent} events spanning {span:,.0f} s of event time in {report.seconds:.1f} s "
          f"({report.rate:,.0f} events/s; {'as fast as possible' if not args.speedup else f'speedup {args.speedup:g}x'})")
    return 1 if report.failed else 0


def register(sub) -> None:
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
