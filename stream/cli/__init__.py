"""`recstream`: one command, sub-commands for every job. `recstream COMMAND --help` for each.

Each command group lives in its own module (`stack`, `data`, `serve`, `model`, `evaluate`) with a
`register(sub)` that adds its parsers; this module assembles them and runs one.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

# One BLAS thread unless the user says otherwise (before numpy is first imported): the matrix products
# on the serving path are small (one batch's candidates), and OpenBLAS threads that spin between them
# take the second core from redis-server and onnxruntime. Measured on this 2-core machine, an exact
# content search over 1,682 items: idle, 0.11 ms either way but twice the CPU with two threads; with a
# backtest running beside it, 1.14 ms with two threads vs 0.17 ms with one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from stream.cli import data, evaluate, experiment, model, search, serve, stack  # noqa: E402
from stream.config.settings import Settings, SettingsError  # noqa: E402
from stream.drivers.kafka import configure_security  # noqa: E402
from stream.drivers.resilience import stopped_gracefully  # noqa: E402
from stream.errors import RecstreamError  # noqa: E402
from stream.secrets import install_redaction, redact_text  # noqa: E402

EPILOG = """examples:
  recstream stack up                       # local broker (Tansu, memory-only) + redis-server
  recstream topics create                  # events, items, recommendations, DLQ, trends, search topics
  recstream trends run                     # beside the worker: rising items, categories, queries (GET /v1/trends)
  recstream search-service                 # search result pages re-ranked over Kafka (also POST /v1/search/rerank)
  recstream synth --events 20000 --out data/   # synthetic catalog + events (JSONL)
  recstream produce data/items.jsonl --items
  recstream produce data/events.jsonl --rate 2000
  recstream worker                         # events -> profiles -> candidates -> scores -> recommendations
  recstream consume recommendations --from-beginning --max 5
  recstream archive                        # beside the worker: every accepted event as Parquet (artifacts/archive)
  recstream retrain --every 1h             # warm-start, shadow-check against the model in service, promote on a win
  recstream produce ../shared/data/taobao-userbehavior-samples/UserBehavior.timeslice_2017-11-26T01.csv --format taobao
  recstream stack down

settings come from RECSTREAM_* environment variables (see docs/settings.md, or `recstream settings`).
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="recstream", description="Streaming, real-time recommender for e-commerce.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    for group in (stack, data, serve, model, evaluate, experiment, search):
        group.register(sub)
    return p


def _redact_tracebacks(secrets: list[str]) -> None:
    """An uncaught exception's traceback goes through the same redaction as log lines."""
    import traceback

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
    finally:
        stopped_gracefully()


if __name__ == "__main__":
    sys.exit(main())
