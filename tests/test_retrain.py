"""Continuous training on the real stack: a worker serves model v1; a retrain on newer archived events produces
v2, the shadow check promotes it, the worker swaps to it without losing or repeating an event; a deliberately
worse candidate is kept out; rollback puts v1 back in service. Plus the warm start's unit facts."""
from dataclasses import replace

import orjson
import pytest
import torch
from conftest import start_worker, stop_process, wait_for
from test_worker import Collector, _applied

from exporters.pipeline import export_register
from models.data import Interaction, Vocab
from models.retrain import grow_model, grow_vocab, retrain
from models.seqrec import SeqRec, SeqRecConfig
from models.train import TrainConfig
from schemas import validate_event
from stream.core.storage.registry import Registry
from stream.data.synth import SynthConfig, SynthShop
from stream.evaluation.retrain import retrain_once, shadow_decide
from stream.ops.produce import produce_events, produce_items

SMALL = dict(max_len=20, dim=16, heads=2, layers=1)


def random_version(reg_root, vocab: list[str], seed: int, tag: str) -> str:
    torch.manual_seed(seed)
    model = SeqRec(SeqRecConfig(n_items=len(vocab) + 1, **SMALL)).eval()
    version, _ = export_register(model, Vocab(vocab), {"data_hash": tag}, reg_root)
    return version


def test_warm_start_keeps_known_rows_and_appends_new_items():
    torch.manual_seed(0)
    old = SeqRec(SeqRecConfig(n_items=3, **SMALL))
    vocab = grow_vocab(Vocab(["a", "b"]), [Interaction("u", "z", 1), Interaction("u", "b", 2)])
    assert vocab.items == ["<pad>", "a", "b", "z"]
    new = grow_model(old, len(vocab))
    assert torch.equal(new.item_emb.weight[:3], old.item_emb.weight)
    assert new.item_emb.weight.shape == (4, 16)
    assert torch.equal(new.pos_emb.weight, old.pos_emb.weight)
    # a warm retrain of one epoch moves the weights and reports what it did
    evs = [Interaction(f"u{u}", it, u * 10 + j) for u in range(30) for j, it in enumerate("abzab")]
    model, v2, rep = retrain(evs, TrainConfig(seed=1, **SMALL), init=(old, Vocab(["a", "b"])), warm_epochs=1,
                             log=lambda *_: None)
    assert rep["warm_start"] and rep["new_items"] == 1 and rep["epochs"] == 1 and v2.items == vocab.items
    assert not torch.equal(model.item_emb.weight[:3], old.item_emb.weight)


