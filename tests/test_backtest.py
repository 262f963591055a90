"""Backtest: metrics on hand-computed cases, no look-ahead (a planted future is not used), determinism."""
import math

import pytest

from models.metrics import hit_at, ndcg_at, rank_of, rr, summarize
from schemas import Event
from stream.core.candidates import SOURCE_NAMES
from stream.evaluation.backtest import BacktestConfig, _user_disjoint_batches, run_backtest
from stream.evaluation.baselines import CoVisitKNN, MostPopular, TopList


def test_metrics_hand_computed():
    # ranks 1, 3, miss, 11  (K=10): HR = 2/4, NDCG = (1 + 1/log2(4)) / 4, MRR = (1 + 1/3 + 0 + 1/11) / 4
    m = summarize([1, 3, 0, 11], ks=(10,))
    assert m["hr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx((1 + 0.5) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)
    assert ndcg_at(2, 10) == pytest.approx(1 / math.log2(3)) and hit_at(11, 10) == 0.0 and rr(0) == 0.0
    import numpy as np
    assert rank_of(np.array([0.2, 0.9, 0.9]), 2) == 2     # ties are counted against the target
    assert summarize([], ks=(5,))["n"] == 0


def ev(i, user, item, ts):
    return Event(f"e{i}", user, item, "view", ts)


def test_toplist_and_covisit_baselines():
    t = TopList(n=2)
    for item, w in [("a", 1), ("b", 2), ("c", 3), ("a", 5)]:
        t.add(item, w)
    assert t.top == ["a", "c"]
    knn = CoVisitKNN(fallback=MostPopular())
    for i, (u, it) in enumerate([("u1", "x"), ("u1", "y"), ("u2", "x"), ("u2", "y"), ("u3", "x")]):
        knn.learn(ev(i, u, it, 1_700_000_000_000 + i))
    assert knn.recommend("u3", 1, 0) == ["y"]


def test_user_disjoint_batches_keep_order_and_split_repeats():
    evs = [ev(i, u, "i", 1_700_000_000_000 + i) for i, u in enumerate(["a", "b", "a", "c", "c", "d"])]
    got = [[e.user_id for e in b] for _, b in _user_disjoint_batches(evs, size=10)]
    assert got == [["a", "b"], ["a", "c"], ["c", "d"]]
    assert [e for _, b in _user_disjoint_batches(evs, 10, warmup=3) for e in b] == evs


def planted_log(n_users=60, seed_items=("p", "q")):
    """Every user views i{k} in order; after the warm-up, a 'future' item F is viewed by everyone,
    and only then; a system that looked ahead would recommend F before anyone viewed it."""
    events, ts, i = [], 1_700_000_000_000, 0
    for step in range(6):
        for u in range(n_users):
            events.append(ev(i, f"u{u}", f"i{(u + step) % 12}", ts))
            ts += 1000
            i += 1
    for u in range(n_users):
        events.append(ev(i, f"u{u}", "FUTURE", ts))
        ts += 1000
        i += 1
    return events


@pytest.mark.integration
def test_planted_future_is_not_used_and_results_repeat(stack):
    events = planted_log()
    first_future = next(k for k, e in enumerate(events) if e.item_id == "FUTURE")
    cfg = BacktestConfig(warmup_frac=(first_future + 0.5) / len(events), batch_size=20,
                         systems=("most_popular", "trending", "covisit_knn", "river_mf", "recstream"))
    a = run_backtest(events, [], cfg, redis_url=stack[1])
    # the very first FUTURE event can be predicted by nobody: it is the item's first appearance
    # (it is in the "item_new_after_warmup" segment, and its rank must be a miss for every system)
    for name, m in a["systems"].items():
        seg = m["by_segment"]["item_new_after_warmup"]
        assert seg["n"] == len(events) - first_future
    b = run_backtest(events, [], cfg, redis_url=stack[1])
    assert {k: {m: v[m] for m in ("ndcg@10", "hr@10", "mrr")} for k, v in a["systems"].items()} == \
           {k: {m: v[m] for m in ("ndcg@10", "hr@10", "mrr")} for k, v in b["systems"].items()}


@pytest.mark.integration
def test_first_appearance_of_an_item_is_always_a_miss(stack):
    events = planted_log()
    first_future = next(k for k, e in enumerate(events) if e.item_id == "FUTURE")
    # evaluate exactly one event: the first FUTURE view
    cfg = BacktestConfig(warmup_frac=(first_future + 0.5) / (first_future + 1), batch_size=1,
                         systems=("most_popular", "trending", "covisit_knn", "recent_items", "river_mf", "recstream"))
    rep = run_backtest(events[: first_future + 1], [], cfg, redis_url=stack[1])
    assert rep["evaluated"] == 1
    for name, m in rep["systems"].items():
        assert m["hr@20"] == 0.0, name
    # nor can it be among recstream's candidates: candidate recall, overall and per source, is 0
    cr = rep["candidate_recall"]
    assert cr["all"] == 0.0 and set(cr["by_source"]) == set(SOURCE_NAMES) and not any(cr["by_source"].values())


@pytest.mark.integration
def test_candidate_recall_counts_where_the_item_was_proposed(stack):
    """Users who come back to their own items: those items are candidates (the 'recent' source), so
    candidate recall is high, and no source's share is above the whole."""
    events, ts = [], 1_700_000_000_000
    for step in range(8):
        for u in range(20):
            events.append(ev(len(events), f"u{u}", f"i{u}" if step % 2 else f"j{u}", ts))
            ts += 1000
    cfg = BacktestConfig(warmup_frac=0.5, batch_size=10, systems=("recent_items", "recstream"), rankers=())
    cr = run_backtest(events, [], cfg, redis_url=stack[1])["candidate_recall"]
    assert cr["all"] == 1.0 and cr["by_source"]["recent"] == 1.0
    assert all(0.0 <= v <= cr["all"] for v in cr["by_source"].values()) and cr["mean_candidates"] >= 2


@pytest.mark.integration
def test_via_kafka_matches_in_process_on_a_small_log(stack):
    """The same log through the real broker and worker gives the in-process quality within batching noise."""
    from stream.data.synth import SynthConfig, SynthShop
    from stream.evaluation.via_kafka import run_via_kafka
    shop = SynthShop(SynthConfig(n_users=120, n_items=150, n_events=1500, seed=17))
    from schemas import validate_event
    events = [validate_event(e) for e in shop.events()]
    cfg = BacktestConfig(warmup_frac=0.5, systems=("recstream",))
    inproc = run_backtest(events, shop.items, cfg, redis_url=stack[1])["systems"]["recstream"]
    kafka = run_via_kafka(events, shop.items, cfg, rate=100, idle_s=4)   # 150/s: 0.03 below, more coalescing
    via = kafka["systems"]["recstream"]
    assert kafka["evaluated"] == inproc["n"] > 500
    assert inproc["ndcg@10"] > 0.2
    assert abs(via["ndcg@10"] - inproc["ndcg@10"]) < 0.05, (via["ndcg@10"], inproc["ndcg@10"])
    assert kafka["latency_ms"]["p50"] is not None and kafka["recommendations"] > 0


@pytest.mark.integration
def test_validation_backtests_the_warm_up_part_only(tmp_path):
    """`recstream backtest --validation` keeps the log's first --warmup-frac by time and splits that again:
    an item that appears only in the evaluated period is never seen, let alone scored."""
    import json
    import subprocess
    import sys
    rows = ["event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"]
    for n in range(200):
        item = "999" if n >= 160 else str(100 + n % 7)        # 999: only in the last 20 % (the evaluated period)
        rows.append(f"2019-10-01 00:{n // 60:02d}:{n % 60:02d} UTC,view,{item},1,,b,1.0,{n % 5},s{n % 5}")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "stream.cli", "backtest", str(log), "--format", "rees46",
                          "--validation", "--systems", "most_popular,recent_items", "--rankers", "",
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    rep = json.loads((out / "metrics.json").read_text())
    assert rep["events"] == 160 and rep["warmup_events"] == 128 and rep["evaluated"] == 32
    assert rep["catalog_items_seen"] == 7                       # 999 never came in


@pytest.mark.integration
def test_systems_in_processes_of_their_own_give_the_same_report(stack):
    """`parallel`: the baselines and recstream (with its learned ranker) replay the log in two processes at once;
    every figure of every system, candidate recall and the row order are those of one process. A group's failure
    in its own process is raised here, with its cause."""
    from dataclasses import replace

    from schemas import validate_event
    from stream.data.synth import SynthConfig, SynthShop
    shop = SynthShop(SynthConfig(n_users=150, n_items=200, n_events=2500, seed=11))
    events = sorted((validate_event({**e, "ts": e["ts"] // 600_000 * 600_000}) for e in shop.events()),
                    key=lambda e: e.ts)    # in 10-minute steps: events before the split share its time
    cfg = BacktestConfig(warmup_frac=0.6, systems=("most_popular", "covisit_sym", "recent_items", "river_mf",
                                                   "recstream"), rankers=("gbdt",), parallel=False)
    one = run_backtest(events, shop.items, cfg, redis_url=stack[1])
    two = run_backtest(events, shop.items, replace(cfg, parallel=True), redis_url=stack[1])
    assert one["evaluated"] > 800 and list(one["systems"]) == list(two["systems"])
    assert len(one["systems"]) == 6          # 4 baselines, recstream, recstream+gbdt
    for key in ("systems", "over_time", "candidate_recall", "rankers", "ndcg@10_ratio_to_best_baseline"):
        assert one[key] == two[key], key
    with pytest.raises(RuntimeError, match="unknown system 'no_such_baseline'"):
        run_backtest(events, shop.items, replace(cfg, parallel=True, systems=("no_such_baseline", "recstream")),
                     redis_url=stack[1])
