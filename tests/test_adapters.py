"""Each input adapter on a slice of its real file in ../shared/data (skipped only outside CI when absent)."""
import itertools
from collections import Counter

import pytest
from conftest import shared_data

from schemas import Rejected, validate_event
from stream.data.adapters import ColumnMapping, open_log


def first(src, n=2000):
    out = []
    for line_no, rec in itertools.islice(src.events(), n):
        out.append((line_no, rec if isinstance(rec, Rejected) else validate_event(rec)))
    return out


def test_taobao_slice():
    path = shared_data("taobao-userbehavior-samples/UserBehavior.timeslice_2017-11-26T01.csv")
    evs = first(open_log(path, "taobao"))
    assert not [r for _, r in evs if isinstance(r, Rejected)]
    ev = evs[0][1]
    assert (ev.user_id, ev.item_id, ev.type, ev.ts) == ("543462", "1715", "view", 1511658000000)
    assert ev.context == {"category": "1464116"}
    assert {e.type for _, e in evs} <= {"view", "click", "add_to_cart", "purchase"}


def test_rees46_slice_events_and_items():
    path = shared_data("rees46-ecommerce-2019oct-head/2019-Oct.head.csv")
    src = open_log(path, "rees46")
    evs = first(src, 3000)
    good = [e for _, e in evs if not isinstance(e, Rejected)]
    assert len(good) == len(evs)
    ev = good[0]
    assert (ev.user_id, ev.item_id, ev.type, ev.ts, ev.price) == ("541312140", "44600062", "view", 1569888000000, 35.79)
    assert ev.session_id == "72d76fde-8bb3-4e00-8c23-a032dfed738c" and ev.context["brand"] == "shiseido"
    items = list(itertools.islice(src.items(), 500))
    phone = next(i for i in items if i["category"][:2] == ["electronics", "smartphone"])
    assert phone["title"].endswith("smartphone") and phone["price"] > 0
    # the five exact-duplicate rows of the real file map to the same event_id (applied once downstream)
    ids = Counter(e["event_id"] for _, e in src.events() if not isinstance(e, Rejected))
    assert sum(c - 1 for c in ids.values()) == 5


def test_movielens_100k_folder():
    folder = shared_data("movielens-100k")
    src = open_log(folder.parent / "movielens-100k", "movielens")
    assert src.layout == "100k"
    evs = first(src, 500)
    ev = evs[0][1]
    assert (ev.user_id, ev.item_id, ev.ts, ev.context["rating"]) == ("196", "242", 881250949000, 3.0)
    items = {i["item_id"]: i for i in src.items()}
    assert len(items) == 1682
    assert items["1"]["title"] == "Toy Story (1995)" and items["1"]["category"] == ["movies", "Animation"]
    assert items["1"]["created_at"] == 788918400000                      # release date 01-Jan-1995, UTC
    assert "created_at" not in items["267"]                             # "unknown": no date, no year


def test_movielens_current_csv_layout(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n31,Dangerous Minds (1995),Drama\n'
                                         '1029,Dumbo (1941),Animation|Children|Drama|Musical\n')
    src = open_log(tmp_path, "movielens")
    assert src.layout == "csv"
    evs = [validate_event(e) for _, e in src.events()]
    assert [(e.user_id, e.item_id, e.ts) for e in evs] == [("1", "31", 1260759144000), ("1", "1029", 1260759179000)]
    items = list(src.items())
    assert items[1] == {"item_id": "1029", "title": "Dumbo (1941)", "category": ["movies", "Animation"],
                        "description": "Animation, Children, Drama, Musical", "created_at": -915148800000}


def test_otto_jsonl():
    path = shared_data("otto-recsys-sample-20-sessions/train.sample20.jsonl")
    evs = [(n, validate_event(e)) for n, e in open_log(path, "otto").events()]
    assert len(evs) == 862
    assert Counter(e.type for _, e in evs) == {"click": 800, "add_to_cart": 52, "purchase": 10}
    assert (evs[0][1].user_id, evs[0][1].item_id, evs[0][1].ts) == ("0", "1517085", 1659304800025)


def test_generic_delimited_mapping_on_real_file():
    path = shared_data("movielens-100k/u.data")
    m = ColumnMapping.parse("delimiter=\\t,header=false,user=0,item=1,ts=3,ts_unit=s,type=click")
    evs = first(open_log(path, "delimited", m), 100)
    assert all(not isinstance(e, Rejected) for _, e in evs)
    assert (evs[0][1].user_id, evs[0][1].item_id, evs[0][1].type, evs[0][1].ts) == ("196", "242", "click", 881250949000)


def test_delimited_type_column_with_value_map(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("who,what,when,kind\nu1,i1,2024-01-01T00:00:00Z,pv\nu1,i2,2024-01-01T00:01:00Z,buy\nu2,i3,bad,pv\n")
    m = ColumnMapping.parse("user=who,item=what,ts=when,ts_unit=iso,type=kind,types=pv:view;buy:purchase")
    out = list(open_log(p, "delimited", m).events())
    assert [validate_event(e).type for _, e in out[:2]] == ["view", "purchase"]
    assert out[2][0] == 4 and isinstance(out[2][1], Rejected) and out[2][1].field == "ts"


def test_mapping_errors_are_clear():
    with pytest.raises(ValueError, match="missing item, ts"):
        ColumnMapping.parse("user=0")
    with pytest.raises(ValueError, match="ts_unit"):
        ColumnMapping.parse("user=0,item=1,ts=2,ts_unit=hours")
