"""The search side on the real stack: the API's re-rank and trends routes, the re-rank request/reply topics,
the worker teaching the re-ranker from clicks that came through Kafka, and the trends publisher counting
every event exactly once across a restart."""
import threading
from dataclasses import replace

import orjson
import pytest
from conftest import start_worker, wait_for
from fastapi.testclient import TestClient

from stream.core.search.model import SearchModel
from stream.core.storage.store import connect
from stream.data.synth import SynthConfig, SynthShop
from stream.drivers.kafka import create_topics, delete_topics
from stream.ops.consume import records
from stream.ops.produce import produce_events, produce_items

pytestmark = pytest.mark.integration
T0 = 1_733_000_000_000


@pytest.fixture
def search_settings(settings):
    run = settings.group_id
    s = replace(settings, search_requests_topic=f"{run}.sreq", search_results_topic=f"{run}.sres",
                trends_topic=f"{run}.trends", trends_every_s=0.3, trends_window_s=600, encoder_dir="", ranker="off")
    topics = [s.search_requests_topic, s.search_results_topic, s.trends_topic]
    create_topics(s.brokers, topics, 2)
    yield s
    delete_topics(s.brokers, topics)


def _read(topic, brokers, n, timeout=30):
    return list(records(topic, brokers, from_beginning=True, max_records=n, timeout=timeout))


def test_rerank_over_http_and_kafka_learning_through_the_worker_and_trends(search_settings, tmp_path):
    from stream.drivers.api import create_app
    from stream.drivers.search import SearchService, TrendsPublisher
    s = replace(search_settings, model_dir=str(tmp_path / "models"))
    sh = SynthShop(SynthConfig(n_users=40, n_items=150, n_events=1500, seed=4))
    events = list(sh.events())
    produce_items(sh.items, s.items_topic, s.brokers)
    worker = start_worker(s, log=tmp_path / "worker.log")
    trends = TrendsPublisher(s)
    tt = threading.Thread(target=trends.run, daemon=True)
    tt.start()
    try:
        produce_events(enumerate(events, 1), s.events_topic, s.brokers)
        r = connect(s.redis_url)
        user = events[-1]["user_id"]
        wait_for(lambda: r.hexists(f"{s.key_prefix}{{u:{user}}}", "b"), 60, what="the user's profile")
        page = [it["item_id"] for it in sh.items[:12]]
        with TestClient(create_app(s)) as client:
            body = {"user_id": user, "query": "pro phone", "items": [{"item_id": i, "engine_score": 12.0 - n}
                                                                   for n, i in enumerate(page)], "ts": T0 + 10**9}
            got = client.post("/v1/search/rerank", content=orjson.dumps(body))
            assert got.status_code == 200, got.text
            out = got.json()
            assert sorted(x["item_id"] for x in out["items"]) == sorted(page) and out["user_id"] == user
            assert out["rule"].startswith("engine order: the model has learned from 0")
            cold = client.post("/v1/search/rerank", content=orjson.dumps({**body, "user_id": "never-seen"})).json()
            assert cold["rule"] == "engine order: no history"
            bad = client.post("/v1/search/rerank", content=orjson.dumps({**body, "items": [{"item_id": "a"}, {"item_id": "a"}]}))
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "items", "1", "item_id"]

            # the shopper clicks the third item, naming the page; a later event closes the page: the worker learns
            sid = out["search_id"]
            clicked = out["items"][2]["item_id"]
            ts = T0 + 10**9
            follow = [{"event_id": "sr-1", "user_id": user, "item_id": clicked, "type": "click", "ts": ts + 2000,
                       "context": {"search_id": sid}},
                      {"event_id": "sr-2", "user_id": user, "item_id": page[0], "type": "view", "ts": ts + 3_600_000}]
            assert client.post("/v1/events", content=orjson.dumps(follow)).status_code == 202
            model = SearchModel(r, s.key_prefix, ttl_s=0)
            wait_for(lambda: model.examples() == 12, 30, what="the worker learning from the closed page")
            text = client.get("/metrics").text
            assert 'recstream_search_pages{outcome="clicked",rule="learning"} 1.0' in text, text[-800:]

            # trends: published by the publisher beside the worker, served by the API; a bad kind names the field
            def published():
                x = client.get("/v1/trends", params={"kind": "item", "n": 5})
                return x if x.status_code == 200 and x.json()["popular"] else None
            got = wait_for(published, 30, what="published trends")
            assert 1 <= len(got.json()["popular"]) <= 5
            assert client.get("/v1/trends", params={"kind": "brand"}).json()["detail"][0]["loc"] == ["query", "kind"]
            assert _read(s.trends_topic, s.brokers, 1)[0].value

        # the same re-ranking through the request/reply topics, with the request id; bad requests answered or
        # dead-lettered with the reason
        svc = SearchService(s)
        from confluent_kafka import Producer

        from stream.drivers.kafka import producer_conf
        prod = Producer(producer_conf(s.brokers))
        prod.produce(s.search_requests_topic, orjson.dumps({**body, "request_id": "req-1"}), user.encode())
        prod.produce(s.search_requests_topic, orjson.dumps({**body, "request_id": "req-2", "k": "all"}), user.encode())
        prod.produce(s.search_requests_topic, b"{not json", b"x")
        prod.flush(10)
        th = threading.Thread(target=svc.run, kwargs={"max_idle_s": 3.0}, daemon=True)
        th.start()
        th.join(60)
        replies = {orjson.loads(m.value)["request_id"]: orjson.loads(m.value)
                   for m in _read(s.search_results_topic, s.brokers, 2)}
        assert sorted(x["item_id"] for x in replies["req-1"]["items"]) == sorted(page)
        assert replies["req-2"]["error"]["loc"] == ["body", "k"]
        dead = _read(s.dlq_topic, s.brokers, 1)
        assert dead[0].headers["recstream.reason"].startswith(b"message:")
    finally:
        worker.terminate()
        worker.wait(20)
        trends.stop_event.set()
        tt.join(20)