@pytest.mark.integration
@pytest.mark.slow
def test_retrain_promotes_a_better_model_the_worker_swaps_and_rollback(settings, redis_client, tmp_path):
    shop = SynthShop(SynthConfig(n_users=300, n_items=150, n_events=9000, seed=33))
    raw = list(shop.events())
    events = [validate_event(e) for e in raw]
    users = {e.user_id for e in events}
    root = tmp_path / "models"
    vocab = [it["item_id"] for it in shop.items]
    v1 = random_version(root, vocab, 1, "random-v1")
    reg = Registry(root)
    reg.promote(v1)
    produce_items(shop.items, settings.items_topic, settings.brokers)
    recs = Collector(settings.recs_topic, settings.brokers)
    worker = start_worker(replace(settings, model_dir=str(root)), log=tmp_path / "w.log")
    try:
        produce_events(enumerate(raw[:6000], 1), settings.events_topic, settings.brokers, rate=3000)
        wait_for(lambda: len(recs.items) > 50, timeout=60, what="recommendations from v1")
        # the retrain reads what the archive would hold: the events so far (its last 20 % kept for the shadow check)
        out = retrain_once(events[:6000], shop.items, root, settings.redis_url, shadow_frac=0.2, epochs=3)
        assert out["decision"] == "promoted", out
        v2 = out["candidate"]
        assert reg.promoted() == v2 and out["train"]["warm_start"]
        assert out["shadow"]["candidate"] > out["shadow"]["promoted"] and out["shadow"]["evaluated"] > 100
        wait_for(lambda: f"-> {v2}" in (tmp_path / "w.log").read_text(), timeout=30, what="the worker's swap to v2")
        names_v2 = lambda: any(orjson.loads(r.value)["model_versions"]["scorer"].find(v2) >= 0 for r in recs.items)
        produce_events(enumerate(raw[6000:7500], 6001), settings.events_topic, settings.brokers, rate=3000)
        wait_for(names_v2, timeout=60, what="the worker serving v2")
        # a deliberately worse candidate (random weights) is kept out; v2 stays in service
        v3 = random_version(root, vocab, 3, "random-v3")
        worse = shadow_decide(events[:7500], shop.items, root, v3, events[6000].ts, settings.redis_url)
        assert worse["decision"] == "kept out" and reg.promoted() == v2, worse
        assert worse["shadow"]["candidate"] < worse["shadow"]["promoted"]
        # rollback: v1 again, and the worker follows
        assert reg.rollback() == v1
        wait_for(lambda: f"-> {v1}" in (tmp_path / "w.log").read_text().split(f"-> {v2}")[-1], timeout=30,
                 what="the worker's swap back to v1")
        n_before = len(recs.items)
        produce_events(enumerate(raw[7500:], 7501), settings.events_topic, settings.brokers, rate=3000)
        wait_for(lambda: _applied(redis_client, settings.key_prefix, users) >= len(raw), timeout=120,
                 what="every event applied")
        wait_for(lambda: any(v1 in orjson.loads(r.value)["model_versions"]["scorer"] for r in recs.items[n_before:]),
                 timeout=60, what="the worker back on v1")
    finally:
        stop_process(worker)
        recs.stop()
    assert _applied(redis_client, settings.key_prefix, users) == len(raw)      # none lost, none applied twice
    ids = [orjson.loads(r.value)["recommendation_id"] for r in recs.items]
    assert len(ids) == len(set(ids))                                         # no recommendation repeated
    history = [(h["action"], h["version"]) for h in reg.history()]
    assert history == [("promote", v1), ("promote", v2), ("reject", v3), ("rollback", v1)]
    assert orjson.loads((root / "seqrec" / v3 / "manifest.json").read_bytes())["decision"] == "kept out"


@pytest.mark.integration
def test_backtest_retrains_on_schedule_from_revealed_events_only(stack, tmp_path):
    """--retrain-every: a retrained twin beside the frozen model in one replay; each retrain sees only events
    revealed before it (trained_until < the batch it precedes), the frozen twin keeps its version."""
    from stream.evaluation.backtest import BacktestConfig, run_backtest
    shop = SynthShop(SynthConfig(n_users=150, n_items=100, n_events=3000, seed=8))
    events = sorted((validate_event(e) for e in shop.events()), key=lambda e: e.ts)
    root = tmp_path / "models"
    v1 = random_version(root, [it["item_id"] for it in shop.items], 1, "random")
    Registry(root).promote(v1)
    every_s = (events[-1].ts - events[0].ts) / 1000 / 4 * 1.01      # 3 boundaries inside the log
    cfg = BacktestConfig(warmup_frac=0.5, systems=("recent_items", "recstream"), rankers=(), explore=False,
                         retrain_every_s=every_s, retrain_epochs=1)
    rep = run_backtest(events, shop.items, cfg, redis_url=stack[1], model_dir=str(root))
    rt = rep["retrain"]
    assert len(rt["retrains"]) == 3                   # at 1/4, 2/4 and 3/4 of the log's span
    for r in rt["retrains"]:
        assert r["trained_until_ts"] <= r["at_ts"] and r["warm_start"]     # revealed before that batch (ties: same ts)
    assert rep["recstream_version"].endswith(v1)
    assert set(rt["ndcg@10_ratio_retrained_vs_frozen"]) == {"recstream (retrained)"}
    assert rep["systems"]["recstream (retrained)"]["n"] == rep["systems"]["recstream"]["n"] == rep["evaluated"]
