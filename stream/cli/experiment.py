"""`recstream` commands: A/B experiments: simulated shoppers (`simulate`) and the report (`ab report`)."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from stream.config.settings import Settings
from stream.core.experiments import Experiment


def _experiment(s: Settings, args) -> tuple[Settings, Experiment] | None:
    path = args.experiment or s.experiments
    if not path:
        print(f"recstream {args.cmd}: no experiment: pass --experiment FILE or set RECSTREAM_EXPERIMENTS "
              "(the worker must run with the same file)", file=sys.stderr)
        return None
    return replace(s, experiments=path), Experiment.load(path)


def cmd_simulate(s: Settings, args) -> int:
    from stream.core.abstats import summarise
    from stream.core.storage.serving import WORKERS, fresh_workers, read_outcomes
    from stream.ops.simulate import SimConfig, run_inprocess, run_kafka
    got = _experiment(s, args)
    if got is None:
        return 2
    s, exp = got
    cfg = SimConfig(n_users=args.users, n_items=args.items, users_per_round=args.per_round, rounds=args.rounds,
                    seed=args.seed)
    series: list[dict] = []

    if args.inprocess:
        from stream.config.compose import build_pipeline
        pipeline = build_pipeline(s)
        client = pipeline.client
    else:
        from stream.core.storage.store import connect
        client = connect(s.redis_url)
        workers = fresh_workers(client.hgetall(s.key_prefix + WORKERS))
        names = {w.get("experiment") for w in workers.values()}
        if not workers:
            print("recstream simulate: no worker heartbeat in Redis: start `recstream worker` with "
                  f"RECSTREAM_EXPERIMENTS={s.experiments} first (or pass --inprocess)", file=sys.stderr)
            return 2
        if exp.name not in names:
            print(f"recstream simulate: the running worker(s) serve experiment {sorted(map(str, names))}, not "
                  f"{exp.name!r}: start them with RECSTREAM_EXPERIMENTS={s.experiments}", file=sys.stderr)
            return 2

    def snapshot(r: int, sim) -> None:
        if (r + 1) % args.snapshot_every and r + 1 != cfg.rounds:
            return
        raw = read_outcomes(client, s.key_prefix, exp.name)
        totals = {v: [sum(u[0] for u in users.values()), sum(u[1] for u in users.values())] for v, users in raw.items()}
        series.append({"round": r + 1, "totals": totals})

    if args.inprocess:
        run_inprocess(pipeline, cfg, on_round=snapshot)
    else:
        run_kafka(s, cfg, on_round=snapshot, progress=sys.stderr.isatty())
    _report(args, exp, summarise(read_outcomes(client, s.key_prefix, exp.name), exp.control), series,
            {"sim": cfg.__dict__})
    return 0


def _report(args, exp: Experiment, rows: list[dict], series: list[dict] | None, extra: dict | None = None) -> None:
    """The table on stdout; with --out, also report.md, ab.json and ab.png there."""
    from stream.evaluation.ab import format_table, write_report
    if args.out:
        print(write_report(Path(args.out), exp.name, exp.control, rows, series, extra))
        print(f"wrote {args.out}/report.md, ab.json, ab.png")
    else:
        print(format_table(rows, exp.control))


def cmd_ab_report(s: Settings, args) -> int:
    from stream.core.abstats import summarise
    from stream.core.storage.serving import read_outcomes
    from stream.core.storage.store import connect
    got = _experiment(s, args)
    if got is None:
        return 2
    s, exp = got
    rows = summarise(read_outcomes(connect(s.redis_url), s.key_prefix, exp.name), exp.control)
    if not rows:
        print(f"recstream ab report: no outcomes recorded for experiment {exp.name!r} under prefix "
              f"{s.key_prefix!r} yet", file=sys.stderr)
        return 1
    _report(args, exp, rows, json.loads(Path(args.series).read_text()).get("series") if args.series else None)
    return 0


def register(sub) -> None:
    sm = sub.add_parser("simulate", help="closed-loop simulated shoppers: judge an experiment before real traffic",
                        description="Shoppers with drifting tastes read their recommendations and act on them "
                                    "(clicks likelier the better the items match their tastes), and browse on their "
                                    "own. By default their events go to Kafka and through the running worker(s) "
                                    "(which must run with the same RECSTREAM_EXPERIMENTS), and they read their "
                                    "lists from the recommendations topic; --inprocess calls the pipeline core "
                                    "directly. Ends with the experiment's table (recstream ab report).",
                        epilog="example: RECSTREAM_EXPERIMENTS=experiments/example.toml recstream worker & "
                               "recstream simulate --rounds 60 --out out/sim")
    sm.add_argument("--experiment", help="experiment file (default RECSTREAM_EXPERIMENTS)")
    sm.add_argument("--users", type=int, default=400, help="simulated shoppers (default 400)")
    sm.add_argument("--items", type=int, default=800, help="catalog size (default 800)")
    sm.add_argument("--rounds", type=int, default=40, help="rounds of visits (default 40; a minute of event time each)")
    sm.add_argument("--per-round", type=int, default=50, help="shoppers visiting per round (default 50)")
    sm.add_argument("--seed", type=int, default=0)
    sm.add_argument("--snapshot-every", type=int, default=5, help="rounds between the over-time snapshots")
    sm.add_argument("--inprocess", action="store_true", help="no Kafka, no worker: the pipeline core in this process")
    sm.add_argument("--out", help="write report.md, ab.json (with the over-time series) and ab.png here")
    sm.set_defaults(fn=cmd_simulate)

    ab = sub.add_parser("ab", help="A/B experiments: the report").add_subparsers(dest="ab_cmd", required=True,
                                                                                metavar="ACTION")
    rp = ab.add_parser("report", help="per-variant outcomes with 95 %% intervals and a test of the difference",
                       description="Click-through, add-to-cart and purchase rates per shown list (delta-method "
                                   "intervals over users) and revenue per user, for each variant of the experiment, "
                                   "with the difference from the control (the first variant), from the outcome "
                                   "counts the worker keeps in Redis.")
    rp.add_argument("--experiment", help="experiment file (default RECSTREAM_EXPERIMENTS)")
    rp.add_argument("--out", help="write report.md, ab.json and ab.png here")
    rp.add_argument("--series", help="an ab.json from `recstream simulate --out`: adds click-through over time")
    rp.set_defaults(fn=cmd_ab_report)
