"""`recstream` commands: running recstream: the worker, rebuilding a wiped store, the settings in effect, pseudonyms."""
from __future__ import annotations

import logging
import sys

from stream.config.compose import build_pipeline
from stream.config.settings import Settings


def cmd_worker(s: Settings, args) -> int:
    from stream.drivers.metrics import WorkerMetrics
    driver = args.driver or s.driver
    if driver == "faust":
        from stream.drivers.faust_driver import run_faust_worker
        pipeline = build_pipeline(s, args.group)
        keeper = pipeline.keeper
        return run_faust_worker(s, pipeline, group_id=args.group, on_batch=keeper.maybe_save if keeper else None)
    from stream.core.scoring.transformer import ModelWatcher
    from stream.drivers.worker import ConfluentWorker
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
                logging.getLogger("recstream.ranker").error("checkpoint at shutdown failed: %s", exc)
    return 0


def cmd_serve(s: Settings, args) -> int:
    import uvicorn

    from stream.drivers.api import create_app
    # a thread back from a Redis round-trip waits for the GIL up to the switch interval (5 ms by default)
    # while the event loop runs: the fresh ask makes about six round-trips (measured: bench/api.py)
    sys.setswitchinterval(0.0005)
    print(f"recstream API on http://{args.host}:{args.port}  (docs /docs, dashboard /dashboard)", file=sys.stderr)
    if args.workers > 1:     # processes sharing the port; each reads the same RECSTREAM_* settings
        uvicorn.run("stream.drivers.api:app_from_env", factory=True, workers=args.workers, host=args.host,
                    port=args.port, log_level="warning", access_log=False)
    else:
        uvicorn.run(create_app(s), host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def cmd_archive(s: Settings, args) -> int:
    from stream.drivers.archiver import Archiver
    a = Archiver(s, root=args.out, roll_s=args.roll_s)
    a.install_signal_handlers()
    a.run(max_idle_s=args.max_idle)
    return 0


def cmd_rebuild(s: Settings, args) -> int:
    from stream.drivers.rebuild import rebuild
    pipeline = build_pipeline(s, init_store=False, guard=False, ranker=False)
    if pipeline.profiles.is_live() and not args.force:
        print(f"recstream rebuild: the store at prefix {s.key_prefix!r} has its marker (it was not emptied); "
              "--force replays anyway (idempotent)", file=sys.stderr)
        return 2
    report = rebuild(s, pipeline, batch_size=args.batch, progress=not args.quiet and sys.stderr.isatty())
    print(report.summary())
    return 0


def cmd_settings(s: Settings, args) -> int:
    """The settings in effect (secrets masked), marking those that differ from the default."""
    for name, value, changed in s.shown():
        print(f"{name:42s} {value!r}{'' if not changed else '   (set)'}")
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


def register(sub) -> None:
    wk = sub.add_parser("worker", help="run the streaming recommender (consumer group on the events topic)")
    wk.add_argument("--driver", choices=["confluent", "faust"], help="default RECSTREAM_DRIVER (confluent: faster, "
                                                                     "see docs/benchmarks.md)")
    wk.add_argument("--group", help="consumer group (default RECSTREAM_GROUP_ID)")
    wk.add_argument("--max-idle", type=float, help="exit after this many seconds without a message")
    wk.set_defaults(fn=cmd_worker)

    sv = sub.add_parser("serve", help="the HTTP API and the live dashboard (FastAPI; OpenAPI docs at /docs)",
                        description="GET /v1/users/USER/recommendations (the worker's latest list, or a fresh one), "
                                    "GET /v1/items/ITEM/similar, POST /v1/events (validated, produced to the events "
                                    "topic), /healthz, /readyz, /metrics, /dashboard. Reads the same RECSTREAM_* "
                                    "settings as the worker (Redis, brokers, key prefix, models, experiments).",
                        epilog="example: recstream serve --port 8000 & curl localhost:8000/v1/users/u1/recommendations")
    sv.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    sv.add_argument("--port", type=int, default=8000, help="default 8000")
    sv.add_argument("--workers", type=int, default=1, help="server processes sharing the port (default 1)")
    sv.set_defaults(fn=cmd_serve)

    ar = sub.add_parser("archive", help="keep every accepted event as date-partitioned Parquet (what retrains read)",
                        description="A consumer group of its own (RECSTREAM_GROUP_ID + '-archive') on the events "
                                    "topic, beside the worker: each message validated with the worker's contracts "
                                    "and pseudonymised with its key, buffered, written to "
                                    "ARCHIVE/date=YYYY-MM-DD/part-*.parquet, and only then committed (nothing lost "
                                    "on a crash; a redelivered event is read once). Days older than "
                                    "RECSTREAM_ARCHIVE_RETENTION_DAYS (event time) are deleted.",
                        epilog="read it back: recstream replay ARCHIVE --format archive; recstream retrain")
    ar.add_argument("--out", help="archive folder (default RECSTREAM_ARCHIVE_DIR)")
    ar.add_argument("--roll-s", type=float, default=10.0, help="seconds between flushes (default 10)")
    ar.add_argument("--max-idle", type=float, help="exit after this many seconds without a message")
    ar.set_defaults(fn=cmd_archive)

    rb = sub.add_parser("rebuild", help="restore profiles, shared statistics and the catalog after Redis lost its data",
                        description="Replays the retained items and events topics from the beginning into Redis "
                                    "(idempotent), then writes the store's marker: a worker that stopped applying "
                                    "because the store was emptied resumes by itself.")
    rb.add_argument("--batch", type=int, default=2000, help="messages per batch (default 2000)")
    rb.add_argument("--force", action="store_true", help="replay even if the store was not emptied")
    rb.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    rb.set_defaults(fn=cmd_rebuild)

    se = sub.add_parser("settings", help="the RECSTREAM_* settings in effect (secrets masked)")
    se.set_defaults(fn=cmd_settings)

    ps = sub.add_parser("pseudonym", help="the pseudonym of user ids under RECSTREAM_PSEUDONYMISE_KEY",
                        description="Prints USER<TAB>PSEUDONYM: how the shop maps its ids to what recstream stores "
                                    "and emits when pseudonymisation is on.")
    ps.add_argument("users", nargs="+", metavar="USER")
    ps.set_defaults(fn=cmd_pseudonym)
