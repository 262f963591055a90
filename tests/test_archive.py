"""The event archive (Parquet, date-partitioned), the registry's decisions (promote, rollback, history), and the
archive sink on the real stack: every accepted event kept once, a crash before the flush loses nothing."""
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, wait_for, worker_env

from schemas import Event
from stream.core.storage.registry import Registry, RegistryError
from stream.data.adapters import guess_format, open_log
from stream.data.archive import ArchiveWriter, archive_span, read_archive
from stream.data.synth import SynthConfig, SynthShop
from stream.ops.produce import produce_events

DAY = 86_400_000
T0 = 1_764_720_000_000      # 2025-12-03T00:00Z


def test_every_field_round_trips_and_days_partition(tmp_path):
    evs = [Event("e1", "u:1", "i1", "purchase", T0 + 5, session_id="s", price=9.5, quantity=2,
                 context={"category": "shoes", "brand": "x"}),
           Event("e2", "u2", None, "search", T0 + DAY, query="red shoes"),
           Event("e3", "u2", "i3", "view", T0 + DAY + 1)]
    w = ArchiveWriter(tmp_path)
    w.add(evs)
    assert w.flush() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2025-12-03", "date=2025-12-04"]
    assert read_archive(tmp_path) == evs
    assert [e.event_id for e in read_archive(tmp_path, since_ts=T0 + DAY)] == ["e2", "e3"]
    assert archive_span(tmp_path) == (T0 + 5, T0 + DAY + 1, 3)
    assert guess_format(tmp_path) == "archive"
    assert [r["event_id"] for _, r in open_log(tmp_path).events()] == ["e1", "e2", "e3"]


def test_a_repeated_flush_is_read_once_and_retention_prunes_by_event_time(tmp_path):
    w = ArchiveWriter(tmp_path, retention_days=2)
    batch = [Event(f"e{d}", "u1", "i1", "view", T0 + d * DAY) for d in range(3)]
    for _ in range(2):                       # a crash after the flush, before the commit: the same events again
        w.add(batch)
        w.flush()
    assert len(list(tmp_path.rglob("*.parquet"))) == 3          # same content, same file names
    w.add([Event("e1b", "u2", "i1", "view", T0 + DAY + 1)])      # the same day, another file
    w.flush()
    assert [e.event_id for e in read_archive(tmp_path)] == ["e0", "e1", "e1b", "e2"]
    w.add([Event("late", "u1", "i2", "view", T0 + 4 * DAY)])
    w.flush()                                # newest day is day 4: days before day 2 go
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2025-12-05", "date=2025-12-07"]


def test_registry_rollback_walks_back_and_logs_every_decision(tmp_path):
    reg = Registry(tmp_path)
    for v in ("v1", "v2", "v3"):
        (reg.root / v).mkdir(parents=True)
        (reg.root / v / "manifest.json").write_text('{"version": "%s", "seq": %s}' % (v, v[1]))
    with pytest.raises(RegistryError):
        reg.rollback()                       # nothing in service
    reg.promote("v1")
    reg.promote("v2", reason="shadow win")
    reg.promote("v3")
    assert reg.rollback() == "v2" and reg.promoted() == "v2"
    assert reg.rollback() == "v1" and reg.promoted() == "v1"
    with pytest.raises(RegistryError, match="replaced no earlier version"):
        reg.rollback()
    reg.annotate("v3", decision="kept out")
    assert '"decision": "kept out"' in (reg.root / "v3" / "manifest.json").read_text()
    actions = [(h["action"], h["version"]) for h in reg.history()]
    assert actions == [("promote", "v1"), ("promote", "v2"), ("promote", "v3"), ("rollback", "v2"),
                       ("rollback", "v1")]


@pytest.mark.integration
def test_archive_sink_keeps_every_accepted_event_once_across_a_kill(settings, tmp_path):
    """Events and malformed messages in; the sink SIGKILLed mid-stream and restarted: the archive holds each
    accepted event exactly once, and nothing that the worker would dead-letter."""
    shop = SynthShop(SynthConfig(n_users=200, n_items=100, n_events=6000, seed=5))
    events = list(shop.events())
    archive = tmp_path / "archive"
    env = {**worker_env(settings), "RECSTREAM_ARCHIVE_DIR": str(archive)}
    argv = [sys.executable, "-m", "stream.cli", "archive", "--roll-s", "0.5"]
    log = open(tmp_path / "a.log", "ab")
    sink = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        produce_events(enumerate(events[:3000], 1), settings.events_topic, settings.brokers)
        produce_events(enumerate([b"not json", b'{"event_id": "x"}'], 1), settings.events_topic, settings.brokers,
                       validate=False)
        wait_for(lambda: archive.exists() and len(read_archive(archive)) > 500, timeout=60, what="a first flush")
        os.kill(sink.pid, signal.SIGKILL)
        sink.wait(10)
        produce_events(enumerate(events[3000:], 3001), settings.events_topic, settings.brokers)
        sink = subprocess.Popen(argv + ["--max-idle", "3"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        assert sink.wait(90) == 0
    finally:
        if sink.poll() is None:
            sink.kill()
    got = read_archive(archive)
    assert sorted((e.user_id, e.event_id) for e in got) == sorted((e["user_id"], e["event_id"]) for e in events)
    assert [e.ts for e in got] == sorted(e.ts for e in got)
