"""The per-user update of `lua/apply_events.lua`, in Python, on a profile held in the worker (work in
progress, not wired in: the groundwork for a worker-side profile cache, docs/open-items.md).

`apply_user(state, args)` takes the script's own argument list (the same `ProfileStore.apply` builds) and
changes `state` exactly as the script changes the user's keys, returning what the script returns. The
state mirrors the keys as the script leaves them (strings where Redis holds strings, the same roundings:
affinities kept as "%.10g|%d", numbers written the way Redis writes a Lua number), so that a differential
test can compare it with `user_profile_dump` after the script ran on the same events.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

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
    """One user's keys: U (a hash), U:seq (newest first), U:aff, U:bought (item -> ts), U:seen (id -> ts),
    U:out (offset -> shared part)."""
    hash: dict[str, str] = field(default_factory=dict)
    seq: list[str] = field(default_factory=list)
    aff: dict[str, str] = field(default_factory=dict)
    bought: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    out: dict[str, str] = field(default_factory=dict)


def apply_user(st: UserState, args: list) -> list:
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
    aff = dict(st.aff)
    aff_set: set[str] = set()
    aff_del: set[str] = set()
    n = (len(a) - HEAD) // PER

    def decayed_add(f: str, w: float, ts: float) -> None:
        cur = aff.get(f)
        v, ref = 0.0, ts
        if cur is not None:
            vs, rs = cur.split("|", 1)
            v, ref = float(vs), float(rs)
        if ts >= ref:
            v = v * math.pow(2, -(ts - ref) / hl) + w
            ref = ts
        else:
            v = v + w * math.pow(2, -(ref - ts) / hl)
        aff[f] = f"{v:.10g}|{int(ref)}"
        aff_set.add(f)
        aff_del.discard(f)

    def forget_weakest(ts: float) -> None:
        worst, worst_v = None, None
        for k, val in aff.items():
            vs, rs = val.split("|", 1)
            v = float(vs) * math.pow(2, -(ts - float(rs)) / hl)
            if worst_v is None or v < worst_v or (v == worst_v and k < worst):
                worst, worst_v = k, v
        del aff[worst]
        aff_set.discard(worst)
        aff_del.add(worst)

    if keep_from is not None:
        st.out = {k: v for k, v in st.out.items() if float(k) >= keep_from}
    events = [a[HEAD + e * PER: HEAD + (e + 1) * PER] for e in range(n)]
    min_ts = min((float(ev[3]) for ev in events), default=None)
    known = [st.seen.get(ev[0]) for ev in events]
    card = len(st.seen)
    oldest = None
    recent = [ts for ts in st.seen.values() if ts >= min_ts - 60000] if n else []    # counted, not ordered
    flags, shared, counts, pushed, fresh_ts, fresh_ids, outbox = [], [], {}, [], {}, [], []
    user_changed = False
    for e, (eid, etype, item, ts_s, cat, brand, w_s, price_s, q, offset) in enumerate(events):
        ts, w, price = float(ts_s), float(w_s), _num(price_s)
        fresh = known[e] is None and eid not in fresh_ts
        if fresh and card >= seen_cap:
            if oldest is None:
                oldest = min(st.seen.values(), default=-1.0)
            if ts < oldest:
                fresh = False
        if not fresh:
            flags.append("0")
            if offset != "" and offset in st.out:
                shared += [e + 1, st.out[offset]]
            continue
        fresh_ts[eid] = ts
        fresh_ids.append(eid)
        card += 1
        recent.append(ts)
        counts[etype] = counts.get(etype, 0) + 1
        learn = sum(1 for t in recent if ts - 60000 <= t <= ts) <= bot_per_min
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
        if len(aff) > max_aff:
            forget_weakest(ts)
        if etype == "purchase":
            st.bought[item] = ts
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
    for eid in fresh_ids:
        st.seen[eid] = fresh_ts[eid]
    if card > seen_cap:
        for k, _ in heapq.nsmallest(card - seen_cap, st.seen.items(), key=_score_member):
            del st.seen[k]
    for k, c in counts.items():
        h["n:" + k] = str(int(h.get("n:" + k, "0")) + c)
    if user_changed:
        h.update({"last_ts": _lua_str(last_ts), "prev_ts": prev_ts if isinstance(prev_ts, str) else _lua_str(prev_ts),
                  "last_type": last_type, "rts": ",".join(seq_ts)})
        if query is not None:
            h["q"] = query
    if plog != h.get("plog", "0") or pn != h.get("pn", "0"):
        h["plog"], h["pn"] = plog, pn
    if pushed:
        st.seq = list(seq)
    st.aff = dict(aff)
    for i in range(0, len(outbox), 2):
        st.out[outbox[i]] = outbox[i + 1]
    bought = _newest(st.bought)
    return ["".join(flags), list(seq), [x for kv in aff.items() for x in kv], bought, _lua_str(last_ts),
            [prev_ts if isinstance(prev_ts, str) else _lua_str(prev_ts), last_type, plog, pn, query or "",
             ",".join(seq_ts)], shared]


def _score_member(kv: tuple[str, float]) -> tuple[float, str]:
    return kv[1], kv[0]


def _newest(bought: dict[str, float], n: int = 20) -> list[str]:
    """ZREVRANGE 0 n-1: by score, highest first, and among equal scores the members in reverse order."""
    return [k for k, _ in heapq.nlargest(n, bought.items(), key=_score_member)]


def _incr_float(cur: str, by: float) -> str:
    """HINCRBYFLOAT: long double arithmetic, written with 17 digits and trailing zeros removed."""
    import numpy as np
    v = np.longdouble(cur) + np.longdouble(_lua_str(by))
    s = np.format_float_positional(v, precision=17, unique=False, fractional=True, trim="-")
    return s


def snapshot_reply(st: UserState) -> list:
    """What the script returns for a call without events: the profile as it stands (for `read`)."""
    h = st.hash
    bought = _newest(st.bought)
    seq_ts = [t for t in h.get("rts", "").split(",") if t]
    return ["", list(st.seq), [x for kv in st.aff.items() for x in kv], bought, h.get("last_ts", "0"),
            [h.get("prev_ts", "0"), h.get("last_type", ""), h.get("plog", "0"), h.get("pn", "0"), h.get("q", ""),
             ",".join(seq_ts)], []]


_ENC = None


def encode(st: UserState) -> bytes:
    """The stored form of a profile (all but the seen set, which is a sorted set of its own)."""
    global _ENC
    import msgspec
    _ENC = _ENC or msgspec.msgpack.Encoder()
    return _ENC.encode((st.hash, st.seq, st.aff, st.bought, st.out))


def decode(blob: bytes | None, seen: list | None = None) -> UserState:
    """A profile from its stored form and its seen set ([(id, ts)], as ZRANGE ... WITHSCORES replies)."""
    import msgspec
    st = UserState()
    if blob:
        st.hash, st.seq, st.aff, st.bought, st.out = msgspec.msgpack.decode(blob)
    st.seen = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in (seen or [])}
    return st
