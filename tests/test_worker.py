"""The streaming worker on the real stack: recommendations for every user, dead letters with reasons,
exact recovery after SIGKILL, and two workers sharing the partitions."""
import signal
import threading
import time
from collections import Counter

import orjson
import pytest
from conftest import start_worker, stop_process, wait_for

from schemas import Rejected, validate_item, validate_recommendation
from stream.core.storage.store import profile_fields, user_profile_dump
from stream.data.synth import SynthConfig, SynthShop
from stream.ops.consume import records
from stream.ops.produce import produce_events, produce_items

pytestmark = pytest.mark.integration

BAD = [
    b'{"event_id": "bad-1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": 1730000000}',
    b'{"event_id": "bad-2", "user_id": "u1", "item_id": "i1", "type": "teleport", "ts": 1730000000000}',
    b"\xff\xfe not utf-8",
    b'{"event_id": "bad-4", "user_id": "u1", "item_id": "i1", "type": "view"}',
]


class Collector:
    """Reads a topic in the background until stopped."""

    def __init__(self, topic, brokers):
        self.items, self._stop = [], threading.Event()
        self._t = threading.Thread(target=self._run, args=(topic, brokers), daemon=True)
        self._t.start()

    def _run(self, topic, brokers):
        for rec in records(topic, brokers, stop=self._stop.is_set):
            self.items.append(rec)

    def stop(self):
        self._stop.set()
        self._t.join(30)
        assert not self._t.is_alive(), "the collector's consumer did not close"


