"""Prometheus metrics and the periodic log line."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("recstream.worker")

_LAT_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)


class WorkerMetrics:
    def __init__(self, port: int = 0, log_every_s: float = 10.0):
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("recstream_events_total", "Valid events processed", registry=r)
        self.applied = Counter("recstream_events_applied_total", "Events that changed state (not replays)", registry=r)
        self.rejects = Counter("recstream_rejects_total", "Messages sent to the dead-letter topic", registry=r)
        self.items = Counter("recstream_items_total", "Catalog upserts", registry=r)
        self.recs = Counter("recstream_recommendations_total", "Recommendations emitted", registry=r)
        self.batch = Histogram("recstream_batch_size", "Messages per batch", registry=r,
                               buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000))
        self.stage = Histogram("recstream_stage_seconds", "Seconds per stage per batch", ["stage"], registry=r,
                               buckets=_LAT_BUCKETS)
        self.latency = Histogram("recstream_event_to_emit_seconds",
                                 "From the event's Kafka timestamp to its recommendation being produced",
                                 registry=r, buckets=_LAT_BUCKETS)
        # where that time goes, beside the stages: before the worker has the event, and between its two threads
        self.intake = Histogram("recstream_intake_seconds", "From the event's Kafka timestamp to the worker taking "
                                "it from the consumer (the broker's hop and the batch wait)", registry=r,
                                buckets=_LAT_BUCKETS)
        self.handoff = Histogram("recstream_handoff_wait_seconds", "Seconds a batch, its candidates gathered, "
                                 "waited for the emitting thread", registry=r, buckets=_LAT_BUCKETS)
        self.lag = Gauge("recstream_consumer_lag", "Messages behind the fetch high watermark", ["partition"], registry=r)
        self.up = Gauge("recstream_dependency_up", "1 while the dependency answers (redis, broker, store: not emptied)",
                        ["dependency"], registry=r)
        for dep in ("redis", "broker", "store"):
            self.up.labels(dep).set(1)
        self.ranker_examples = Gauge("recstream_ranker_examples_learned", "Examples the online ranker learned",
                                     registry=r)
        self.ranker_order = Gauge("recstream_ranker_learned_order", "1 while the online ranker's learned order "
                                  "serves lists, 0 while the base order does (not active yet, or its gate)", registry=r)
        self.ranker_gain = Gauge("recstream_ranker_gate_gain", "Mean NDCG gain (1/log2(position + 2)) of each "
                                 "order's lists over the gate's window of judgements (stream/core/ranking/gate.py)",
                                 ["order"], registry=r)
        if port:
            start_http_server(port, registry=r)
            log.info("metrics on http://0.0.0.0:%d/metrics", port)
        self.log_every_s = log_every_s
        self._t_last = time.monotonic()
        self._n_last = 0
        self._n = 0
        self._rejected = 0
        self._lat: list[float] = []
        self._recs_n = 0
        self._status = {"t": time.monotonic(), "n": 0, "reasons": {}}
        self._recent = deque(maxlen=20_000)   # (monotonic time, latency s): the heartbeat's last 30 s
        # the last 30 s of batches for the heartbeat's `path`: (time, messages, handoff wait, median intake,
        # stage timings), with running sums so that a heartbeat reads them without a pass over the window
        self._win: deque = deque()
        self._win_sums = {"messages": 0, "handoff": 0.0, "stages": {}}
        self._win_lock = threading.Lock()       # appended by the emitting thread, read by the consuming one

    def dependency(self, dep: str, up: bool) -> None:
        self.up.labels(dep).set(1 if up else 0)

    def observe_batch(self, n_msgs: int, result, latencies: list[float], intake: list[float] = (),
                      handoff: float | None = None) -> None:
        self.batch.observe(n_msgs)
        self.events.inc(result.events)
        self.applied.inc(result.applied)
        self.rejects.inc(len(result.dead_letters))
        self.items.inc(result.items)
        self.recs.inc(len(result.recommendations))
        for stage, sec in result.timings.items():
            self.stage.labels(stage).observe(sec)
        for x in latencies:
            self.latency.observe(x)
        for x in intake:
            self.intake.observe(x)
        if handoff is not None:
            self.handoff.observe(handoff)
        self._n += result.events
        self._rejected += len(result.dead_letters)
        self._recs_n += len(result.recommendations)
        self._lat.extend(latencies)
        now, reasons = time.monotonic(), self._status["reasons"]
        self._recent.extend([(now, x) for x in latencies])     # one C call: no reader sees it half done
        self._path_add(now, n_msgs, handoff or 0.0, sorted(intake)[len(intake) // 2] if intake else None,
                       result.timings)
        for d in result.dead_letters:    # by the field or check the reason names first ("user_id: ...")
            why = d.reason.split(":", 1)[0][:40]
            reasons[why] = reasons.get(why, 0) + 1
        if now - self._t_last >= self.log_every_s:
            rate = (self._n - self._n_last) / (now - self._t_last)
            lat = np.array(self._lat) * 1000 if self._lat else np.zeros(1)
            log.info("%.0f events/s; %d events total; event->emit p50 %.1f ms p99 %.1f ms; rejects %d",
                     rate, self._n, np.percentile(lat, 50), np.percentile(lat, 99), self._rejected)
            self._t_last, self._n_last, self._lat = now, self._n, []

    def observe_ranker(self, ranker) -> None:
        """The online ranker's state after a batch: examples learned, which order serves, the gate's gains."""
        if ranker is None:
            return
        self.ranker_examples.set(ranker.n_learned)
        gate = ranker.gate
        self.ranker_order.set(int(ranker.active and (gate is None or gate.trees_lead)))
        if gate is not None:
            st = gate.stats()
            self.ranker_gain.labels("learned").set(st["gate_window_gain_trees"])
            self.ranker_gain.labels("base").set(st["gate_window_gain_base"])

    def status(self) -> dict:
        """A worker's heartbeat in Redis: events/s since the last call, event-to-emit latency percentiles
        (ms) over the last 30 s (None when idle) and where it went (`path`), totals, dead letters by reason,
        consumer lag."""
        st, now = self._status, time.monotonic()
        recent = list(self._recent)              # a copy in one C call: the finishing thread appends meanwhile
        lat = np.array([x for t, x in recent if now - t <= 30.0]) * 1000
        out = {"events_per_s": round((self._n - st["n"]) / max(1e-9, now - st["t"]), 1), "events": self._n,
               "rejected": self._rejected, "recommendations": self._recs_n,
               "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
               "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
               "path": self._path(now),
               "dead_letters": dict(st["reasons"]),
               "lag": self._lag_total()}
        st["t"], st["n"] = now, self._n
        return out

    def _path_add(self, now: float, n: int, handoff: float, intake: float | None, timings: dict) -> None:
        with self._win_lock:
            self._win.append((now, n, handoff, intake, timings))
            sums, stages = self._win_sums, self._win_sums["stages"]
            sums["messages"] += n
            sums["handoff"] += handoff
            for k, v in timings.items():
                stages[k] = stages.get(k, 0.0) + v

    def _path(self, now: float, window_s: float = 30.0) -> dict | None:
        """Where the last `window_s` of latency went (ms): the events' intake (their Kafka timestamp to the
        consumer handing them over; the median over batches of each batch's median), events per batch, and
        per batch the mean wait between the two threads and of each stage; None when idle."""
        with self._win_lock:
            sums, stages = self._win_sums, self._win_sums["stages"]
            while self._win and now - self._win[0][0] > window_s:
                _, n, handoff, _, timings = self._win.popleft()
                sums["messages"] -= n
                sums["handoff"] -= handoff
                for k, v in timings.items():
                    stages[k] -= v
            if not self._win:
                self._win_sums = {"messages": 0, "handoff": 0.0, "stages": {}}   # no drift across idle spells
                return None
            nb, intake = len(self._win), [b[3] for b in self._win if b[3] is not None]
            return {"batches": nb, "events_per_batch": round(sums["messages"] / nb, 1),
                    "intake_p50_ms": round(1000 * float(np.median(intake)), 2) if intake else None,
                    "handoff_ms": round(1000 * sums["handoff"] / nb, 2),
                    "stages_ms": {k: round(1000 * v / nb, 2) for k, v in sorted(stages.items())}}

    def _lag_total(self) -> int:
        return int(sum(s.value for m in self.lag.collect() for s in m.samples))
