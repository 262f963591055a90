"""The HTTP API on the real stack: a worker fills Redis from Kafka; the API serves its latest lists
(cached), asks afresh when there is none, finds similar items, takes events (bad ones refused with the
field named, good ones produced to the topic the worker reads), and reports readiness honestly."""
import subprocess
import time
from dataclasses import replace

import orjson
import pytest
from conftest import start_worker, wait_for
from fastapi.testclient import TestClient

from schemas import validate_event
from stream.core.storage.serving import latest_key
from stream.data.synth import SynthConfig, SynthShop
from stream.ops.consume import records
from stream.ops.produce import produce_events, produce_items
from stream.ops.stack import free_port

pytestmark = pytest.mark.integration


def _event(user, n, item="i1", etype="view", ts=1_733_000_000_000):
    return {"event_id": f"api-{user}-{n}", "user_id": user, "item_id": item, "type": etype, "ts": ts + n}


@pytest.fixture
def served(settings, tmp_path):
    """A worker that has processed a small synthetic shop, and a client on the API."""
    from stream.drivers.api import create_app
    sh = SynthShop(SynthConfig(n_users=60, n_items=120, n_events=3000, seed=11))
    events = list(sh.events())
    produce_items(sh.items, settings.items_topic, settings.brokers)
    s = replace(settings, encoder_dir="", model_dir=str(tmp_path / "models"), ranker="off")
    worker = start_worker(s, log=tmp_path / "worker.log")
    try:
        produce_events(enumerate(events, 1), s.events_topic, s.brokers)
        from stream.core.storage.store import connect
        r = connect(s.redis_url)
        users = sorted({e["user_id"] for e in events})
        wait_for(lambda: all(r.exists(latest_key(s.key_prefix, u)) for u in users), 90, what="every user's latest list")
        with TestClient(create_app(s)) as client:
            yield s, client, events, worker
    finally:
        worker.terminate()
        worker.wait(20)


def test_cached_fresh_similar_and_event_ingest(served):
    s, client, events, _ = served
    user = events[-1]["user_id"]
    got = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert got["via"] == "cached" and got["user_id"] == user and 1 <= len(got["items"]) <= 5
    assert got["recommendation_id"].startswith("rec:") and got["model_versions"]["scorer"]
    assert all(it["source"] and it["sources"] for it in got["items"])
    # the hot path (answered before FastAPI) and the FastAPI route (an extra parameter skips the hot path)
    # give the same answer
    slow = client.get(f"/v1/users/{user}/recommendations", params={"k": 5, "other": 1}).json()
    assert {**slow, "age_ms": 0} == {**got, "age_ms": 0}

    # a user the worker never saw: a fresh list from the read-only ask path (what a new user gets)
    fresh = client.get("/v1/users/nobody-yet/recommendations").json()
    assert fresh["via"] == "fresh" and len(fresh["items"]) == 10

    # similar items: co-visitation / co-occurrence from the stream, never the item itself
    item = events[-1]["item_id"]
    sim = client.get(f"/v1/items/{item}/similar", params={"k": 5}).json()
    assert 1 <= len(sim["items"]) <= 5 and item not in [x["item_id"] for x in sim["items"]]
    assert {src for x in sim["items"] for src in x["sources"]} <= {"covisit", "cooccur", "content"}

    # bad input: 422 naming the field; nothing produced
    bad = client.post("/v1/events", content=orjson.dumps({**_event("api-u", 1), "type": "teleport"}))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "type"]
    bad = client.post("/v1/events", content=orjson.dumps([_event("api-u", 1), {**_event("api-u", 2), "ts": "x"}]))
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "1", "ts"]
    assert client.post("/v1/events", content=b"{not json").status_code == 422
    assert client.get(f"/v1/users/{user}/recommendations", params={"k": 0}).status_code == 422

    # good input: produced to the events topic, applied by the worker, served back
    new_user = "api-user:with-colon"
    batch = [_event(new_user, n, item=events[n]["item_id"]) for n in range(3)]
    ok = client.post("/v1/events", content=orjson.dumps(batch))
    assert ok.status_code == 202 and ok.json() == {"accepted": 3}
    one = client.post("/v1/events", content=orjson.dumps(_event(new_user, 3, item=events[3]["item_id"])))
    assert one.status_code == 202
    def cached_list():
        r = client.get(f"/v1/users/{new_user}/recommendations").json()
        return r if r["via"] == "cached" else None
    got = wait_for(cached_list, 30, what="the new user's list from the worker")
    assert got["user_id"] == new_user
    sent = [validate_event(m) for m in _read(s.events_topic, s.brokers, len(events) + 4)]
    assert sum(ev.user_id == new_user for ev in sent) == 4

    # health, readiness (Redis, broker and a fresh worker heartbeat), metrics
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["workers"] >= 1
    text = client.get("/metrics").text
    assert 'recstream_api_recommendations_total{via="cached"}' in text and "recstream_api_seconds_bucket" in text
    assert "recstream_worker_events_per_second{worker=" in text and "recstream_worker_latency_p99_ms{" in text
    assert client.get("/docs").status_code == 200


def _read(topic, brokers, n):
    return [r.value for r in records(topic, brokers, max_records=n, timeout=60)]


def test_readiness_goes_false_when_redis_stops_or_no_worker_beats(settings, tmp_path):
    from stream.drivers.api import create_app
    port = free_port()
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                           stdout=subprocess.DEVNULL)
    try:
        s = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0", encoder_dir="", model_dir=str(tmp_path))
        wait_for(lambda: _pings(s.redis_url), 10, what="the private redis-server")
        with TestClient(create_app(s)) as client:
            body = client.get("/readyz")
            assert body.status_code == 503 and body.json()["redis"] and body.json()["workers"] == 0
            assert body.json()["broker"] is True
            srv.terminate()
            srv.wait(10)
            body = client.get("/readyz")
            assert body.status_code == 503 and body.json()["redis"] is False
            assert client.get("/healthz").status_code == 200
    finally:
        srv.kill()
        srv.wait(10)


def _pings(url):
    import redis
    try:
        return redis.Redis.from_url(url).ping()
    except redis.RedisError:
        time.sleep(0.1)
        return False


def test_concurrent_fresh_asks_are_answered_together_and_the_same_as_alone(redis_client, stack):
    import asyncio
    import uuid

    from schemas import validate_event, validate_item
    from stream.config.compose import assemble
    from stream.drivers.api_batch import AskBatcher
    prefix = f"rs:batch{uuid.uuid4().hex[:6]}:"
    pipeline = assemble(redis_client, prefix)
    sh = SynthShop(SynthConfig(n_users=40, n_items=100, n_events=1500, seed=4))
    pipeline.catalog.upsert([validate_item(it) for it in sh.items])
    events = [validate_event(e) for e in sh.events()]
    pipeline.process_events(events)
    users = sorted({e.user_id for e in events})[:30]
    batcher = AskBatcher(pipeline, prefix)
    try:
        alone = {u: batcher.answer([(u, 5, None)])[0] for u in users}

        async def together():
            return await asyncio.gather(*(batcher.ask(u, 5, None) for u in users))
        before = batcher.batches
        got = asyncio.run(together())
        assert dict(zip(users, got)) == alone and all(len(items) == 5 for items, _ in got)
        assert batcher.batches - before < len(users)          # waiting requests were answered together
    finally:
        batcher.close()
        for k in redis_client.scan_iter(f"{prefix}*", count=5000):
            redis_client.delete(k)