def shop(n_events, seed=5):
    return SynthShop(SynthConfig(n_users=max(50, n_events // 10), n_items=max(100, n_events // 20),
                                 n_events=n_events, seed=seed))


def test_20k_events_every_user_gets_valid_recommendations_and_bad_input_is_dead_lettered(store_settings, tmp_path):
    settings = store_settings                     # a single Redis, then the 3-master cluster
    sh = shop(20_000)
    events = list(sh.events())
    users = {e["user_id"] for e in events}
    produce_items(sh.items, settings.items_topic, settings.brokers)
    recs, dlq = Collector(settings.recs_topic, settings.brokers), Collector(settings.dlq_topic, settings.brokers)
    worker = start_worker(settings, log=tmp_path / "worker.log")
    try:
        # bad messages in the middle of the stream: the worker must keep going past them
        produce_events(enumerate(events[:10_000], 1), settings.events_topic, settings.brokers)
        produce_events(enumerate(BAD, 1), settings.events_topic, settings.brokers, validate=False)
        produce_events(enumerate(events[10_000:], 1), settings.events_topic, settings.brokers)
        wait_for(lambda: {orjson.loads(r.value)["user_id"] for r in recs.items} >= users and len(dlq.items) >= len(BAD),
                 timeout=180, what="a recommendation for every user and every dead letter")
        assert worker.poll() is None, "worker died"
    finally:
        code = stop_process(worker)
        recs.stop()
        dlq.stop()
    assert code == 0                    # graceful: finishes the batch, commits, leaves the group
    parsed = [validate_recommendation(r.value) for r in recs.items]
    assert not [p for p in parsed if isinstance(p, Rejected)]
    assert all(r.key == p.user_id.encode() for r, p in zip(recs.items, parsed))
    by_user = {}
    for p in parsed:
        by_user[p.user_id] = p
    assert all(len(p.items) > 0 for p in by_user.values())
    assert all(p.model_versions["scorer"] == "fallback-v1+ranker-gbdt" for p in parsed)
    # coalescing: fewer recommendations than events
    assert len(parsed) < len(events)
    # dead letters: original bytes, a reason naming the field, where it came from
    assert sorted(r.value for r in dlq.items) == sorted(BAD)
    reasons = {r.value: r.headers["recstream.reason"].decode() for r in dlq.items}
    assert reasons[BAD[0]].startswith("ts: 1730000000 looks like seconds")
    assert reasons[BAD[1]].startswith("type: 'teleport'")
    assert reasons[BAD[2]].startswith("message: invalid UTF-8")
    assert reasons[BAD[3]] == "ts: required field is missing"
    assert all(r.headers["recstream.source.topic"] == settings.events_topic.encode() for r in dlq.items)


def _all_profiles(client, prefix, users):
    return {u: user_profile_dump(client, prefix, u) for u in sorted(users)}


def _applied(client, prefix, users):
    return sum(int(v) for h in profile_fields(client, prefix, list(users)) for k, v in h.items()
               if k.startswith("n:") and k != "n:bot_flagged")


def test_sigkill_storm_ends_with_identical_profiles_and_shared_statistics(store_settings, tmp_path):
    """A 50k-event log; a worker SIGKILLed ten times at random points of the log, restarted each time in the same group;
    the end state equals an uninterrupted run's: every profile byte for byte, every shared statistic
    (co-visitation, co-occurrence, popularity exactly; trending to float rounding). On a single Redis and on
    the 3-master cluster. The co-visitation cap is raised so that no set is cut back: which weak members
    survive a cut depends on the batch boundaries (asserted: no trim in either run)."""
    import random
    from dataclasses import replace

    from stream.config.compose import build_pipeline
    from stream.core.storage.catalog import Catalog
    from stream.core.storage.store import connect, shared_differences, shared_dump, shared_trims
    from stream.drivers.worker import ConfluentWorker
    s = replace(store_settings, covis_cap=5000, ranker="off")   # (the ranker's restart is tested on its own below)
    client = connect(s.redis_url)
    sh = shop(50_000, seed=9)
    events = list(sh.events())
    users = {e["user_id"] for e in events}
    items = [validate_item(i) for i in sh.items]
    produce_events(enumerate(events, 1), s.events_topic, s.brokers)

    # reference: an uninterrupted run
    ref = replace(s, key_prefix=s.key_prefix + "ref:", group_id=s.group_id + "-ref")
    Catalog(client, ref.key_prefix).upsert(items)
    w = ConfluentWorker(ref, build_pipeline(ref))
    t = threading.Thread(target=w.run, kwargs={"max_idle_s": 3.0})
    t.start()
    wait_for(lambda: _applied(client, ref.key_prefix, users) == len(events), timeout=240, interval=1.0,
             what="reference run")     # (a poll reads every user: not too often)
    w.stop_event.set()
    t.join(30)
    lags = [w.metrics.registry.get_sample_value("recstream_consumer_lag", {"partition": str(p)}) for p in range(4)]
    assert any(v is not None and v >= 0 for v in lags), lags   # lag from the fetch high watermark is exported
    expected = _all_profiles(client, ref.key_prefix, users)
    expected_shared = shared_dump(client, ref.key_prefix)
    assert expected_shared and shared_trims(client, ref.key_prefix) == 0

    # the same log, a worker killed ten times at random moments
    Catalog(client, s.key_prefix).upsert(items)
    rnd, at_kills = random.Random(7), []
    # where the kills land: ten random points of the log at least 4,000 events apart (a time-based moment would
    # land after the end once the worker is fast enough), each a random few ms after that point is reached
    targets = sorted(rnd.sample(range(2_000, len(events) - 6_000, 4_000), 10))
    for k, target in enumerate(targets):
        before = _applied(client, s.key_prefix, users)
        worker = start_worker(s, log=tmp_path / f"w{k}.log")
        try:
            wait_for(lambda b=before: _applied(client, s.key_prefix, users) > b, timeout=90, interval=0.3,
                     what=f"progress after start {k}")
            wait_for(lambda t=target: _applied(client, s.key_prefix, users) >= t, timeout=90, interval=0.2,
                     what=f"event {target} applied")
            time.sleep(rnd.uniform(0.0, 0.05))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
        at_kills.append(_applied(client, s.key_prefix, users))
    assert at_kills[-1] < len(events), f"the kills landed after the end: {at_kills}"
    last = start_worker(s, log=tmp_path / "last.log")
    try:
        wait_for(lambda: _applied(client, s.key_prefix, users) >= len(events), timeout=240, interval=1.0,
                 what="the restarted worker to finish")
        deadline = time.monotonic() + 30               # the last batch's shared writes follow its profiles
        while shared_differences(shared_dump(client, s.key_prefix), expected_shared) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop_process(last)
    assert _applied(client, s.key_prefix, users) == len(events)   # nothing double-counted
    assert _all_profiles(client, s.key_prefix, users) == expected
    got = shared_dump(client, s.key_prefix)
    bad = shared_differences(got, expected_shared)
    assert shared_trims(client, s.key_prefix) == 0
    assert not bad, (len(bad), {k: {m: (got.get(k, {}).get(m), expected_shared.get(k, {}).get(m))
                                    for m in set(got.get(k, {})) | set(expected_shared.get(k, {}))
                                    if got.get(k, {}).get(m) != expected_shared.get(k, {}).get(m)} for k in bad[:5]})


def test_two_workers_share_partitions_and_cover_every_user(store_settings, tmp_path):
    from dataclasses import replace
    # a single Redis, then the 3-master cluster; a session timeout that a starved CI box cannot miss: a member
    # dropped mid-run would move its partitions, and its users, to the other worker
    settings = replace(store_settings, session_timeout_ms=10_000)
    sh = shop(6_000, seed=13)
    events = list(sh.events())
    users = {e["user_id"] for e in events}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    workers = [start_worker(settings, log=lg) for lg in logs]
    recs = Collector(settings.recs_topic, settings.brokers)
    try:
        # both joined and each holds some events partitions before anything is produced
        wait_for(lambda: all(f"{settings.events_topic}[" in lg.read_text() for lg in logs if lg.exists())
                 and all(lg.exists() for lg in logs), timeout=60, what="both workers assigned")
        produce_events(enumerate(events, 1), settings.events_topic, settings.brokers)
        wait_for(lambda: {orjson.loads(r.value)["user_id"] for r in recs.items} >= users, timeout=120,
                 what="every user covered")
    finally:
        for w in workers:               # both stop together: a group that rebalances onto a leaving worker waits
            w.send_signal(signal.SIGTERM)
        codes = [stop_process(w) for w in workers]
        recs.stop()
    assert codes == [0, 0]
    per_worker = Counter(r.headers["recstream.worker"] for r in recs.items)
    assert len(per_worker) == 2, per_worker
    # a user is served by one worker only (keyed partitions)
    owner = {}
    for r in recs.items:
        u = orjson.loads(r.value)["user_id"]
        assert owner.setdefault(u, r.headers["recstream.worker"]) == r.headers["recstream.worker"]


@pytest.mark.parametrize("model", ["gbdt", "lr"])
def test_ranker_learns_checkpoints_and_survives_restart_a_corrupt_checkpoint_is_rejected(settings, redis_client,
                                                                                          tmp_path, model):
    """The worker's online ranker: a corrupted checkpoint is rejected with a clear log line (the worker
    starts from scratch and serves); what it learns is checkpointed (periodically and at SIGTERM)
    and a restarted worker carries on from it."""
    from dataclasses import replace

    from stream.core.scoring.features import FEATURE_NAMES
    s = replace(settings, ranker=model, ranker_checkpoint_s=1.0)
    key = f"{s.key_prefix}ranker:{s.group_id}:{model}"
    redis_client.hset(key, mapping={"format": "recstream-ranker/1", "features": ",".join(FEATURE_NAMES),
                                    "model": model, "sha256": "0" * 64, "payload": b"not a pickle", "version": 7})
    sh = shop(8_000, seed=21)
    events = list(sh.events())
    produce_items(sh.items, s.items_topic, s.brokers)
    recs = Collector(s.recs_topic, s.brokers)

    def learned():
        v = redis_client.hget(key, "n_learned")
        return int(v) if v is not None else 0

    try:
        _ranker_restart_scenario(s, redis_client, tmp_path, key, events, recs, learned, model)
    finally:
        recs.stop()


def _ranker_restart_scenario(s, redis_client, tmp_path, key, events, recs, learned, model):
    def trickle(evs):      # a live stream, not one burst: many batches, so lists are shown and then acted on
        for i in range(0, len(evs), 250):
            produce_events(enumerate(evs[i: i + 250], i + 1), s.events_topic, s.brokers)
            time.sleep(0.25)

    first = start_worker(s, log=tmp_path / "w1.log")
    try:
        trickle(events[:4_000])
        wait_for(lambda: learned() > 0, timeout=120, what="a checkpoint of a ranker that learned something")
    finally:
        code = stop_process(first)
    assert code == 0
    log1 = (tmp_path / "w1.log").read_text()
    assert f"ranker checkpoint {key} v7 rejected" in log1 and "checksum" in log1
    at_stop = learned()
    assert int(redis_client.hget(key, "version")) > 7

    second = start_worker(s, log=tmp_path / "w2.log")
    try:
        wait_for(lambda: "ranker restored" in (tmp_path / "w2.log").read_text(), timeout=60, what="restore")
        trickle(events[4_000:])
        wait_for(lambda: learned() > at_stop, timeout=120, what="more learning after the restart")
    finally:
        code = stop_process(second)
        recs.stop()
    assert code == 0
    assert f"({at_stop} examples learned)" in (tmp_path / "w2.log").read_text()
    parsed = [validate_recommendation(r.value) for r in recs.items]
    served = [int(p.model_versions["ranker"].split("@")[1]) for p in parsed]
    assert parsed[-1].model_versions["scorer"] == f"fallback-v1+ranker-{model}"
    assert max(served) > at_stop          # the second worker went on from the checkpoint, not from zero
    assert any("ranker" in it.scores and "fallback" in it.scores for p in parsed for it in p.items)


def test_faust_driver_serves_users_and_dead_letters_name_partition_and_offset(settings, tmp_path):
    """The faust driver runs the same pipeline stages; its dead letters keep the source key, partition and
    offset (faust events, not bare values)."""
    sh = shop(600, seed=9)
    events = list(sh.events())
    users = {e["user_id"] for e in events}
    produce_items(sh.items, settings.items_topic, settings.brokers)
    recs, dlq = Collector(settings.recs_topic, settings.brokers), Collector(settings.dlq_topic, settings.brokers)
    worker = start_worker(settings, "--driver", "faust", log=tmp_path / "faust.log")
    try:
        produce_events(enumerate(events, 1), settings.events_topic, settings.brokers)
        produce_events(enumerate(BAD, 1), settings.events_topic, settings.brokers, validate=False)
        wait_for(lambda: len(dlq.items) >= len(BAD) and
                 {orjson.loads(r.value)["user_id"] for r in recs.items} >= users, timeout=90,
                 what="faust: every user served and every bad message dead-lettered")
    finally:
        stop_process(worker)
        recs.stop()
        dlq.stop()
    for rec in dlq.items:
        h = rec.headers
        assert h["recstream.source.topic"].decode() == settings.events_topic
        assert int(h["recstream.source.partition"]) >= 0 and int(h["recstream.source.offset"]) >= 0
        assert h["recstream.stage"] == b"validate" and h["recstream.reason"]


def test_repeated_sigterm_still_ends_in_a_graceful_exit(settings, tmp_path):
    # an operator (or a supervisor) that sends SIGTERM again while the worker is already stopping: the
    # worker still finishes, commits and exits 0, even when a signal lands during interpreter teardown
    log = tmp_path / "w.log"
    worker = start_worker(settings, "--max-idle", "600", log=log)
    try:
        wait_for(lambda: log.exists() and f"{settings.events_topic}[" in log.read_text(), timeout=60,
                 what="the worker assigned")
        while worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            time.sleep(0.005)
        code = worker.wait(30)
    finally:
        stop_process(worker)
    assert code == 0, log.read_text()[-2000:]
