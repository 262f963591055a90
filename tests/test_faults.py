"""The fault suite, on a real broker and real redis-servers of its own: poison and hostile messages never
stop the worker (same PID; sent = applied + dead-lettered), a Redis restart and a broker outage mid-stream
are survived without a restart with nothing lost or doubled, a wiped Redis is rebuilt to profiles identical
to an uninterrupted run, and users whose ids collide as text stay separate."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace

import orjson
import pytest
import redis
from confluent_kafka import Producer
from conftest import ROOT, start_worker, wait_for, worker_env

from schemas import Rejected, validate_event
from stream.config.settings import Settings
from stream.core.storage.store import Keys, profile_fields, user_profile_dump
from stream.data.synth import SynthConfig, SynthShop
from stream.drivers.kafka import create_topics, producer_conf
from stream.ops import stack as st
from stream.ops.consume import records
from stream.ops.produce import produce_events, produce_items

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    """A broker and a redis-server (with an append-only file, fsync always: a restart loses nothing) that
    this module may stop, pause and wipe."""
    d = tmp_path_factory.mktemp("faults")
    cfg = st.StackConfig(d, broker_port=st.free_port(), redis_port=st.free_port())
    st.up(cfg, tied=True)
    red = st._services(cfg)[1]
    red.stop()
    argv = [st.redis_binary(), "--port", str(cfg.redis_port), "--bind", cfg.host, "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--protected-mode", "no", "--dir", str(d.resolve())]
    red.start(argv, tied=True)
    wait_for(lambda: st.port_open(cfg.host, cfg.redis_port), what="private redis")
    try:
        yield cfg, red, argv
    finally:
        st.down(cfg)


@pytest.fixture
def fs(private):
    cfg = private[0]
    run = uuid.uuid4().hex[:8]
    s = Settings(brokers=cfg.brokers, redis_url=cfg.redis_url, events_topic=f"f{run}.events",
                 items_topic=f"f{run}.items", recs_topic=f"f{run}.recs", dlq_topic=f"f{run}.dlq",
                 group_id=f"g{run}", key_prefix=f"rs:{run}:", session_timeout_ms=2000, metrics_port=0,
                 log_every_s=60.0, batch_size=200)
    create_topics(s.brokers, [s.events_topic, s.items_topic, s.recs_topic, s.dlq_topic], 4)
    return s


def client(s):
    return redis.Redis.from_url(s.redis_url, socket_timeout=10)


def applied(c, prefix, users) -> int:
    """Events applied to these users' profiles (their n:{type} counters); -1 while Redis is away."""
    try:
        return _applied(c, prefix, users)
    except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError, redis.exceptions.TimeoutError):
        return -1


def _applied(c, prefix, users) -> int:
    return sum(int(v) for h in profile_fields(c, prefix, list(users)) for k, v in h.items()
               if k.startswith("n:") and k != "n:bot_flagged")


def profiles(c, prefix, users) -> dict:
    return {u: user_profile_dump(c, prefix, u) for u in sorted(users)}


def dlq_count(s) -> list:
    return list(records(s.dlq_topic, s.brokers, until_eof=True, timeout=20))


def catalog_loaded(s, items) -> None:
    """Wait until the worker applied the catalog, so events find their items' category and brand (as in
    the reference run and in `rebuild`, which both load the catalog first)."""
    c = client(s)
    wait_for(lambda: c.exists(Keys(s.key_prefix).item(items[-1]["item_id"])), timeout=60, what="the catalog")


def reference_profiles(s, users, n_events, items) -> dict:
    """An uninterrupted run over the same events topic, in-process, under its own prefix and group, with the
    catalog loaded first."""
    from schemas import validate_item
    from stream.config.compose import build_pipeline
    from stream.core.storage.catalog import Catalog
    from stream.drivers.worker import ConfluentWorker
    ref = replace(s, key_prefix=s.key_prefix + "ref:", group_id=s.group_id + "-ref")
    Catalog(client(s), ref.key_prefix).upsert([validate_item(i) for i in items])
    w = ConfluentWorker(ref, build_pipeline(ref, ranker=False))
    t = threading.Thread(target=w.run, kwargs={"max_idle_s": 3.0})
    t.start()
    c = client(s)
    wait_for(lambda: applied(c, ref.key_prefix, users) >= n_events, timeout=120, what="the reference run")
    w.stop_event.set()
    t.join(30)
    return profiles(c, ref.key_prefix, users)


