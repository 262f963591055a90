"""Redis access: one client, key names, and the Lua scripts, loaded once.

Every key lives under the settings' `key_prefix` (default "rs:"), so tests and several
deployments can share one Redis. Layout:
  {P}u:{user}          hash   n:{type} counters, last_ts
  {P}u:{user}:seq      list   recent item ids, newest first (the transformer's input)
  {P}u:{user}:aff      hash   c:{category} / b:{brand} -> "value|ref_ts" (exponentially decayed)
  {P}u:{user}:bought   zset   purchased items by ts (last 100)
  {P}u:{user}:seen     zset   applied event ids by ts (last `seen_cap`): the idempotency guard
  {P}i:{item}          hash   catalog entry: title, cat, brand, price, created_at
  {P}cv:{item}         zset   co-visited items -> weight
  {P}tr:{epoch}, {P}tr:c:{cat}:{epoch}   zset   forward-decayed trending scores
  {P}pop, {P}pop:c:{cat}                 zset   all-time popularity
"""
from __future__ import annotations

from pathlib import Path

import redis

_LUA = Path(__file__).parent / "lua"


def connect(url: str) -> redis.Redis:
    """A client on `url`; raise a clear error when nothing answers."""
    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConnectionError(f"no Redis answered at {url}: {exc}") from exc
    return client


class Keys:
    def __init__(self, prefix: str):
        self.p = prefix

    def user(self, uid: str) -> str:
        return f"{self.p}u:{uid}"

    def item(self, iid: str) -> str:
        return f"{self.p}i:{iid}"

    def covis(self, iid: str) -> str:
        return f"{self.p}cv:{iid}"

    def trend(self, epoch: int, cat: str | None = None) -> str:
        return f"{self.p}tr:c:{cat}:{epoch}" if cat else f"{self.p}tr:{epoch}"

    def pop(self, cat: str | None = None) -> str:
        return f"{self.p}pop:c:{cat}" if cat else f"{self.p}pop"


class Script:
    """A Lua script from stream/lua/, run by EVALSHA, many calls in one pipeline. redis-py's registered
    scripts send a SCRIPT EXISTS round-trip before every pipeline that uses them; this loads once, and
    again only if the server says it lost it (a restart or SCRIPT FLUSH), then re-sends the pipeline
    (safe: the profile script is idempotent, a replayed event changes nothing)."""

    def __init__(self, client: redis.Redis, name: str):
        self.client, self.text = client, (_LUA / f"{name}.lua").read_text()
        self.sha = client.script_load(self.text)

    def execute(self, calls: list[list]) -> list:
        """Run the script once per argument list (no keys: the script derives them), in one pipeline."""
        for attempt in (0, 1):
            pipe = self.client.pipeline(transaction=False)
            for args in calls:
                pipe.evalsha(self.sha, 0, *args)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.sha = self.client.script_load(self.text)
        return []


def user_profile_dump(client: redis.Redis, prefix: str, user: str) -> dict:
    """Everything stored about one user, as comparable Python values (for tests and `recstream profile`)."""
    k = Keys(prefix).user(user)
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(k)
    pipe.lrange(k + ":seq", 0, -1)
    pipe.hgetall(k + ":aff")
    pipe.zrange(k + ":bought", 0, -1, withscores=True)
    pipe.zrange(k + ":seen", 0, -1, withscores=True)
    h, seq, aff, bought, seen = pipe.execute()
    return {"profile": h, "seq": seq, "aff": aff, "bought": bought, "seen": seen}
