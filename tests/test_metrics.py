"""The worker's Prometheus endpoint serves its counters and histograms."""
import urllib.request

from stream.core.pipeline import BatchResult
from stream.drivers.metrics import WorkerMetrics
from stream.ops.stack import free_port


def test_metrics_endpoint_exposes_worker_series():
    port = free_port()
    m = WorkerMetrics(port=port, log_every_s=0)
    m.observe_batch(3, BatchResult([], [], events=3, applied=2, timings={"profile": 0.01}), [0.02, 0.03, 0.5])
    m.lag.labels("0").set(7)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "recstream_events_total 3.0" in body
    assert "recstream_events_applied_total 2.0" in body
    assert 'recstream_stage_seconds_count{stage="profile"} 1.0' in body
    assert "recstream_event_to_emit_seconds_count 3.0" in body
    assert 'recstream_consumer_lag{partition="0"} 7.0' in body


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
