"""`recstream` commands of the search side: the re-rank service on Kafka, the trends publisher, the trend
backtest and the searching-shoppers simulation."""
from __future__ import annotations

import contextlib
import sys

from stream.config.settings import Settings


def cmd_search_service(s: Settings, args) -> int:
    from stream.drivers.search import SearchService
    svc = SearchService(s)
    svc.install_signal_handlers()
    svc.run(max_idle_s=args.max_idle)
    return 0


def cmd_trends(s: Settings, args) -> int:
    if args.action == "run":
        from stream.drivers.search import TrendsPublisher
        pub = TrendsPublisher(s)
        pub.install_signal_handlers()
        pub.run(max_idle_s=args.max_idle)
        return 0
    from stream.evaluation.search_report import trends_report
    if not args.logs:
        print("recstream trends backtest: name at least one log (LOG or LOG:FORMAT)", file=sys.stderr)
        return 2
    report = trends_report(args.logs, window_s=args.window, baseline_windows=args.baseline_windows,
                           min_support=args.min_support, n=args.n, out=args.out)
    print(report["table"])
    return 0


def cmd_search_simulate(s: Settings, args) -> int:
    from stream.evaluation.search_report import simulate_report
    from stream.ops.simulate import SimConfig
    from stream.ops.simulate_search import SearchSimConfig
    from stream.ops.stack import private_redis
    cfg = SearchSimConfig(sim=SimConfig(n_users=args.users, n_items=args.items, users_per_round=args.per_round,
                                        rounds=args.rounds, round_s=args.round_s, seed=args.seed),
                          search_share=args.search_share, rerank_share=args.rerank_share)
    with private_redis() if not args.redis_url else contextlib.nullcontext(args.redis_url) as url:
        report = simulate_report(url, cfg, encoder_dir=args.encoder_dir, out=args.out, progress=not args.quiet)
    print(report["table"])
    return 0


def register(sub) -> None:
    sv = sub.add_parser("search-service", help="answer search re-rank requests on Kafka (request/reply topics)",
                        description="Consume RECSTREAM_SEARCH_REQUESTS_TOPIC (SearchRequest v1 with a request_id), "
                                    "re-rank each page for its user and reply on RECSTREAM_SEARCH_RESULTS_TOPIC, "
                                    "keyed by user. The HTTP API answers the same at POST /v1/search/rerank.")
    sv.add_argument("--max-idle", type=float, help="stop after this many seconds without a request")
    sv.set_defaults(fn=cmd_search_service)

    tr = sub.add_parser("trends", help="trend analysis: publish rising items/categories/queries, or backtest it",
                        description="run: consume the events topic, publish what rises every RECSTREAM_TRENDS_EVERY_S "
                                    "to RECSTREAM_TRENDS_TOPIC and Redis (GET /v1/trends). backtest: at each window "
                                    "boundary of a log, do the items called rising grow most in the next window? "
                                    "precision@n against the items most popular in the last window.",
                        epilog="example: recstream trends backtest "
                               "../shared/data/rees46-ecommerce-2019oct-head/2019-Oct.head.csv:rees46 --window 600")
    tr.add_argument("action", choices=["run", "backtest"])
    tr.add_argument("logs", nargs="*", metavar="LOG[:FORMAT]", help="backtest: logs (format guessed when absent)")
    tr.add_argument("--window", type=float, default=3600.0, help="backtest: window in seconds (default 3600)")
    tr.add_argument("--baseline-windows", type=int, default=6, help="windows of a key's own baseline (default 6)")
    tr.add_argument("--min-support", type=float, default=3.0, help="events in the window to be called rising (3)")
    tr.add_argument("-n", type=int, default=10, help="items called per boundary (precision@n; default 10)")
    tr.add_argument("--out", help="backtest: write report.md and metrics.json here")
    tr.add_argument("--max-idle", type=float, help="run: stop after this many seconds without an event")
    tr.set_defaults(fn=cmd_trends)

    sm = sub.add_parser("search-simulate", help="searching shoppers: re-ranked result pages against the engine's order",
                        description="Closed-loop simulated shoppers who search (stream/ops/simulate_search.py): half "
                                    "the users (by a salted hash) see their result pages re-ranked, the others the "
                                    "engine's order; click-through per page with 95 %% intervals, for all pages and "
                                    "for cold users' pages. In process, on a private redis-server by default.")
    sm.add_argument("--users", type=int, default=600)
    sm.add_argument("--items", type=int, default=1000)
    sm.add_argument("--per-round", type=int, default=60, help="users visiting per round (default 60)")
    sm.add_argument("--rounds", type=int, default=60)
    sm.add_argument("--round-s", type=float, default=600.0, help="event time between rounds (default 600 s: a user "
                                                                   "returns about every 100 minutes)")
    sm.add_argument("--search-share", type=float, default=0.7, help="visits that start with a search (0.7)")
    sm.add_argument("--rerank-share", type=float, default=0.5, help="users whose pages are re-ranked (0.5)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--encoder-dir", help="exported text encoder: the query-item match by embeddings")
    sm.add_argument("--redis-url", help="use this Redis (default: a private redis-server for the run)")
    sm.add_argument("--out", help="write report.md, metrics.json and a plot here")
    sm.add_argument("--quiet", action="store_true", help="no progress bar")
    sm.set_defaults(fn=cmd_search_simulate)
