"""The worker's Prometheus endpoint serves its counters and histograms."""
import time
import urllib.request

from stream.core.pipeline import BatchResult
from stream.drivers.metrics import WorkerMetrics
from stream.ops.stack import free_port


def test_metrics_endpoint_exposes_worker_series():
    port = free_port()
    m = WorkerMetrics(port=port, log_every_s=0)
    m.observe_batch(3, BatchResult([], [], events=3, applied=2, timings={"profile": 0.01}), [0.02, 0.03, 0.5],
                    intake=[0.01, 0.012, 0.3], handoff=0.004)
    m.lag.labels("0").set(7)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "recstream_events_total 3.0" in body
    assert "recstream_events_applied_total 2.0" in body
    assert 'recstream_stage_seconds_count{stage="profile"} 1.0' in body
    assert "recstream_event_to_emit_seconds_count 3.0" in body
    assert "recstream_intake_seconds_count 3.0" in body and "recstream_handoff_wait_seconds_count 1.0" in body
    assert 'recstream_consumer_lag{partition="0"} 7.0' in body


def test_the_rankers_state_and_its_gate_are_exposed():
    """Which order serves is visible: examples learned, 1/0 for the learned order, both orders' gains."""
    import numpy as np

    from stream.core.ranking.feedback import Example
    from stream.core.ranking.ranker import OnlineRanker, RankerConfig
    from stream.core.scoring.features import N_FEATURES
    port = free_port()
    m = WorkerMetrics(port=port, log_every_s=0)
    r = OnlineRanker(RankerConfig.for_spec("lr:learned", min_examples=10))
    r.learn([Example(np.ones(N_FEATURES) * (k % 2), bool(k % 2), 1.0) for k in range(20)])
    r.gate.min_judged = 5
    for _ in range(5):
        r.gate.judge((0.25, 1.0))                  # the base order's lists clearly earned more
    m.observe_ranker(r)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "recstream_ranker_examples_learned 20.0" in body
    assert "recstream_ranker_learned_order 0.0" in body
    assert 'recstream_ranker_gate_gain{order="learned"} 0.25' in body
    assert 'recstream_ranker_gate_gain{order="base"} 1.0' in body
    r.gate.judge((1.0, 0.0))
    r.gate.judge((1.0, 0.0))
    m.observe_ranker(r)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "recstream_ranker_learned_order 1.0" in body
    m.observe_ranker(None)                         # a worker without a ranker: nothing to set, no error


def test_a_fault_in_the_heartbeat_numbers_is_logged_and_the_worker_goes_on(caplog):
    """The heartbeat runs in the worker's consuming loop: a bug in computing its numbers (one was a deque
    mutated during iteration) is logged with its traceback and the beat skipped, never raised."""
    from types import SimpleNamespace

    from stream.drivers.worker import ConfluentWorker

    class Broken:
        def status(self):
            raise RuntimeError("deque mutated during iteration")

    worker = SimpleNamespace(_status_at=-1e9, metrics=Broken())
    ConfluentWorker._heartbeat(worker)
    assert "heartbeat skipped" in caplog.text and "deque mutated" in caplog.text


def test_the_heartbeat_says_where_the_last_30_s_of_latency_went():
    m = WorkerMetrics(log_every_s=3600)
    assert m.status()["path"] is None                       # idle: nothing to say
    for n, wait, cand in ((10, 0.002, 0.004), (30, 0.006, 0.008)):
        m.observe_batch(n, BatchResult([], [], events=n, timings={"candidates": cand, "scoring": 0.003}),
                        [0.03] * n, intake=[0.01] * (n - 1) + [0.05], handoff=wait)
    path = m.status()["path"]
    assert path["batches"] == 2 and path["events_per_batch"] == 20.0
    assert path["intake_p50_ms"] == 10.0                   # each batch's median, then their median
    assert path["handoff_ms"] == 4.0                       # the mean wait between the threads, per batch
    assert path["stages_ms"] == {"candidates": 6.0, "scoring": 3.0}
    later = m._path(time.monotonic() + 31)                  # 30 s on: the window has emptied
    assert later is None and m._win_sums["messages"] == 0
