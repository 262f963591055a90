"""The one worker-process harness: what the demo, the via-Kafka backtest and the benchmarks share.

    s = run_settings(base, "demo")           # topics, consumer group and key prefix of their own
    with WorkerProcess(s, log=...) as worker:
        worker.wait_ready(probe_item)          # joined its group and applied the catalog
        with Listener(s.recs_topic, s.brokers) as recs:     # recommendations, by trigger event id
            produce_events(recs.tracked(events), ...)       # send times noted for latency
            recs.wait_quiet(idle_s)

Each worker is `recstream worker` in its own process, configured only through RECSTREAM_* variables
(what an operator would set), stopped with SIGTERM (it finishes its batch, commits and checkpoints).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import orjson

from stream.config.settings import Settings
from stream.core.storage.store import Keys, connect
from stream.drivers.kafka import create_topics
from stream.ops import stack
from stream.ops.consume import Record, records


def run_settings(base: Settings, tag: str, **overrides) -> Settings:
    """`base` with topics `{tag}.{run}.*`, group and key prefix unique to this run; the topics created."""
    run = f"{tag}.{uuid.uuid4().hex[:6]}"
    s = replace(base, events_topic=f"{run}.events", items_topic=f"{run}.items", recs_topic=f"{run}.recommendations",
                dlq_topic=f"{run}.dlq", trends_topic=f"{run}.trends", search_requests_topic=f"{run}.search.requests",
                search_results_topic=f"{run}.search.results", group_id=run.replace(".", "-"),
                key_prefix=f"rs:{run.replace('.', ':')}:", **overrides)
    create_topics(s.brokers, [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic, s.trends_topic], s.partitions)
    return s


class WorkerProcess:
    """`recstream worker` in a child process on settings `s`. `log`: where its output goes (a path, a file,
    None for the parent's); `tied`: it gets SIGTERM when this process dies, however it dies."""

    def __init__(self, s: Settings, *, log=None, tied: bool = True, cwd: str | Path | None = None, **env_overrides):
        self.s = s
        env_s = replace(s, **{"metrics_port": 0, **env_overrides})
        self._own_log = isinstance(log, (str, Path))     # a file this harness opened, and closes
        self._log = open(log, "ab") if self._own_log else log
        self.proc = subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"],
                                     env={**os.environ, **env_s.to_env()}, cwd=cwd,
                                     stdout=subprocess.DEVNULL if self._log is not None else None, stderr=self._log,
                                     preexec_fn=stack.die_with_parent if tied else None)

    def wait_ready(self, probe_item: str | None, timeout: float = 60.0) -> bool:
        """Until the worker has applied the catalog item `probe_item` (it has joined its group and caught
        up with the items topic); with no item, a fixed 3 s for the group join."""
        if probe_item is None:
            time.sleep(3)
            return self.alive
        client = connect(self.s.redis_url)
        probe = Keys(self.s.key_prefix).item(probe_item)
        deadline = time.time() + timeout
        while not client.exists(probe) and time.time() < deadline and self.alive:
            time.sleep(0.05)
        return bool(client.exists(probe))

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (the worker finishes its batch and checkpoints); SIGKILL if it does not stop."""
        if self.alive:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._own_log:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Listener:
    """A topic consumed in a background thread from the beginning; recommendations are indexed by their
    trigger event id with the time they arrived. `on_record` sees every record (other topics)."""

    def __init__(self, topic: str, brokers: str, on_record: Callable[[Record], None] | None = None):
        self.topic, self.brokers, self.on_record = topic, brokers, on_record
        self.by_trigger: dict[str, tuple[dict, float]] = {}
        self.latest: dict[str, dict] = {}          # user -> newest recommendation
        self.scorers: Counter = Counter()          # recommendations per scorer version (model_versions.scorer)
        self.last_scorer = ""
        self.sent: dict[str, float] = {}           # event id -> when it was produced (see `tracked`)
        self.last_at = time.time()
        self._stop, self._ready = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for rec in records(self.topic, self.brokers, stop=self._stop.is_set, ready=self._ready,
                           session_timeout_ms=2000):
            self.last_at = time.time()
            if self.on_record is not None:
                self.on_record(rec)
                continue
            obj = orjson.loads(rec.value)
            self.by_trigger[obj["trigger_event_id"]] = (obj, self.last_at)
            self.latest[obj["user_id"]] = obj
            self.last_scorer = obj.get("model_versions", {}).get("scorer", "")
            self.scorers[self.last_scorer] += 1

    def start(self, timeout: float = 30.0) -> Listener:
        """Start consuming; return once partitions are assigned (nothing sent after this is missed)."""
        self._thread.start()
        self._ready.wait(timeout)
        return self

    def tracked(self, events: Iterable[dict], skip: int = 0) -> Iterator[tuple[int, dict]]:
        """(line number, event) for `produce_events`, noting each event's send time (after the first `skip`)."""
        for i, ev in enumerate(events, 1):
            if i > skip:
                self.sent[ev["event_id"]] = time.time()
            yield i, ev

    def latencies_ms(self) -> np.ndarray:
        """Event sent -> its recommendation received, for every tracked event that has one (arrival order)."""
        return self._sent_and_latency()[:, 1]

    def timeline(self) -> np.ndarray:
        """(N, 2): when each tracked event that has a recommendation was sent (s) and its latency (ms), by
        send time."""
        out = self._sent_and_latency()
        return out[np.argsort(out[:, 0], kind="stable")]

    def _sent_and_latency(self) -> np.ndarray:
        got = [(self.sent[eid], (t - self.sent[eid]) * 1000) for eid, (_, t) in list(self.by_trigger.items())
               if eid in self.sent]
        return np.array(got, dtype=np.float64).reshape(-1, 2)

    def wait_quiet(self, idle_s: float, alive: Callable[[], bool] = lambda: True) -> float:
        """Until nothing arrived for `idle_s` seconds; returns when the last record came."""
        self.last_at = max(self.last_at, time.time())
        while time.time() - self.last_at < idle_s and alive():
            time.sleep(0.2)
        return self.last_at

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def __enter__(self) -> Listener:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
