"""Promote a new model version while the worker consumes: every recommendation after the swap names
the new version, and no event is lost or applied twice."""
import threading
from dataclasses import replace

import orjson
import pytest
import torch
from conftest import start_worker, stop_process, wait_for
from test_worker import Collector, _applied

from exporters.onnx import export_seqrec
from models.seqrec import SeqRec, SeqRecConfig
from stream.core.storage.registry import Registry
from stream.data.synth import SynthConfig, SynthShop
from stream.ops.produce import produce_events, produce_items

pytestmark = pytest.mark.integration


def make_version(reg: Registry, vocab: list[str], tmp, seed: int) -> str:
    torch.manual_seed(seed)
    model = SeqRec(SeqRecConfig(n_items=len(vocab), max_len=20, dim=16, heads=2, layers=1)).eval()
    path = export_seqrec(model, tmp / f"m{seed}.onnx")
    vp = tmp / f"vocab{seed}.json"
    vp.write_bytes(orjson.dumps(vocab))
    return reg.register({"model.onnx": path, "vocab.json": vp},
                        {"parity": {"passed": True, "max_abs_diff": 0.0}, "opset": 17,
                         "model_config": model.cfg.to_dict(), "data_hash": f"seed{seed}"})


def test_promote_while_consuming(settings, redis_client, tmp_path):
    shop = SynthShop(SynthConfig(n_users=400, n_items=300, n_events=8000, seed=21))
    events = list(shop.events())
    users = {e["user_id"] for e in events}
    reg = Registry(tmp_path / "models")
    vocab = ["<pad>"] + [it["item_id"] for it in shop.items]
    v1 = make_version(reg, vocab, tmp_path, 1)
    v2 = make_version(reg, vocab, tmp_path, 2)
    reg.promote(v1)
    produce_items(shop.items, settings.items_topic, settings.brokers)
    recs = Collector(settings.recs_topic, settings.brokers)
    worker = start_worker(replace(settings, model_dir=str(tmp_path / "models")), log=tmp_path / "w.log")
    try:
        produce_events(enumerate(events[:4000], 1), settings.events_topic, settings.brokers, rate=2000)
        wait_for(lambda: len(recs.items) > 50, timeout=60, what="recommendations from v1")
        reg.promote(v2)
        swapped = lambda: any(v2 in orjson.loads(r.value)["model_versions"]["scorer"] for r in recs.items)
        feeder = threading.Thread(target=produce_events, args=(enumerate(events[4000:], 4001),
                                                                settings.events_topic, settings.brokers),
                                  kwargs={"rate": 2000})
        feeder.start()
        wait_for(swapped, timeout=60, what="the swap to v2")
        feeder.join(60)
        wait_for(lambda: _applied(redis_client, settings.key_prefix, users) >= len(events), timeout=120,
                 what="every event applied")
        wait_for(lambda: {orjson.loads(r.value)["user_id"] for r in recs.items} >= users, timeout=60,
                 what="every user served")
    finally:
        stop_process(worker)
        recs.stop()
    assert _applied(redis_client, settings.key_prefix, users) == len(events)   # none lost, none twice
    versions = [orjson.loads(r.value)["model_versions"]["scorer"].removesuffix("+ranker-gbdt") for r in recs.items]
    assert all(v.endswith(v1) or v.endswith(v2) for v in versions)
    assert any(v.endswith(v1) for v in versions)
    # per partition (the order the worker produced them in), nothing names v1 after the first v2
    by_part = {}
    for r, v in zip(recs.items, versions):
        by_part.setdefault(r.partition, []).append(v)
    for part, vs in by_part.items():
        first_v2 = next((i for i, v in enumerate(vs) if v.endswith(v2)), len(vs))
        assert all(v.endswith(v2) for v in vs[first_v2:]), part
    assert versions[-1].endswith(v2)
    assert "scorer swapped" in (tmp_path / "w.log").read_text()
