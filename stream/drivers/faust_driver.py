"""The faust-streaming driver over the same pipeline core (`recstream worker --driver faust`).

An agent takes micro-batches with `stream.take(batch_size, within=batch_wait)` and calls
`Pipeline.process_batch`; recommendations and dead letters are sent through faust topics and
awaited before the batch is acknowledged (at-least-once: faust commits acknowledged offsets).
No tables and no repartitioning: state lives in Redis (faust table changelog recovery loses
updates on the local broker unless producer_max_batch_size=1; see ../shared/notes/broker.md).

Measured slower than the confluent-kafka driver (docs/benchmarks.md, `make bench`), so it is not the default.
"""
from __future__ import annotations

import logging
import os
import time

from stream.config.settings import Settings
from stream.core.pipeline import Pipeline
from stream.core.validate import InMessage
from stream.drivers.emitter import dead_letter_headers

log = logging.getLogger("recstream.worker.faust")


def build_app(s: Settings, pipeline: Pipeline, group_id: str | None = None, on_batch=None):
    import faust

    os.makedirs(f"{s.state_dir}/faust", exist_ok=True)   # faust creates its data folder, not the parents
    app = faust.App(
        group_id or s.group_id,
        broker=",".join(f"kafka://{b}" for b in s.brokers.split(",")),
        value_serializer="raw",
        key_serializer="raw",
        datadir=f"{s.state_dir}/faust/{{conf.id}}-data",   # faust's local folder: under the state dir, not the cwd
        broker_session_timeout=max(2, s.session_timeout_ms // 1000),
        broker_heartbeat_interval=1,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        topic_partitions=s.partitions,
        topic_allow_declare=False,
        web_enabled=False,
        producer_linger_ms=2,
        consumer_max_fetch_size=4 * 1024 * 1024,
        stream_buffer_maxsize=max(4096, 4 * s.batch_size),
    )
    events = app.topic(s.events_topic, key_type=bytes, value_type=bytes)
    items = app.topic(s.items_topic, key_type=bytes, value_type=bytes)
    recs = app.topic(s.recs_topic, key_type=bytes, value_type=bytes)
    dlq = app.topic(s.dlq_topic, key_type=bytes, value_type=bytes)
    within = s.batch_wait_ms / 1000

    async def emit(result):
        futs = [await recs.send(key=r.user_id.encode(), value=r.to_json()) for r in result.recommendations]
        futs += [await dlq.send(key=d.key, value=d.value, headers=dead_letter_headers(d))
                 for d in result.dead_letters]
        for f in futs:
            await f   # delivered before the batch is acknowledged

    def messages(batch, kind: str) -> list[InMessage]:
        """Faust events as the pipeline takes them: key, topic, partition and offset kept (dead letters
        name where they came from)."""
        return [InMessage(e.message.value, e.message.key, e.message.topic, e.message.partition, e.message.offset,
                          kind) for e in batch]

    @app.agent(events)
    async def process_events(stream):
        async for batch in stream.take_events(s.batch_size, within=within):
            result = pipeline.process_batch(messages(batch, "event"))
            t = time.perf_counter()
            await emit(result)
            result.timings["emit"] = time.perf_counter() - t
            pipeline.publish(result, s.latest_ttl_s)   # the API's cached read and the experiment's counts
            if on_batch:
                on_batch(result)

    @app.agent(items)
    async def process_items(stream):
        async for batch in stream.take_events(s.batch_size, within=within):
            pipeline.process_batch(messages(batch, "item"))

    return app


def run_faust_worker(s: Settings, pipeline: Pipeline, group_id: str | None = None, on_batch=None) -> int:
    """Run until SIGTERM/SIGINT (faust's worker handles both and stops gracefully)."""
    from faust import Worker
    app = build_app(s, pipeline, group_id, on_batch)
    worker = Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0
