"""Stage 2: update users' profiles in Redis, idempotently, one pipelined round-trip per batch.

The update itself is `lua/apply_events.lua`, run once per user with that user's events of
the batch, in order: it skips event ids it has applied before (so a replayed or redelivered
event changes nothing), updates the recent-item sequence, decayed category/brand affinities,
counters, purchases, co-visitation and trending, and returns the user's profile snapshot,
so the candidate stage needs no extra read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis

from schemas import Event
from stream.store import script

WEIGHTS = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4, "search": 0}


@dataclass(frozen=True)
class ProfileConfig:
    affinity_half_life_s: float = 7 * 86400.0  # category/brand affinity decay
    trend_half_life_s: float = 6 * 3600.0      # trending decay
    max_seq: int = 50                          # recent items kept (transformer input length)
    covis_n: int = 3                           # previous items an event co-visits with
    seen_cap: int = 2000                       # event ids remembered per user for idempotency
    session_gap_s: float = 1800.0              # co-visitation only within this gap
    max_affinities: int = 64                   # categories+brands kept per user
    bot_per_min: int = 40                      # above this many events a minute: bot-like


@dataclass
class Snapshot:
    """A user's profile right after the batch's events were applied."""
    user_id: str
    recent: list[str]                 # newest first
    affinity: dict[str, float]        # "c:{cat}" / "b:{brand}" -> value decayed to last_ts
    bought: list[str]
    last_ts: int
    applied: int = 0                  # events of this batch applied (not duplicates)
    events: list[Event] = field(default_factory=list)

    def top(self, kind: str, n: int) -> list[tuple[str, float]]:
        pre = kind + ":"
        pairs = [(k[len(pre):], v) for k, v in self.affinity.items() if k.startswith(pre)]
        pairs.sort(key=lambda kv: (-kv[1], kv[0]))
        return pairs[:n]


def _decode_aff(flat: list[bytes], now: int, half_life_ms: float) -> dict[str, float]:
    out = {}
    for i in range(0, len(flat), 2):
        v, ref = flat[i + 1].decode().split("|")
        out[flat[i].decode()] = float(v) * 2.0 ** (-(now - int(ref)) / half_life_ms)
    return out


class ProfileStore:
    def __init__(self, client: redis.Redis, prefix: str, cfg: ProfileConfig = ProfileConfig()):
        self.client, self.prefix, self.cfg = client, prefix, cfg
        self._apply = script(client, "apply_events")
        c = cfg
        self._head = [prefix, None, int(c.affinity_half_life_s * 1000), c.max_seq, c.covis_n, c.seen_cap,
                      int(c.trend_half_life_s * 1000), int(c.session_gap_s * 1000), c.max_affinities,
                      c.bot_per_min]

    def read(self, users: list[str]) -> dict[str, Snapshot]:
        """Current snapshots without applying anything (one pipelined round-trip)."""
        pipe = self.client.pipeline(transaction=False)
        for uid in users:
            u = f"{self.prefix}u:{uid}"
            pipe.lrange(u + ":seq", 0, self.cfg.max_seq - 1)
            pipe.hgetall(u + ":aff")
            pipe.zrevrange(u + ":bought", 0, 19)
            pipe.hget(u, "last_ts")
        r = pipe.execute()
        hl = self.cfg.affinity_half_life_s * 1000
        out = {}
        for n, uid in enumerate(users):
            seq, aff, bought, last = r[4 * n: 4 * n + 4]
            last_ts = int(last or 0)
            flat = [x for kv in aff.items() for x in kv]
            out[uid] = Snapshot(uid, [x.decode() for x in seq], _decode_aff(flat, last_ts, hl),
                                [b.decode() for b in bought], last_ts)
        return out

    def apply(self, events: list[Event]) -> dict[str, Snapshot]:
        """Apply events (batch order = per-user order) and return each touched user's snapshot."""
        by_user: dict[str, list[Event]] = {}
        for ev in events:
            by_user.setdefault(ev.user_id, []).append(ev)
        pipe = self.client.pipeline(transaction=False)
        for uid, evs in by_user.items():
            args = list(self._head)
            args[1] = uid
            for ev in evs:
                ctx = ev.context or {}
                args += [ev.event_id, ev.type, ev.item_id or "", ev.ts, str(ctx.get("category") or ""),
                         str(ctx.get("brand") or ""), WEIGHTS[ev.type]]
            self._apply(args=args, client=pipe)
        results = pipe.execute()
        hl = self.cfg.affinity_half_life_s * 1000
        out = {}
        for (uid, evs), (flags, seq, aff, bought, last_ts) in zip(by_user.items(), results):
            last = int(last_ts)
            applied = [ev for ev, f in zip(evs, flags.decode()) if f == "1"]
            out[uid] = Snapshot(uid, [s.decode() for s in seq], _decode_aff(aff, last, hl),
                                [b.decode() for b in bought], last, len(applied), evs)
        return out
