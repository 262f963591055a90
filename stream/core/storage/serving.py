"""What the worker leaves in Redis for readers (the HTTP API, the dashboard): each user's latest
recommendation, and each worker's status (a heartbeat with its live numbers).

    {P}{u:<user>}:latest   string  the user's newest Recommendation as JSON, with a TTL (the user's slot)
    {P}workers             hash    worker id -> status JSON {"ts": wall ms, "events": ..., ...}
    {P}clock               zset    "events" -> the newest event time applied (ms): the store's "now" for a
                                   reader asking afresh (trending and recency run on event time)

A reader trusts a worker's status only while it is fresh (`fresh_workers`); a latest list only while
it is younger than the bound the reader asks for (the API then asks the pipeline afresh).
"""
from __future__ import annotations

import time

import orjson

from stream.core.experiments import OUTCOMES
from stream.core.storage.store import Keys, key_part

LATEST = ":latest"
WORKERS = "workers"
CLOCK = "clock"


def latest_key(prefix: str, user: str) -> str:
    """The user's latest-recommendation key, in the user's hash slot.

    >>> latest_key("rs:", "u:1")
    'rs:{u:u%3A1}:latest'
    """
    return Keys(prefix).user(user) + LATEST


def put_latest(pipe, prefix: str, recs, ttl_s: int) -> None:
    """Queue on `pipe` each recommendation as its user's latest (the producer's order is kept, so a
    batch's list replaces an older one) and the newest event time."""
    if not recs or ttl_s <= 0:
        return
    for rec in recs:
        pipe.execute_command("SET", latest_key(prefix, rec.user_id), rec.to_json(), "EX", ttl_s)
    pipe.execute_command("ZADD", prefix + CLOCK, "GT", max(rec.event_ts for rec in recs), "events")


def store_now(client, prefix: str) -> int:
    """The newest event time the worker applied (ms), or the wall clock when none is known."""
    t = client.zscore(prefix + CLOCK, "events")
    return int(t) if t else int(time.time() * 1000)


def decode_latest(raw: bytes | None) -> dict | None:
    return orjson.loads(raw) if raw else None


def put_status(client, prefix: str, worker: str, status: dict) -> None:
    client.hset(prefix + WORKERS, worker, orjson.dumps({**status, "ts": int(time.time() * 1000)}))


def fresh_workers(raw: dict, max_age_s: float = 30.0, now_ms: int | None = None) -> dict[str, dict]:
    """worker id -> status, for the workers heard from within `max_age_s` (raw: the `workers` hash).

    >>> now = 100_000
    >>> sorted(fresh_workers({b"a": b'{"ts": 95000}', b"b": b'{"ts": 1}'}, 30, now))
    ['a']
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    out = {}
    for k, v in raw.items():
        st = orjson.loads(v)
        if now_ms - st.get("ts", 0) <= max_age_s * 1000:
            out[k.decode() if isinstance(k, bytes) else k] = st
    return out


def _ab_key(prefix: str, experiment: str, variant: str) -> str:
    return f"{prefix}ab:{key_part(experiment)}:{key_part(variant)}"


def add_outcomes(pipe, prefix: str, experiment: str, increments: dict) -> None:
    """Queue on `pipe` an `OutcomeJoin.drain()` added to the experiment's per-variant hashes (field
    `<user>|<outcome>`)."""
    if not increments:
        return
    variants = set()
    for (variant, user), row in increments.items():
        key = _ab_key(prefix, experiment, variant)
        variants.add(variant)
        u = key_part(user)
        for name, v in zip(OUTCOMES, row):
            if v:
                if name == "revenue":
                    pipe.execute_command("HINCRBYFLOAT", key, f"{u}|{name}", float(v))
                else:
                    pipe.execute_command("HINCRBY", key, f"{u}|{name}", int(v))
    pipe.execute_command("SADD", f"{prefix}ab:{key_part(experiment)}", *sorted(variants))


def read_outcomes(client, prefix: str, experiment: str) -> dict[str, dict[str, list[float]]]:
    """variant -> user (as stored) -> [lists, clicked, carted, bought, revenue]; two round-trips."""
    col = {n: i for i, n in enumerate(OUTCOMES)}
    variants = sorted(x.decode() for x in client.smembers(f"{prefix}ab:{key_part(experiment)}"))
    pipe = client.pipeline(transaction=False)
    for v in variants:
        pipe.hgetall(_ab_key(prefix, experiment, v))
    out = {}
    for v, fields in zip(variants, pipe.execute()):
        users: dict[str, list[float]] = {}
        for field, val in fields.items():
            user, _, name = field.decode().rpartition("|")
            users.setdefault(user, [0.0] * len(OUTCOMES))[col[name]] = float(val)
        out[v] = users
    return out