def hostile(rng: random.Random, good: list[dict], n: int) -> list[bytes | None]:
    """Generated hostile messages: random bytes, truncations, wrong types at every field, duplicate keys."""
    out: list[bytes | None] = [None, b"", b"null", b"[]", b"{}"]
    junk = [[1], {"a": 1}, None, True, -1, 1e308, 2 ** 64, "", "x" * 300, "a\u200bb", "\x00"]
    while len(out) < n:
        ev = dict(rng.choice(good))
        kind = rng.randrange(4)
        if kind == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))))
        elif kind == 1:
            raw = orjson.dumps(ev)
            out.append(raw[: rng.randrange(1, len(raw) - 1)])
        elif kind == 2:
            ev[rng.choice(["event_id", "user_id", "item_id", "type", "ts", "price", "quantity", "context", "v"])] = \
                rng.choice(junk)
            try:
                out.append(orjson.dumps(ev))
            except orjson.JSONEncodeError:
                out.append(b'{"price": 18446744073709551616}')
        else:
            out.append(orjson.dumps(ev)[:-1] + b',"user_id":"someone-else"}')
    return out


def test_poison_and_hostile_messages_never_stop_the_worker(fs, tmp_path):
    s = fs
    sh = SynthShop(SynthConfig(n_users=120, n_items=200, n_events=2500, seed=21))
    events = list(sh.events())
    rng = random.Random(7)
    produce_items(sh.items, s.items_topic, s.brokers)
    c = client(s)
    # a user whose profile key is corrupt (a bug, not bad input): their events fail in the profile stage
    victim = "victim"
    c.set(Keys(s.key_prefix).user(victim), "not a hash")
    t0 = events[0]["ts"]
    special = [
        # ids that would have collided as text: each must land in its own keys
        {"event_id": "c1", "user_id": "u1", "item_id": "x1", "type": "view", "ts": t0},
        {"event_id": "c1", "user_id": "u1:aff", "item_id": "x2", "type": "click", "ts": t0 + 1},  # same event id
        {"event_id": "c2", "user_id": "u1:seq", "item_id": "x3", "type": "view", "ts": t0 + 2},
        {"event_id": "c3", "user_id": "{u:u1}", "item_id": "x4", "type": "view", "ts": t0 + 3},
        {"event_id": "c4", "user_id": "u1", "item_id": "x5", "type": "purchase", "ts": t0 + 4},
    ] + [{"event_id": f"v{i}", "user_id": victim, "item_id": "x9", "type": "view", "ts": t0 + i} for i in range(3)]
    valid = events + special
    # generated hostile messages; the few that happen to be valid (a null price, say) are copies of events
    # already sent, which the per-user idempotency guard applies once, so they are not counted as bad
    bad = [b for b in hostile(rng, events, 600) if isinstance(validate_event(b), Rejected)]
    assert len(bad) > 450
    worker = start_worker(s, log=tmp_path / "worker.log")
    pid = worker.pid
    try:
        p = Producer(producer_conf(s.brokers))
        mixed = [(orjson.dumps(e), e["user_id"].encode()) for e in valid] + [(b, b"hostile") for b in bad]
        rng.shuffle(mixed)
        # per-user order matters for the profiles: keep each user's events in their original order
        order = {}
        for e in valid:
            order.setdefault(e["user_id"], []).append(orjson.dumps(e))
        it = {u: iter(v) for u, v in order.items()}
        for value, key in mixed:
            if key != b"hostile":
                value = next(it[key.decode()])
            p.produce(s.events_topic, value, key)
            p.poll(0)
        assert p.flush(30) == 0
        users = {e["user_id"] for e in valid}
        n_victim = 3
        wait_for(lambda: applied(c, s.key_prefix, users - {victim}) >= len(valid) - n_victim, timeout=120,
                 what="every valid event applied")
        dead = wait_for(lambda: (lambda d: d if len(d) >= len(bad) + n_victim else None)(dlq_count(s)),
                        timeout=60, what="every bad message dead-lettered")
        assert worker.poll() is None and worker.pid == pid, "the worker stopped"
        time.sleep(2)   # nothing more arrives: applied is exact, not at least
        assert applied(c, s.key_prefix, users - {victim}) == len(valid) - n_victim
        dead = dlq_count(s)
        assert len(dead) == len(bad) + n_victim                   # sent = applied + dead-lettered
        stages = [r.headers.get("recstream.stage") for r in dead]
        assert stages.count(b"profile") == n_victim and stages.count(b"validate") == len(bad)
        for r in dead:
            reason = r.headers.get("recstream.reason", b"")
            assert reason and len(reason) <= 400 and b":" in reason, r
            assert int(r.headers["recstream.source.offset"]) >= 0 and int(r.headers["recstream.source.partition"]) >= 0
        # colliding ids stay separate
        seqs = {u: [x.decode() for x in user_profile_dump(c, s.key_prefix, u)["seq"]]
                for u in ("u1", "u1:aff", "u1:seq", "{u:u1}")}
        assert seqs["u1"][:2] == ["x5", "x1"] or seqs["u1"][0] == "x5", seqs
        assert "x2" not in seqs["u1"] and seqs["u1:aff"][0] == "x2" and seqs["u1:seq"][0] == "x3"
        assert seqs["{u:u1}"][0] == "x4"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_redis_restart_and_broker_outage_mid_stream_lose_and_double_nothing(fs, private, tmp_path):
    s = fs
    cfg, red, argv = private
    sh = SynthShop(SynthConfig(n_users=300, n_items=300, n_events=6000, seed=33))
    events = list(sh.events())
    users = {e["user_id"] for e in events}
    produce_items(sh.items, s.items_topic, s.brokers)
    c = client(s)
    worker = start_worker(s, log=tmp_path / "worker.log")
    pid = worker.pid
    catalog_loaded(s, sh.items)
    sender = threading.Thread(target=produce_events, args=(enumerate(events, 1), s.events_topic, s.brokers),
                              kwargs={"rate": 400}, daemon=True)
    sender.start()
    try:
        wait_for(lambda: applied(c, s.key_prefix, users) > 800, timeout=60, what="progress before the Redis restart")
        red.stop()                                     # SIGTERM: redis-server flushes its append-only file
        time.sleep(2)
        red.start(argv, tied=True)
        wait_for(lambda: st.port_open(cfg.host, cfg.redis_port), what="redis back")
        c = client(s)
        wait_for(lambda: applied(c, s.key_prefix, users) > 3000, timeout=90, what="progress after the Redis restart")
        broker_pid = st._services(cfg)[0].pid()
        os.kill(broker_pid, signal.SIGSTOP)            # the broker stops answering (its data stays)
        time.sleep(8)
        os.kill(broker_pid, signal.SIGCONT)
        sender.join(120)
        wait_for(lambda: applied(c, s.key_prefix, users) >= len(events), timeout=120, what="every event applied")
        assert worker.poll() is None and worker.pid == pid, "the worker restarted or died"
        time.sleep(2)
        assert applied(c, s.key_prefix, users) == len(events)          # nothing doubled
        assert profiles(c, s.key_prefix, users) == reference_profiles(s, users, len(events), sh.items)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    log = (tmp_path / "worker.log").read_text()
    assert "redis outage" in log and "redis recovered" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_wiped_redis_is_refused_then_rebuilt_to_identical_profiles(fs, tmp_path):
    s = fs
    sh = SynthShop(SynthConfig(n_users=200, n_items=250, n_events=4000, seed=44))
    events = list(sh.events())
    first, second = events[:2500], events[2500:]
    users = {e["user_id"] for e in events}
    produce_items(sh.items, s.items_topic, s.brokers)
    c = client(s)
    worker = start_worker(s, log=tmp_path / "worker.log")
    try:
        catalog_loaded(s, sh.items)
        produce_events(enumerate(first, 1), s.events_topic, s.brokers)
        wait_for(lambda: applied(c, s.key_prefix, users) >= len(first), timeout=90, what="the first part applied")
        for k in c.scan_iter(match=s.key_prefix + "*", count=1000):   # Redis loses this deployment's data
            c.delete(k)
        produce_events(enumerate(second, 1), s.events_topic, s.brokers)
        time.sleep(4)
        assert _applied(c, s.key_prefix, users) == 0, "the worker wrote into an emptied store"
        assert worker.poll() is None
        out = subprocess.run([sys.executable, "-m", "stream.cli", "rebuild", "-q"], env=worker_env(s), cwd=ROOT,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        assert f"{len(events):,} events read" in out.stdout or "events read" in out.stdout, out.stdout
        wait_for(lambda: applied(c, s.key_prefix, users) >= len(events), timeout=90, what="the worker resumed")
        time.sleep(2)
        assert applied(c, s.key_prefix, users) == len(events)
        assert c.hgetall(Keys(s.key_prefix).item(sh.items[0]["item_id"])), "the catalog was not restored"
        assert profiles(c, s.key_prefix, users) == reference_profiles(s, users, len(events), sh.items)
        again = subprocess.run([sys.executable, "-m", "stream.cli", "rebuild", "-q", "--force"], env=worker_env(s),
                               cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0 and ", 0 applied" in again.stdout, again.stdout   # idempotent
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    log = (tmp_path / "worker.log").read_text()
    assert "store outage" in log and "recstream rebuild" in log and "store recovered" in log, log[-3000:]
