"""produce -> consume through the real broker: nothing lost, nothing duplicated, per-user order kept;
bad lines reported with line numbers and not sent."""
import subprocess
import sys
from collections import defaultdict

import orjson
import pytest
from conftest import ROOT, worker_env

from stream.data.synth import SynthConfig, SynthShop
from stream.ops.consume import records
from stream.ops.produce import produce_events

pytestmark = pytest.mark.integration


def test_50k_round_trip_keeps_everything_in_user_order(settings):
    events = list(SynthShop(SynthConfig(n_users=3000, n_items=1000, n_events=50_000, seed=11)).events())
    report = produce_events(enumerate(events, 1), settings.events_topic, settings.brokers)
    assert report.sent == 50_000 and report.failed == 0 and not report.rejected
    got = [orjson.loads(r.value) | {"_key": r.key}
           for r in records(settings.events_topic, settings.brokers, max_records=50_000, timeout=120)]
    assert len(got) == 50_000
    ids = [g["event_id"] for g in got]
    assert len(set(ids)) == 50_000 and set(ids) == {e["event_id"] for e in events}
    assert all(g["_key"] == g["user_id"].encode() for g in got)
    sent_order, got_order = defaultdict(list), defaultdict(list)
    for e in events:
        sent_order[e["user_id"]].append(e["event_id"])
    for g in got:
        got_order[g["user_id"]].append(g["event_id"])
    assert got_order == sent_order
    # nothing more arrives: the next read stops at partition EOF with the same count
    assert sum(1 for _ in records(settings.events_topic, settings.brokers, until_eof=True, timeout=60)) == 50_000


BAD_FILE_LINES = [
    b'{"event_id":"g1","user_id":"u1","item_id":"i1","type":"view","ts":1730000000000}',
    b'{"event_id":"b1","user_id":"u1","item_id":"i1","type":"view","ts":17300',                     # bad JSON
    b'{"event_id":"b2","user_id":"u1","type":"view","ts":1730000000000}',                            # missing item
    b'{"event_id":"b3","user_id":"u1","item_id":"i1","type":"view","ts":"1730000000000"}',          # wrong type
    b'{"event_id":"b4","user_id":"u1","item_id":"i1","type":"wishlist","ts":1730000000000}',        # unknown type
    b'{"event_id":"b5","user_id":"u1","item_id":"i1","type":"purchase","ts":1730000000000,"price":-5}',
    b'{"event_id":"b6","user_id":"u1","item_id":"i1","type":"view","ts":1730000000}',                # seconds
    b'{"event_id":"b7","user_id":"u1","item_id":"i1","type":"search","ts":1730000000000,"query":"' + b"x" * (1 << 20) + b'"}',
    b'{"event_id":"b8","user_id":"u1\xff\xfe","item_id":"i1","type":"view","ts":1730000000000}',     # invalid UTF-8
    b'{"event_id":"g2","user_id":"u2","item_id":"i2","type":"click","ts":1730000000001}',
]
EXPECTED = {2: "message: not valid JSON", 3: "item_id: required field is missing", 4: "ts: expected integer",
            5: "type: 'wishlist' is not one of", 6: "price: expected a number in 0..1e+09",
            7: "ts: 1730000000 looks like seconds", 8: "message: 1048", 9: "message: invalid UTF-8"}


def test_malformed_file_sends_good_lines_and_reports_every_bad_one(settings, tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(BAD_FILE_LINES) + b"\n")
    rejects = tmp_path / "rejects.tsv"
    out = subprocess.run([sys.executable, "-m", "stream.cli", "produce", str(path), "--rejects", str(rejects), "-q"],
                         env=worker_env(settings), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "sent 2 events" in out.stdout and "rejected 8" in out.stdout
    for line_no, reason in EXPECTED.items():
        assert f"line {line_no}: {reason}" in out.stderr, (line_no, out.stderr)
    assert len(rejects.read_text().splitlines()) == 8
    got = [orjson.loads(r.value)["event_id"] for r in records(settings.events_topic, settings.brokers,
                                                               until_eof=True, timeout=60)]
    assert sorted(got) == ["g1", "g2"]


def test_consume_cli_prints_and_stops(settings):
    produce_events(enumerate(SynthShop(SynthConfig(n_users=20, n_items=50, n_events=30)).events()),
                   settings.events_topic, settings.brokers)
    out = subprocess.run([sys.executable, "-m", "stream.cli", "consume", "events", "--from-beginning", "--max", "5",
                          "--json"], env=worker_env(settings), cwd=ROOT, capture_output=True, timeout=60)
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 5 and all(orjson.loads(x)["event_id"] for x in lines)
