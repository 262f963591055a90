"""`recstream` commands: offline evaluation: the prequential backtest, in process or through Kafka."""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import orjson

from stream.cli._common import duration
from stream.config.settings import Settings


def cmd_backtest(s: Settings, args) -> int:
    from stream.evaluation.backtest import BacktestConfig, load_events, run_backtest, validation_split
    from stream.evaluation.report import (
        format_ratios,
        format_retrain,
        format_segments,
        format_table,
        write_report,
    )
    from stream.ops.stack import private_redis
    fmt = args.format
    events, items = load_events(args.log, fmt, args.limit)
    if args.validation:
        events = validation_split(events, args.warmup_frac)
    if not events:
        print(f"recstream backtest: no valid events in {args.log}", file=sys.stderr)
        return 2
    exclude = args.exclude_seen if args.exclude_seen is not None else (fmt == "movielens")
    cfg = BacktestConfig(warmup_frac=args.warmup_frac, batch_size=args.batch_size, exclude_seen=exclude,
                         seed=args.seed, systems=tuple(args.systems.split(",")) if args.systems else BacktestConfig.systems,
                         rankers=tuple(r for r in args.rankers.split(",") if r), encoder_dir=args.encoder_dir,
                         explore=args.explore, retrain_every_s=args.retrain_every, retrain_epochs=args.retrain_epochs,
                         ranker_warmup_frac=args.ranker_warmup_frac, holdout=args.holdout, parallel=args.parallel)
    if args.retrain_every and not args.model_dir:
        print("recstream backtest: --retrain-every retrains the promoted model of --model-dir (train one with "
              "`recstream train --events LOG --test-frac 1-WARMUP --promote`)", file=sys.stderr)
        return 2
    if args.via_kafka:
        from stream.evaluation.via_kafka import run_via_kafka
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
    with private_redis() if not args.redis_url else contextlib.nullcontext(args.redis_url) as url:
        report = run_backtest(events, items, cfg, redis_url=url, model_dir=args.model_dir,
                              progress=sys.stderr.isatty())
    print(f"{report['events']} events, {report['evaluated']} evaluated after a warm-up of {report['warmup_events']} "
          f"({report['seconds']} s)")
    print(format_table(report))
    if report.get("ndcg@10_ratio_to_best_baseline"):
        print(format_ratios(report))
    print(format_segments(report))
    if report.get("retrain"):
        print(format_retrain(report))
    if args.out:
        files = write_report(report, args.out, title=f"{Path(args.log).name} ({fmt or 'auto'})")
        print("wrote " + ", ".join(str(f) for f in files))
    return 0


def register(sub) -> None:
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
    bt.add_argument("--rankers", default="gbdt",
                    help="online rankers run beside the base order as recstream+SPEC: gbdt (the default: learned, "
                    "whole candidate set, gated against the base order), gbdt:ungated (without the gate), lr or "
                    "fm (the cascade over shown lists), lr:learned, fm:learned; any SPEC may end in :without=NAME+NAME (the "
                    "same ranker with those features held at 0: an ablation row, e.g. gbdt,gbdt:without=hist_bought); "
                    "comma-separated, the rows of one run learn from the same sampled negatives; '' = none")
    bt.add_argument("--ranker-warmup-frac", type=float, default=0.1,
                    help="the end of the warm-up (this share of it) already shows lists to the rankers, which learn "
                    "there as a live worker would have; nothing there is evaluated (default %(default)s)")
    bt.add_argument("--no-holdout", dest="holdout", action="store_false",
                    help="with --model-dir: no holdout model over the end of the training window (the model's "
                    "columns are then missing in the rankers' rows there; to measure what the holdout adds)")
    bt.add_argument("--retrain-every", type=duration, metavar="DURATION",
                    help="also run recstream with its model retrained every DURATION of event time (30m, 1h, 30d) "
                    "on the events revealed so far, warm-started, beside the frozen model; reports the ratio")
    bt.add_argument("--retrain-epochs", type=int, default=2, help="epochs of each warm-started retrain (default 2)")
    bt.add_argument("--one-process", dest="parallel", action="store_const", const=False, default=None,
                    help="replay every system in this process (by default, with 2+ cores and a log long enough to "
                    "repay starting processes, the baselines, recstream and a retrained twin each replay it in a "
                    "process of their own, at once: the same figures, sooner)")
    bt.add_argument("--redis-url", help="use this Redis (default: a private redis-server for the run)")
    bt.add_argument("--limit", type=int)
    bt.add_argument("--validation", action="store_true",
                    help="keep only the warm-up part of the log (its first --warmup-frac by time) and backtest that "
                    "with the same split: a period to choose settings on without looking at the evaluated one")
    bt.add_argument("--rate", type=float, default=500.0, help="--via-kafka: events/s sent (0 = as fast as possible)")
    bt.add_argument("--seed", type=int, default=42)
    bt.add_argument("--via-kafka", action="store_true",
                    help="replay through a private local stack and the real worker; join recommendations back")
    bt.set_defaults(fn=cmd_backtest)
