"""The `full` benchmark group (`python -m bench.run --only full`): the default stack a user runs after
`recstream train` (SeqRec + the text encoder's content source + the learned ranker) against the fallback
scorer + ranker, catch-up over the same pre-loaded topic, side by side (report the ratio).

Steady state, not a cold start: the first half of the events (the half the model trained on) goes through
each row's pipeline untimed, and its ranker's trees are fitted on what it learned there; the timed
catch-up is the second half. (Before the twenty-fourth session each row started with an empty ranker whose
first background fit landed after the run: the trees' predictions were never paid for.)"""
from __future__ import annotations

import os
import time
from dataclasses import replace

from bench.catchup import run_worker_catchup
from bench.rows import ROOT, Rows
from bench.run import cleanup, fresh_settings
from stream.config.settings import Settings
from stream.data.synth import SynthShop
from stream.ops.produce import produce_events

MEMBERS = int(os.environ.get("BENCH_FULL_MEMBERS", "2"))   # as `recstream train --members` (default 2)


def run_full(rows: Rows, base: Settings, shop: SynthShop, events: list[dict], client) -> None:
    """The full default stack (SeqRec + content + ranker) and the fallback stack, each a catch-up run over the
    same pre-loaded topic in a fresh key space; the catalog embedded (and timed) before the full stack's run."""
    from schemas import Event, validate_event, validate_item
    from stream.config.compose import build_pipeline
    from stream.core.storage.registry import Registry
    from stream.evaluation.retrain import train_candidate
    encoder = ROOT / "artifacts" / "encoder"
    if not (encoder / "model.onnx").exists():
        print(f"  (skipped: no text encoder at {encoder}; `recstream encoder export` makes one)", flush=True)
        return
    reg = ROOT / ".state" / "bench" / "models"
    n_train = len(events) // 2
    print(f"== full default stack: SeqRec ({MEMBERS} members) trained 1 epoch on {n_train:,} events, content, "
          "ranker", flush=True)
    t = time.perf_counter()
    train = sorted((e for e in map(validate_event, events[:n_train]) if isinstance(e, Event)), key=lambda e: e.ts)
    version, _, _ = train_candidate(train, reg, epochs=1, train_cfg={"epochs": 1, "members": MEMBERS})
    Registry(reg).promote(version, reason="bench")
    rows.add("full_model_train_seconds", time.perf_counter() - t, "s", model=version, epochs=1, members=MEMBERS)
    s = fresh_settings(base, "full")
    warm, timed = events[:n_train], events[n_train:]
    produce_events(enumerate(timed, n_train + 1), s.events_topic, s.brokers)
    full = replace(s, encoder_dir=str(encoder), model_dir=str(reg))
    other = replace(s, group_id=f"{s.group_id}-fallback", key_prefix=f"{s.key_prefix}fallback:")
    # the catalog written straight into each run's key space (not through the items topic, where the worker
    # would embed it again inside the timed run); the embedding timed on its own
    items = [validate_item(it) for it in shop.items]
    build_pipeline(other, ranker=False).catalog.upsert(items)
    pipe = build_pipeline(full, ranker=False)
    pipe.catalog.upsert(items)
    t = time.perf_counter()
    n_items = pipe.content.upsert(items)
    rows.add("full_catalog_embedding", n_items / (time.perf_counter() - t), "items/s", items=n_items)
    rate_full, timings, warmed = run_worker_catchup(full, len(timed), warm, rows, "worker_full_stack")
    rows.add("worker_full_stack_end_to_end", rate_full, "events/s", scorer=f"blend({version})", content=True,
             ranker=s.ranker, timed_events=len(timed), **(warmed or {}))
    total = sum(timings.values())
    for k, v in sorted(timings.items(), key=lambda kv: -kv[1]):
        rows.add(f"worker_full_stage_share_{k}", 100 * v / total, "%")
    rate_fb, _, warmed = run_worker_catchup(other, len(timed), warm, rows, "worker_fallback_ranker")
    rows.add("worker_fallback_ranker_end_to_end", rate_fb, "events/s", scorer="fallback-v1", content=False,
             ranker=s.ranker, timed_events=len(timed), **(warmed or {}))
    rows.add("worker_full_vs_fallback_ratio", rate_full / rate_fb, "x")
    cleanup(s, client)