def test_trends_count_every_event_once_across_a_restart(search_settings):
    from stream.drivers.search import TrendsPublisher
    s = search_settings
    sh = SynthShop(SynthConfig(n_users=40, n_items=150, n_events=2000, seed=6))
    events = list(sh.events())

    def run_until_idle(settings):
        pub = TrendsPublisher(settings)
        pub.run(max_idle_s=2.0)
        return pub.tracker

    produce_events(enumerate(events[:1000], 1), s.events_topic, s.brokers)
    run_until_idle(s)
    produce_events(enumerate(events[1000:], 1001), s.events_topic, s.brokers)
    resumed = run_until_idle(s)                               # a new process: state and offsets from Redis
    once = run_until_idle(replace(s, key_prefix=s.key_prefix + "again:", group_id=s.group_id + "-again"))
    assert resumed.now == once.now == max(e["ts"] for e in events)
    n_item = sum(1 for e in events if e.get("item_id"))
    n_query = sum(1 for e in events if e["type"] == "search")
    assert resumed.counted["item"] == once.counted["item"] == n_item          # each event counted once
    assert resumed.counted["query"] == once.counted["query"] == n_query > 0


def test_trends_count_every_event_once_through_a_storm_of_sigkills(search_settings, tmp_path):
    """`recstream trends run` killed at random moments while events arrive, restarted each time: the state
    and the input offsets it covers are one write, so the last run has counted each event exactly once."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT, worker_env

    from stream.core.search.trends import TrendTracker
    from stream.drivers.search import TRENDS_STATE
    s = search_settings
    events = list(SynthShop(SynthConfig(n_users=60, n_items=200, n_events=6000, seed=8)).events())
    cmd = [sys.executable, "-m", "stream.cli", "trends", "run"]
    rnd = random.Random(3)
    kills = 0
    with open(tmp_path / "trends.log", "ab") as log:
        for part in range(6):                     # events arrive in six bursts; the process dies during each
            produce_events(enumerate(events[part * 1000:(part + 1) * 1000], part * 1000 + 1), s.events_topic,
                           s.brokers)
            proc = subprocess.Popen(cmd, env=worker_env(s), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            time.sleep(rnd.uniform(1.5, 4.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        done = subprocess.run(cmd + ["--max-idle", "10"], env=worker_env(s), cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
    assert done.returncode == 0 and kills == 6
    t = TrendTracker(window_s=s.trends_window_s)
    t.load(orjson.loads(connect(s.redis_url).get(s.key_prefix + TRENDS_STATE))["tracker"])
    assert t.counted["item"] == sum(1 for e in events if e.get("item_id"))
    assert t.counted["query"] == sum(1 for e in events if e["type"] == "search")
    assert t.now == max(e["ts"] for e in events)


def test_one_trends_process_at_a_time_holds_the_lease(search_settings):
    from stream.drivers.search import TRENDS_LEASE, TRENDS_STATE, LeaseLost, TrendsPublisher
    s = search_settings
    a, b = TrendsPublisher(s), TrendsPublisher(s)
    assert a.acquire() and not b.acquire()
    a.tracker.add("item", "i1", T0)
    a.publish(None)
    with pytest.raises(LeaseLost):
        b.publish(None)                                    # a second process never overwrites the state
    state = orjson.loads(connect(s.redis_url).get(s.key_prefix + TRENDS_STATE))
    assert state["tracker"]["counted"] == {"item": 1.0}
    client = connect(s.redis_url)
    client.delete(s.key_prefix + TRENDS_LEASE)            # a's lease lapsed (a starved box) and nobody took it:
    a.publish(None)                                       # a wrote the state last, so it takes the lease back
    assert not b.acquire()
    a.release()
    assert b.acquire()
    b.restore()
    assert b.tracker.counted["item"] == 1.0
    b.publish(None)
    client.delete(s.key_prefix + TRENDS_LEASE)            # b's lease lapsed and b wrote since a did:
    with pytest.raises(LeaseLost):
        a.publish(None)                                   # a must not write over b's state
