"""The per-user profile update's CPU per event (`stream.core.storage.update.apply_user`, computed in the
worker), for a light user and for a heavy one; this checkout and, side by side in the same run, other
checkouts (`--repo`).

    python -m bench.update [--calls 3000] [--rounds 2] [--repo DIR ...] [--out FILE]

A light user: a synthetic shop's users (10,000 users, 5,000 items, seed 3; about 6 events each), one call
a user and batch as the worker makes them. A heavy user: one user whose seen set is full (the default cap,
2,000 event ids), with 20 categories and 30 brands, one event a call. Each checkout runs in a process of its
own, rounds interleaved (A, B, A, B). No Redis: the update alone.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _measure(calls: int) -> dict:
    """Runs inside the checkout measured (its code first on sys.path)."""
    from schemas import Event, validate_event
    from stream.core.storage.profile import WEIGHTS, ProfileConfig
    from stream.core.storage.update import UserState, apply_user
    c = ProfileConfig()
    head = [int(c.affinity_half_life_s * 1000), c.max_seq, c.covis_n, c.seen_cap, int(c.session_gap_s * 1000),
            c.max_affinities, c.bot_per_min]

    def args(ev, off) -> list:
        ctx = ev.context or {}
        return [*head, off, ev.event_id, ev.type, ev.item_id or "", ev.ts, str(ctx.get("category") or ""),
                str(ctx.get("brand") or ""), WEIGHTS[ev.type], "" if ev.price is None else ev.price, ev.query or "", off]

    from stream.data.synth import SynthConfig, SynthShop
    shop = SynthShop(SynthConfig(n_users=10_000, n_items=5_000, n_events=60_000, seed=3))
    evs = sorted((e for e in map(validate_event, shop.events()) if isinstance(e, Event)), key=lambda e: e.ts)
    states: dict = {}
    for k, ev in enumerate(evs[:30_000]):
        apply_user(states.setdefault(ev.user_id, UserState()), args(ev, k))
    todo = [(ev.user_id, args(ev, 30_000 + k)) for k, ev in enumerate(evs[30_000:30_000 + calls])]
    t = time.process_time()
    for uid, a in todo:
        apply_user(states.setdefault(uid, UserState()), a)
    light = 1e6 * (time.process_time() - t) / len(todo)

    st, t0 = UserState(), 1_600_000_000_000

    def one(k: int, prefix: str) -> list:
        return [*head, "", f"{prefix}{k}", "view", f"i{k % 300}", t0 + k * 90_000, f"c{k % 20}", f"b{k % 30}", 1,
                "", "", ""]
    for k in range(c.seen_cap):
        apply_user(st, one(k, "e"))
    todo = [one(c.seen_cap + k, "x") for k in range(calls)]
    t = time.process_time()
    for a in todo:
        apply_user(st, a)
    heavy = 1e6 * (time.process_time() - t) / len(todo)
    return {"calls": len(todo), "light_us_per_event": round(light, 2), "heavy_us_per_event": round(heavy, 2),
            "heavy_seen_ids": len(st.seen)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--inner"]:                  # in the checkout measured (bench.checkouts.run_in)
        sys.path.insert(0, os.getcwd())
        print(json.dumps(_measure(int(argv[1]))))
        return 0
    from bench.checkouts import add_arguments, interleaved
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3_000, help="update calls timed for each kind of user")
    add_arguments(ap, "update.json")
    args = ap.parse_args(argv)
    repos, runs = interleaved(__file__, args.repo, args.calls, args.rounds)
    print(f"{'checkout':<40} {'light us/event':>15} {'heavy us/event':>15}")
    med = {}
    for r, got in runs.items():
        med[r] = {k: statistics.median(g[k] for g in got) for k in ("light_us_per_event", "heavy_us_per_event")}
        print(f"{r:<40} {med[r]['light_us_per_event']:>15.1f} {med[r]['heavy_us_per_event']:>15.1f}")
    for r in repos[1:]:
        a, b = med[str(ROOT)], med[str(r)]
        print(f"this checkout / {r}: light {a['light_us_per_event'] / b['light_us_per_event']:.2f}x, "
              f"heavy {a['heavy_us_per_event'] / b['heavy_us_per_event']:.2f}x (medians)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"command": "python -m bench.update " + " ".join(argv),
                                          "median": med, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
