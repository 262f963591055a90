"""`recstream` commands: the local stack and its topics, and the `make run` demo."""
from __future__ import annotations

import sys

from stream.cli._common import topic_of
from stream.config.settings import Settings


def _stack_cfg(s: Settings, args):
    from stream.ops.stack import StackConfig
    return StackConfig.from_settings(s, args.state_dir, args.broker_port, args.redis_port)


def cmd_stack(s: Settings, args) -> int:
    from stream.ops import cluster, stack
    cfg = _stack_cfg(s, args)
    try:
        if args.action == "up":
            n = args.redis_cluster
            for line in stack.up(cfg, redis_server=not n) + (cluster.up(cfg, n) if n else []):
                print(line)
            print(f"brokers {cfg.brokers}  redis {cfg.redis_url}{f' (a {n}-master cluster)' if n else ''}  "
                  f"(broker storage is memory-only: topics vanish when it stops)")
        elif args.action == "down":
            for line in stack.down(cfg) + cluster.down(cfg):
                print(line)
        else:
            nodes = cluster.running_nodes(cfg)
            for line in stack.status(cfg) + [f"{svc.name} {cfg.host}:{svc.port}  pid {svc.pid()}" for svc in nodes]:
                print(line)
            return stack.main_status_code(cfg)
    except stack.StackError as exc:
        print(f"recstream stack: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_topics(s: Settings, args) -> int:
    from confluent_kafka.admin import AdminClient

    from stream.drivers.kafka import create_topics
    if args.action == "list":
        from stream.drivers.kafka import admin_conf
        md = AdminClient(admin_conf(s.brokers)).list_topics(timeout=10)
        for name, t in sorted(md.topics.items()):
            print(f"{name}\t{len(t.partitions)} partitions")
        return 0
    names = [topic_of(s, t) for t in args.topics] or [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic,
                                                        s.trends_topic, s.search_requests_topic, s.search_results_topic]
    for topic, state in create_topics(s.brokers, names, args.partitions or s.partitions).items():
        print(f"{topic}: {state}")
    return 0


def cmd_demo(s: Settings, args) -> int:
    from stream.ops.demo import run_demo
    try:
        from stream.evaluation.retrain import retrain_once    # the training extra (torch): continuous training
    except ImportError:
        print("== continuous training: off (no torch: pip install 'recstream[train]')")
        retrain_once = None
    return run_demo(s, args, retrain=retrain_once)


def register(sub) -> None:
    st = sub.add_parser("stack", help="start/stop/inspect the local broker and redis-server",
                        description="Local stack: Tansu (Kafka protocol, memory-only storage: data is lost when "
                                    "it stops) and redis-server, with pid files and logs under the state dir. "
                                    "Ports default to those in RECSTREAM_BROKERS and RECSTREAM_REDIS_URL.")
    st.add_argument("action", choices=["up", "down", "status"])
    st.add_argument("--state-dir", help="pid files and logs (default RECSTREAM_STATE_DIR or .state)")
    st.add_argument("--broker-port", type=int)
    st.add_argument("--redis-port", type=int)
    st.add_argument("--redis-cluster", type=int, default=0, metavar="N",
                    help="up: a Redis Cluster of N masters (at least 3; redis-server processes on the redis port and "
                         "the next N-1) instead of one redis-server; RECSTREAM_REDIS_URL stays the first node's")
    st.set_defaults(fn=cmd_stack)

    tp = sub.add_parser("topics", help="create (idempotent) or list topics")
    tp.add_argument("action", choices=["create", "list"])
    tp.add_argument("topics", nargs="*", help="names or aliases (events, items, recommendations, dlq, trends, search-requests, search-results); default all")
    tp.add_argument("--partitions", type=int, help="partition count (default RECSTREAM_PARTITIONS); final: the broker "
                                                   "cannot add partitions later")
    tp.set_defaults(fn=cmd_topics)

    de = sub.add_parser("demo", help="the `make run` demo: stack, synthetic shop, worker, live view, summary")
    de.add_argument("--events", type=int, default=20_000)
    de.add_argument("--rate", type=float, default=1_000)
    de.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    de.add_argument("--api-port", type=int, default=8000, help="the HTTP API and dashboard (default 8000; a free "
                                                                "port if taken)")
    de.set_defaults(fn=cmd_demo)
