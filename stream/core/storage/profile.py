"""Stage 2: update users' profiles in Redis, idempotently, in two pipelined round-trips per batch.

The first reads what the events lack from the catalog (category, brand, price), checks the store's marker
and reads the profiles the worker does not hold; then each user's update is computed in the worker, on its
copy of the profile (`cache.ProfileCache`, `update.apply_user`: it skips event ids applied before, so a
replayed or redelivered event changes nothing, updates the recent-item sequence, decayed category/brand
affinities, counters and purchases, and gives each applied event's shared part, which
`shared.SharedStats` adds up for the whole batch), and the second round-trip writes each profile with
`lua/profile_put.lua`, only if nobody wrote it since it was read (a conflict is read and computed again).
The snapshot the candidate stage needs comes from that computation: no extra read.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis

from schemas import Event
from stream.core.storage.catalog import parse_meta, queue_meta
from stream.core.storage.cache import ProfileCache
from stream.core.storage.rawpipe import pipeline
from stream.core.storage.shared import Fed, SharedStats, rating_of
from stream.core.storage.store import Keys
from stream.core.storage.update import decode as decode_profile
from stream.core.storage.update import aff_numbers, snapshot_reply
from stream.core.validate import InMessage
from stream.errors import TRANSIENT_REDIS, StoreEmptied, translate_redis

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
    cache_users: int = 100_000                 # profiles a worker keeps in memory (least recently used out)
    cache_ids: int = 1_000_000                 # ... and seen event ids in all (about 200 B each: the memory bound)
    covis_cap: int = 100                       # co-visitation/co-occurrence members kept per item (trimmed past 2x)


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
    fresh: list[Event] = field(default_factory=list)      # the applied ones (feedback for the ranker)
    bot: bool = False                 # some event of this batch was bot-like: it trains nothing shared
    aff_ts: dict[str, int] = field(default_factory=dict)  # affinity key -> the user's last event on it (ms)
    prev_ts: int = 0                  # the user's event before the last one
    last_type: str = ""
    price_mean: float | None = None   # mean log-price of carted/bought items (None: never)
    query: str = ""                   # the user's last search query
    fed: list[Fed] = field(default_factory=list)          # the shared part of each applied event
    recent_ts: list[int] = field(default_factory=list)    # when the user last touched each recent item (ms; 0 unknown)

    def top(self, kind: str, n: int) -> list[tuple[str, float]]:
        pre = kind + ":"
        pairs = [(k[len(pre):], v) for k, v in self.affinity.items() if k.startswith(pre)]
        pairs.sort(key=lambda kv: (-kv[1], kv[0]))
        return pairs[:n]


def _decode_aff(flat: list[str], now: int, half_life_ms: float) -> tuple[dict[str, float], dict[str, int]]:
    out, when = {}, {}
    for i in range(0, len(flat), 2):
        v, ref = flat[i + 1].split("|")
        k = flat[i]
        out[k] = float(v) * 2.0 ** (-(now - int(ref)) / half_life_ms)
        when[k] = int(ref)
    return out, when


def _snapshot(uid: str, seq, aff_flat, bought, last, extra, half_life_ms: float, aff_num: dict | None = None,
              **kw) -> Snapshot:
    """Build a Snapshot from `update.apply_user`'s (or `snapshot_reply`'s) reply; extra = (prev_ts,
    last_type, plog, pn, query, the recent items' touch times, comma-separated). `aff_num`: the same
    affinities as numbers (`UserState.affn`), read instead of the reply's texts."""
    last_ts = int(float(last or 0))
    if aff_num is None:
        aff, when = _decode_aff(aff_flat, last_ts, half_life_ms)
    else:
        aff = {k: v * 2.0 ** (-(last_ts - ref) / half_life_ms) for k, (v, ref) in aff_num.items()}
        when = {k: ref for k, (_, ref) in aff_num.items()}
    prev, ltype, plog, pn, query, rts = (x.decode() if isinstance(x, bytes) else (x or "") for x in extra)
    n = int(float(pn or 0))
    return Snapshot(uid, list(seq), aff, list(bought), last_ts, aff_ts=when,
                    prev_ts=int(float(prev or 0)), last_type=ltype, price_mean=float(plog) / n if n else None,
                    query=query, recent_ts=[int(t) for t in rts.split(",") if t][:len(seq)], **kw)


class ProfileStore:
    """Users' profiles in Redis: `apply` computes each user's update in the worker and writes it, `read`
    takes snapshots.

    With `guard` (the default) `apply` checks the store's marker key in its first read and refuses a store
    without it (one that lost its data): it raises StoreEmptied and nothing is written. `recstream rebuild`
    applies with guard off, then sets the marker. `init_store` marks a store without a marker live at construction
    (a new deployment, a backtest, a test); the worker passes False and decides itself, since a store
    without a marker whose consumer group has committed offsets lost its data.
    """

    def __init__(self, client: redis.Redis, prefix: str, cfg: ProfileConfig = ProfileConfig(), *,
                 guard: bool = True, init_store: bool = True):
        self.client, self.prefix, self.cfg = client, prefix, cfg
        self.keys = Keys(prefix)
        try:
            self.cache = ProfileCache(client, cfg.cache_users, cfg.cache_ids)
        except redis.RedisError as exc:
            raise translate_redis(exc, "load profile_put.lua") from exc
        c = cfg
        self.guard = guard
        self.shared = SharedStats(client, prefix, c.trend_half_life_s, c.covis_cap)
        self.written = None           # called with the items of every shared write (an exact statistics cache)
        self._head = [int(c.affinity_half_life_s * 1000), c.max_seq, c.covis_n, c.seen_cap,
                      int(c.session_gap_s * 1000), c.max_affinities, c.bot_per_min]
        if guard and init_store and not self.is_live():
            self.mark_live()

    def mark_live(self) -> None:
        """Write the store's marker (a store initialised or rebuilt from the retained log)."""
        self.client.set(self.keys.marker, "1")

    def is_live(self) -> bool:
        return bool(self.client.exists(self.keys.marker))

    def read(self, users: list[str]) -> dict[str, Snapshot]:
        """Current snapshots without applying anything (one pipelined round-trip)."""
        pipe = self.client.pipeline(transaction=False)
        for uid in users:
            pipe.hget(self.keys.user(uid), "b")
        try:
            r = pipe.execute()
        except TRANSIENT_REDIS as exc:
            raise translate_redis(exc, "read profiles") from exc
        hl = self.cfg.affinity_half_life_s * 1000
        out = {}
        for uid, blob in zip(users, r):
            _, seq, flat, bought, last, extra, _ = snapshot_reply(decode_profile(blob))
            out[uid] = _snapshot(uid, seq, flat, bought, last, extra, hl)
        return out

    def _enrich(self, events: list[Event], user_keys: list[tuple[str, str]]
                ) -> dict[str, tuple[str | None, str | None, float | None]]:
        """One round-trip: the store's marker checked (with `guard`), the profiles the cache does not hold
        read, the catalog's (category, brand, price) read for the items whose events lack any of them, an
        event's category recorded for its item."""
        need = sorted({ev.item_id for ev in events if ev.item_id and (
            not (ev.context or {}).get("category") or not (ev.context or {}).get("brand") or ev.price is None)})
        pipe = pipeline(self.client)
        if self.guard:
            pipe.execute_command("EXISTS", self.keys.marker)
        missing = self.cache.queue_loads(pipe, user_keys)
        queue_meta(pipe, self.keys, need)
        for item, cat in {(ev.item_id, str((ev.context or {}).get("category"))) for ev in events
                          if ev.item_id and (ev.context or {}).get("category")}:
            pipe.execute_command("HSETNX", self.keys.item(item), "cat", cat)
        got = pipe.execute()
        if self.guard and not got.pop(0):
            self.cache.forget_all()
            raise StoreEmptied(f"the store has no marker {self.keys.marker}: it was emptied")
        self.cache.loaded(missing, got[:2 * len(missing)])
        return dict(zip(need, map(parse_meta, got[2 * len(missing):])))

    def apply(self, events: list[Event], origins: list[InMessage] | None = None, share: bool = True
              ) -> dict[str, Snapshot]:
        """Apply events (batch order = per-user order) and return each touched user's snapshot, with the
        shared part of its applied events (`Snapshot.fed`), added to the shared statistics unless `share` is
        False (then the caller calls `share` once for the whole batch). `origins`: the message each event
        came from (its partition and offset guard the shared writes)."""
        if not events:
            return {}
        origins = origins or [None] * len(events)
        by_user: dict[str, list[tuple[Event, InMessage | None]]] = {}
        for ev, m in zip(events, origins):
            by_user.setdefault(ev.user_id, []).append((ev, m))
        try:
            meta = self._enrich(events, [self.keys.user_keys(uid) for uid in by_user])
        except redis.RedisError as exc:
            raise translate_redis(exc, f"read the catalog for {len(events)} events") from exc
        calls, cats = [], {}
        for uid, evs in by_user.items():
            offs = [m.offset for _, m in evs if m is not None and m.offset >= 0]
            args = [*self._head, min(offs) if offs else ""]
            for ev, m in evs:
                ctx = ev.context or {}
                cat0, brand0, price0 = meta.get(ev.item_id, (None, None, None))
                cat = str(ctx.get("category") or cat0 or "")
                price = ev.price if ev.price is not None else price0
                cats[ev.event_id] = cat
                args += [ev.event_id, ev.type, ev.item_id or "", ev.ts, cat, str(ctx.get("brand") or brand0 or ""),
                         WEIGHTS[ev.type], "" if price is None else price, ev.query or "",
                         m.offset if m is not None and m.offset >= 0 else ""]
            calls.append((self.keys.user_keys(uid), args))
        try:
            results, states = self.cache.apply(calls, self.cfg.seen_cap)
        except redis.RedisError as exc:
            raise translate_redis(exc, f"apply profiles ({len(events)} events)") from exc
        hl = self.cfg.affinity_half_life_s * 1000
        out = {}
        for u, ((uid, evs), (flags, seq, aff, bought, last_ts, extra, shared)) in enumerate(zip(by_user.items(),
                                                                                               results)):
            fresh = [ev for (ev, _), f in zip(evs, flags) if f != "0"]
            fed = []
            for i in range(0, len(shared), 2):
                ev, m = evs[int(shared[i]) - 1]
                src = f"{m.topic}|{m.partition}" if m is not None and m.offset >= 0 else ""
                fed.append(Fed.decode(src, m.offset if src else -1, ev.item_id, cats[ev.event_id], WEIGHTS[ev.type],
                                      ev.ts, shared[i + 1], rating_of(ev.context)))
            out[uid] = _snapshot(uid, seq, aff, bought, last_ts, extra, hl, aff_numbers(states[u]),
                                 applied=len(fresh), events=[ev for ev, _ in evs], fresh=fresh, bot="2" in flags,
                                 fed=fed)
        if share:
            self.share(out, origins)
        return out

    def share(self, snaps: dict[str, Snapshot], origins: list) -> int:
        """Add the snapshots' shared parts to the shared statistics, once per input offset (`origins`: the
        batch's messages; their newest offset per partition moves the shards' guards)."""
        newest: dict[str, int] = {}
        for m in origins:
            if m is not None and m.offset >= 0:
                src = f"{m.topic}|{m.partition}"
                newest[src] = max(newest.get(src, -1), m.offset)
        fed = [f for snap in snaps.values() for f in snap.fed]
        try:
            return self.shared.write(fed, newest)
        except redis.RedisError as exc:
            raise translate_redis(exc, "add the shared statistics") from exc
        finally:                      # (a write that failed part-way may have added some of them)
            if self.written is not None:
                self.written({f.item for f in fed})
