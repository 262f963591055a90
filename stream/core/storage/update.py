"""Each user's profile update, computed in the worker (`cache.ProfileCache` holds the profiles and writes
them back): the logic of the former per-user Lua script, `lua/apply_events.lua`, exactly.

`apply_user(state, args)` takes the script's argument list (as `ProfileStore.apply` builds it), changes
`state` as the script changed the user's keys and returns what the script returned, with the event ids
it applied. The state keeps the fields as the script's keys held them (strings where Redis held strings,
the same roundings: affinities as "%.10g|%d", numbers written the way Redis writes a Lua number, purchase
prices summed in long double as HINCRBYFLOAT does), so that `tests/test_profile_update.py` can hold it to
the script, reply by reply and profile by profile, on a real redis-server.
"""
from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass, field

import msgspec
import numpy as np
import orjson

HEAD, PER, COOC_N, BOUGHT_CAP = 8, 10, 5, 100


def _num(s: str) -> float | None:
    """Lua's `tonumber` on an argument ("" and non-numbers give None)."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def _lua_str(x: float) -> str:
    """A Lua number as Redis writes it into a key (`%.17g`), as `tostring` would for integers."""
    return f"{x:.17g}"


@dataclass
class UserState:
    """One user's profile: its fields (counters, last_ts, prev_ts, last_type, plog, pn, q, rts), the recent
    items (newest first), the affinities, the purchases (item -> ts), the applied event ids (id -> ts; and
    `order`, the same as (ts, id) sorted, as the seen set's sorted set orders them: a user at the cap of 2,000
    ids costs a bisection an event, not a scan) and the outbox (input offset -> the event's shared part, until
    a later batch starts past it)."""
    hash: dict[str, str] = field(default_factory=dict)
    seq: list[str] = field(default_factory=list)
    aff: dict[str, str] = field(default_factory=dict)
    bought: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    out: dict[str, str] = field(default_factory=dict)
    order: list[tuple[float, str]] = field(default_factory=list)
    # the affinities as numbers, (value, reference ms) as their text reads back (None: not parsed yet): a
    # user at the cap of 64 fields is not parsed again on every call and every snapshot (not stored)
    affn: dict[str, tuple[float, int]] | None = None
    newest: list[str] | None = None     # the 20 newest purchases, as replied (None: the purchases changed)


def apply_user(st: UserState, args: list) -> tuple[list, dict[str, float]]:
    """The script's reply ({flags, recent items, affinities (flat), bought, last_ts, extra, shared parts}) and
    the events applied (id -> ts: the seen set's additions)."""
    a = [str(x) for x in args]
    hl, max_seq, covis_n, seen_cap = float(a[0]), int(a[1]), int(a[2]), int(a[3])
    gap, max_aff, bot_per_min = float(a[4]), int(a[5]), float(a[6])
    keep_from = _num(a[7])
    h = st.hash
    last_ts = _num(h.get("last_ts", "0")) or 0.0
    prev_ts: object = h.get("prev_ts", "0")
    last_type, plog, pn, query = h.get("last_type", ""), h.get("plog", "0"), h.get("pn", "0"), h.get("q")
    seq = st.seq[:max_seq]
    seq_ts = [t for t in h.get("rts", "").split(",") if t]
    seq_ts = (seq_ts + ["0"] * len(seq))[: len(seq)]
    aff = st.aff                        # changed in place (the cache drops a copy whose write failed)
    affn = aff_numbers(st)
    n = (len(a) - HEAD) // PER

    def decayed_add(f: str, w: float, ts: float) -> None:
        cur = affn.get(f)
        v, ref = (float(cur[0]), float(cur[1])) if cur is not None else (0.0, ts)
        if ts >= ref:
            v = v * math.pow(2, -(ts - ref) / hl) + w
            ref = ts
        else:
            v = v + w * math.pow(2, -(ref - ts) / hl)
        vs, r = f"{v:.10g}", int(ref)
        aff[f], affn[f] = f"{vs}|{r}", (float(vs), r)

    def forget_weakest(ts: float) -> None:
        worst, worst_v = None, None
        for k, (vn, rn) in affn.items():
            v = vn * math.pow(2, -(ts - rn) / hl)
            if worst_v is None or v < worst_v or (v == worst_v and k < worst):
                worst, worst_v = k, v
        del aff[worst], affn[worst]

    if keep_from is not None:
        st.out = {k: v for k, v in st.out.items() if float(k) >= keep_from}
    events = [a[HEAD + e * PER: HEAD + (e + 1) * PER] for e in range(n)]
    known = [st.seen.get(ev[0]) for ev in events]
    card = len(st.seen)
    oldest = None
    order = st.order
    recent: list[float] = []            # this batch's applied events (the seen set's are counted in `order`)
    flags, shared, counts, pushed, fresh_ts, outbox = [], [], {}, [], {}, []
    user_changed = False
    for e, (eid, etype, item, ts_s, cat, brand, w_s, price_s, q, offset) in enumerate(events):
        ts, w, price = float(ts_s), float(w_s), _num(price_s)
        fresh = known[e] is None and eid not in fresh_ts
        if fresh and card >= seen_cap:
            if oldest is None:
                oldest = order[0][0] if order else -1.0
            if ts < oldest:
                fresh = False
        if not fresh:
            flags.append("0")
            if offset != "" and offset in st.out:
                shared += [e + 1, st.out[offset]]
            continue
        fresh_ts[eid] = ts
        card += 1
        recent.append(ts)
        counts[etype] = counts.get(etype, 0) + 1
        before = bisect.bisect_right(order, ts, key=_ts) - bisect.bisect_left(order, ts - 60000, key=_ts)
        learn = before + sum(1 for t in recent if ts - 60000 <= t <= ts) <= bot_per_min
        if not learn:
            counts["bot_flagged"] = counts.get("bot_flagged", 0) + 1
        flags.append("1" if learn else "2")
        last = last_ts
        if ts >= last_ts:
            last_ts, prev_ts, last_type, user_changed = ts, last, etype, True
        if q != "":
            query, user_changed = q, True
        if item == "":
            continue
        if price is not None and price > 0 and etype in ("add_to_cart", "purchase"):
            plog = _incr_float(plog, math.log(price))
            pn = str(int(pn) + 1)
        prev = seq[: min(len(seq), max(covis_n, 3 * COOC_N))]
        stage = len(seq)
        if not prev or prev[0] != item:
            seq.insert(0, item)
            seq_ts.insert(0, _lua_str(ts))
            if len(seq) > max_seq:
                seq.pop()
                seq_ts.pop()
            pushed.append(item)
            user_changed = True
        elif ts > float(seq_ts[0]):
            seq_ts[0] = _lua_str(ts)
            user_changed = True
        if cat != "":
            decayed_add("c:" + cat, w, ts)
        if brand != "":
            decayed_add("b:" + brand, w, ts)
        while len(aff) > max_aff:      # an event can bring two new fields (its category and its brand)
            forget_weakest(ts)
        if etype == "purchase":
            st.bought[item], st.newest = ts, None
            if len(st.bought) > BOUGHT_CAP:
                del st.bought[min(st.bought.items(), key=_score_member)[0]]
        if not learn:
            continue
        follows: list[str] = []
        if ts - last <= gap and prev and prev[0] != item:
            follows = [p for p in dict.fromkeys(prev[:covis_n]) if p != item]
        distinct: list[str] = []
        for p in prev:                 # the newest distinct items, until the item itself or COOC_N of them
            if p == item:
                distinct = []
                break
            if p not in distinct:
                distinct.append(p)
                if len(distinct) >= COOC_N:
                    break
        part = orjson.dumps({"v": follows, "s": distinct, "h": stage}).decode()
        shared += [e + 1, part]
        if offset != "":
            outbox += [offset, part]
    # the writes
    st.seen.update(fresh_ts)
    for eid, ts in fresh_ts.items():
        bisect.insort(order, (ts, eid))
    if card > seen_cap:
        for _, k in order[:card - seen_cap]:
            del st.seen[k]
        del order[:card - seen_cap]
    for k, c in counts.items():
        h["n:" + k] = str(int(h.get("n:" + k, "0")) + c)
    if user_changed:
        h.update({"last_ts": _lua_str(last_ts), "prev_ts": prev_ts if isinstance(prev_ts, str) else _lua_str(prev_ts),
                  "last_type": last_type, "rts": ",".join(seq_ts)})
        if query is not None:
            h["q"] = query
    if plog != h.get("plog", "0") or pn != h.get("pn", "0"):
        h["plog"], h["pn"] = plog, pn
    st.seq = seq
    for i in range(0, len(outbox), 2):
        st.out[outbox[i]] = outbox[i + 1]
    reply = ["".join(flags), list(seq), [x for kv in aff.items() for x in kv], newest_bought(st),
             _lua_str(last_ts), [prev_ts if isinstance(prev_ts, str) else _lua_str(prev_ts), last_type, plog, pn,
                                 query or "", ",".join(seq_ts)], shared]
    return reply, fresh_ts


def aff_numbers(st: UserState) -> dict[str, tuple[float, int]]:
    """`st.affn`, parsed from the stored texts the first time it is asked for."""
    if st.affn is None:
        st.affn = {}
        for k, val in st.aff.items():
            vs, rs = val.split("|", 1)
            st.affn[k] = float(vs), int(rs)
    return st.affn


def _ts(entry: tuple[float, str]) -> float:
    return entry[0]


def _score_member(kv: tuple[str, float]) -> tuple[float, str]:
    return kv[1], kv[0]


def newest_bought(st: UserState) -> list[str]:
    """The user's 20 newest purchases (`_newest`), computed again only after a purchase."""
    if st.newest is None:
        st.newest = _newest(st.bought)
    return list(st.newest)


def _newest(bought: dict[str, float], n: int = 20) -> list[str]:
    """ZREVRANGE 0 n-1: by score, highest first, and among equal scores the members in reverse order."""
    return [k for k, _ in heapq.nlargest(n, bought.items(), key=_score_member)]


def _incr_float(cur: str, by: float) -> str:
    """HINCRBYFLOAT: long double arithmetic, written with 17 digits and trailing zeros removed."""
    v = np.longdouble(cur) + np.longdouble(_lua_str(by))
    s = np.format_float_positional(v, precision=17, unique=False, fractional=True, trim="-")
    return s


def snapshot_reply(st: UserState) -> list:
    """What the script returns for a call without events: the profile as it stands (for `read`)."""
    h = st.hash
    return ["", list(st.seq), [x for kv in st.aff.items() for x in kv], newest_bought(st), h.get("last_ts", "0"),
            [h.get("prev_ts", "0"), h.get("last_type", ""), h.get("plog", "0"), h.get("pn", "0"), h.get("q", ""),
             h.get("rts", "")], []]


_ENC = msgspec.msgpack.Encoder()


def encode(st: UserState) -> bytes:
    """The stored form of a profile (all but the seen set, which is a sorted set of its own)."""
    return _ENC.encode((st.hash, st.seq, st.aff, st.bought, st.out))


def decode(blob: bytes | None, seen: list | None = None) -> UserState:
    """A profile from its stored form and its seen set ([(id, ts)], as ZRANGE ... WITHSCORES replies)."""
    st = UserState()
    if blob:
        st.hash, st.seq, st.aff, st.bought, st.out = msgspec.msgpack.decode(blob)
    st.seen = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in (seen or [])}
    st.order = sorted((ts, k) for k, ts in st.seen.items())
    return st
