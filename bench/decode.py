"""Decode and validate: the worker's per-message cost of turning bytes into a checked `Event`.

Rows: `validate_event` (orjson + our field checks in Python), the fast path the consumers use
(`schemas/fast.py`: msgspec's typed decoder, then the few checks msgspec cannot express, falling back to
`validate_event` on any doubt), and the two bare decoders for scale (no checks: not options). The messages
are the synthetic shop's events as the producer writes them; a second set is malformed (every tenth message
broken in one field), which the fast path hands to the slow one. Both paths give the same answer on every
message (checked here, and by tests/test_hostile_input.py on generated hostile input).
"""
from __future__ import annotations

import time

import msgspec
import orjson

from schemas import validate_event
from schemas.fast import _Wire, fast_validate_event
from stream.data.synth import SynthConfig, SynthShop


def _rate(fn, msgs: list[bytes], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for m in msgs:
            fn(m)
        best = min(best, time.perf_counter() - t)
    return len(msgs) / best


def run(rows, n: int = 100_000) -> None:
    shop = SynthShop(SynthConfig(n_users=10_000, n_items=5_000, n_events=n, seed=3))
    good = [orjson.dumps(e) for e in shop.events()]
    broken = [m.replace(b'"ts":', b'"ts":"x",') if k % 10 == 0 else m for k, m in enumerate(good)]
    for name, msgs in (("valid", good), ("10pct_malformed", broken)):
        same = sum(fast_validate_event(m) == validate_event(m) for m in msgs)
        assert same == len(msgs), f"the fast path disagrees on {len(msgs) - same} messages"
        slow, fast = _rate(validate_event, msgs), _rate(fast_validate_event, msgs)
        rows.add(f"decode_validate_orjson_checks_{name}", slow, "msg/s", messages=len(msgs))
        rows.add(f"decode_validate_msgspec_fast_path_{name}", fast, "msg/s", messages=len(msgs))
        rows.add(f"decode_validate_fast_vs_orjson_ratio_{name}", fast / slow, "x")
    rows.add("decode_only_orjson_loads", _rate(orjson.loads, good), "msg/s")
    rows.add("decode_only_msgspec_typed", _rate(msgspec.json.Decoder(_Wire).decode, good), "msg/s")
