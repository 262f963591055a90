"""Redis access: one client, key names, and the Lua scripts, loaded once.

Every key lives under the settings' `key_prefix` (default "rs:"), so tests and several
deployments can share one Redis. Ids inside key names are escaped by `key_part` (`%`, `:`, `{`
and `}` become `%25`, `%3A`, `%7B`, `%7D`), so no id can name another id's keys: the user
`u1:aff` owns `{u:u1%3Aaff}`, never `u1`'s `:aff` hash. A user's keys share the hash tag
`{u:<id>}` (one Redis Cluster slot per user); the shared statistics are spread over `N_SHARDS` hash tags
`{s:NN}` (NN from the item or category id), each shard with its offset guard. Layout, with U = {P}{u:<user>}
and S = {P}{s:NN}:
  U                    hash   v: the profile's version, b: the profile (MessagePack: the fields below,
                              computed in the worker, stream/core/storage/update.py and cache.py)
                              - n:{type} counters, last_ts, prev_ts, last_type, plog, pn, q, rts
                              - recent item ids, newest first (the transformer's input)
                              - c:{category} / b:{brand} -> "value|ref_ts" (exponentially decayed)
                              - purchased items by ts (last 100)
                              - offset -> the shared part of an applied event, until its batch is committed
  U:seen               zset   applied event ids by ts (last `seen_cap`): the idempotency guard
  {P}i:{item}          hash   catalog entry: title, cat, brand, price, created_at
  S cv:{item}          zset   co-visited items -> weight (sequential: what users went to after the item)
  S cs:{item}          zset   co-occurring items -> count (symmetric: among a user's last 5 distinct items)
  S tr:{epoch}, S tr:c:{cat}:{epoch}     zset   forward-decayed trending scores
  S pop, S pop:c:{cat}                   zset   all-time popularity
  S ps:{stage}         zset   all-time popularity among events of users at a stage (`shared.stage_of`)
  S rsum, S rn         zset   explicit ratings (`context.rating`) per item: sum, count; member "": all items
  S guard              hash   input partition -> newest offset whose increments the shard holds
  {P}meta:live:2       string the store's marker: written at initialisation and by `recstream rebuild`;
                              a store without it was emptied, and nothing is applied to it
"""
from __future__ import annotations

import zlib
from pathlib import Path

import redis

from stream.core.storage.rawpipe import pipeline
from stream.core.storage.update import decode

_LUA = Path(__file__).parent / "lua"


# RESP2, not redis-py 8's RESP3: a sorted set's top with scores comes back flat (member, score as text) instead
# of a list per pair with a parsed double; 2,000 candidate reads of 50 members with their decoding cost the
# worker 56-59 ms against 74-77 (measured side by side, twenty-seventh session). The values are the same
# (Redis writes a score so that it reads back as the same double).
RESP = 2


def connect(url: str) -> redis.Redis:
    """A client on `url`; raise a clear error when nothing answers (the password never in it). A Redis
    Cluster is recognised by asking the node (`INFO cluster`): the client is then redis-py's `RedisCluster`,
    which routes every key to its slot's master (any master's address will do as the URL)."""
    from stream.secrets import redact_url
    client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, protocol=RESP)
    try:
        client.ping()
        if is_cluster(client):
            client.close()
            client = redis.RedisCluster.from_url(url, socket_timeout=30, socket_connect_timeout=5, protocol=RESP)
            client.ping()
    except redis.RedisError as exc:
        raise ConnectionError(f"no Redis answered at {redact_url(url)}: {exc}") from exc
    return client


def is_cluster(client) -> bool:
    if isinstance(client, redis.RedisCluster):
        return True
    return bool(int(client.info("cluster").get("cluster_enabled", 0)))


ZSET_LISTPACK_MAX = 64      # the zset-max-listpack-entries every Redis of ours runs with (docs/stack.md)


def server_advice(client) -> list[str]:
    """What this Redis' settings cost recstream, as lines for the log (none when they are fine, or when the
    server does not let a client read its configuration, as some managed ones do not). A sorted set kept
    as a listpack makes each increment a linear scan; the co-visitation sets live at 100-200 members."""
    nodes = ([client.get_redis_connection(n) for n in client.get_primaries()]
             if isinstance(client, redis.RedisCluster) else [client])
    out = []
    for node in nodes:
        try:
            got = node.config_get("zset-max-listpack-entries").get("zset-max-listpack-entries")
        except redis.RedisError:
            return []
        if got is not None and int(got) > ZSET_LISTPACK_MAX:
            out.append(f"Redis keeps sorted sets of up to {int(got)} members as listpacks: set "
                       f"zset-max-listpack-entries {ZSET_LISTPACK_MAX} (about 0.87x the Redis CPU per event; "
                       f"docs/stack.md)")
            break
    return out


def connect_async(url: str, **kw):
    """An asyncio client on `url` (the API's), a `RedisCluster` one when `url` is a cluster node."""
    import redis.asyncio as aredis
    probe = connect(url)
    cluster = is_cluster(probe)
    probe.close()
    return (aredis.RedisCluster if cluster else aredis.Redis).from_url(url, **kw)


_ESCAPE = str.maketrans({"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D"})
USER_SUFFIXES = ("", ":seen")    # the per-user keys: the profile and its seen ids (`profile_put.lua`'s KEYS)
N_SHARDS = 64                  # hash tags the shared statistics are spread over (slots of a Redis Cluster)


def shard_of_key(key: str) -> int:
    """The shard of a shared key, read from its hash tag.

    >>> shard_of_key(Keys("rs:").covis("i1")) == shard("i1")
    True
    """
    i = key.index("{s:") + 3
    return int(key[i:key.index("}", i)])


def shard(ident: str) -> int:
    """The shard of a shared statistic's key (stable across processes and versions).

    >>> shard("i1"), shard("pop")
    (43, 22)
    """
    return zlib.crc32(ident.encode()) % N_SHARDS


def key_part(ident: str) -> str:
    """An id as it appears inside a key name: injective, and free of `:`, `{` and `}`.

    >>> key_part("u1:aff"), key_part("50%{x}")
    ('u1%3Aaff', '50%25%7Bx%7D')
    """
    return ident.translate(_ESCAPE)


class Keys:
    """Key names for one prefix (see the module docstring for the layout).

    >>> Keys("rs:").user("u1:aff"), Keys("rs:").user_keys("u1")[1], Keys("rs:").covis("i1")
    ('rs:{u:u1%3Aaff}', 'rs:{u:u1}:seen', 'rs:{s:43}cv:i1')
    """

    def __init__(self, prefix: str):
        self.p = prefix
        self.marker = f"{prefix}meta:live:2"      # 2: the profile as one value (a store of the former keys is rebuilt)

    def user(self, uid: str) -> str:
        return f"{self.p}{{u:{key_part(uid)}}}"

    def user_keys(self, uid: str) -> tuple[str, str]:
        u = self.user(uid)
        return tuple(u + s for s in USER_SUFFIXES)

    def item(self, iid: str) -> str:
        return f"{self.p}i:{key_part(iid)}"

    def shared(self, ident: str) -> str:
        """The prefix of a shared key: {P}{s:NN} for the shard of `ident`."""
        return f"{self.p}{{s:{shard(ident):02d}}}"

    def guard(self, n: int) -> str:
        return f"{self.p}{{s:{n:02d}}}guard"

    def covis(self, iid: str) -> str:
        return f"{self.shared(iid)}cv:{key_part(iid)}"

    def cooccur(self, iid: str) -> str:
        return f"{self.shared(iid)}cs:{key_part(iid)}"

    def trend(self, epoch: int, cat: str | None = None) -> str:
        if cat:
            return f"{self.shared('c:' + cat)}tr:c:{key_part(cat)}:{epoch}"
        return f"{self.shared('tr')}tr:{epoch}"

    def pop(self, cat: str | None = None) -> str:
        return f"{self.shared('c:' + cat)}pop:c:{key_part(cat)}" if cat else f"{self.shared('pop')}pop"

    def rating(self) -> tuple[str, str]:
        """The items' explicit ratings: their sum and their count (member "": all items'), in pop's shard."""
        return f"{self.shared('pop')}rsum", f"{self.shared('pop')}rn"

    def stage_pop(self, stage: int) -> str:
        """Popularity among events of users at `stage` (`shared.stage_of`)."""
        return f"{self.shared(f'ps:{stage}')}ps:{stage}"


class Script:
    """A Lua script from stream/core/storage/lua/, run by EVALSHA, many calls in one pipeline. redis-py's registered
    scripts send a SCRIPT EXISTS round-trip before every pipeline that uses them; this loads once, and
    again only if the server says it lost it (a restart or SCRIPT FLUSH), then re-sends the pipeline
    (safe: the profile script is idempotent, a replayed event changes nothing)."""

    def __init__(self, client: redis.Redis, name: str):
        self.client, self.text = client, (_LUA / f"{name}.lua").read_text()
        self.sha = client.script_load(self.text)

    def execute(self, calls: list[tuple[list, list]]) -> list:
        """Run the script once per (keys, args) pair, in one pipeline."""
        for attempt in (0, 1):
            pipe = pipeline(self.client)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)   # (a cluster pipeline blocks .evalsha)
            try:
                return pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.sha = self.client.script_load(self.text)
        return []


def profile_fields(client: redis.Redis, prefix: str, users: list[str]) -> list[dict[str, str]]:
    """Each user's profile fields (counters n:{type}, last_ts, ...; empty for a user never seen), in one
    pipelined read (for tests, the demo's summary and `recstream profile`)."""
    keys, pipe = Keys(prefix), client.pipeline(transaction=False)
    for u in users:
        pipe.hget(keys.user(u), "b")
    return [decode(b).hash for b in pipe.execute()]


def user_profile_dump(client: redis.Redis, prefix: str, user: str) -> dict:
    """Everything stored about one user, as comparable Python values (for tests and `recstream profile`):
    the profile's fields as the former per-user keys held them (not the outbox: bookkeeping) and the seen set."""
    k, seen = Keys(prefix).user_keys(user)
    pipe = client.pipeline(transaction=False)
    pipe.hget(k, "b")
    pipe.zrange(seen, 0, -1, withscores=True)
    blob, seen_pairs = pipe.execute()
    st, enc = decode(blob), str.encode
    return {"profile": {enc(a): enc(b) for a, b in st.hash.items()}, "seq": [enc(x) for x in st.seq],
            "aff": {enc(a): enc(b) for a, b in st.aff.items()},
            "bought": [(enc(a), b) for a, b in sorted(st.bought.items(), key=lambda kv: (kv[1], kv[0]))],  # ZRANGE
            "seen": seen_pairs}


def shared_dump(client: redis.Redis, prefix: str) -> dict[str, dict[str, float]]:
    """Every shared statistic under `prefix` (co-visitation, co-occurrence, trending, popularity), as
    key without the prefix -> {member: score}; not the shards' offset guards (for tests and comparisons)."""
    out = {}
    for key in client.scan_iter(match=f"{prefix}{{s:*", count=1000):
        k = key.decode()
        if not k.endswith("}guard"):
            out[k[len(prefix):]] = {m.decode(): s for m, s in client.zrange(key, 0, -1, withscores=True)}
    return out


def shared_trims(client: redis.Redis, prefix: str) -> int:
    """How many times a co-visitation or co-occurrence set was cut back to its strongest members. A trim
    happens when a batch leaves a set past twice its cap, so which weak members survive depends on the batch
    boundaries: two runs of one log are equal member for member only while nothing was trimmed."""
    pipe = client.pipeline(transaction=False)
    for n in range(N_SHARDS):
        pipe.hget(Keys(prefix).guard(n), "trimmed")
    return sum(int(v) for v in pipe.execute() if v)


def shared_differences(got: dict, expected: dict, rel: float = 1e-9) -> list[str]:
    """The keys of two `shared_dump`s (same prefix) that differ: counts exactly; trending scores (floats,
    summed per batch: other batch boundaries round differently) to `rel` relative."""
    bad = list(set(got) ^ set(expected))
    for k in set(got) & set(expected):
        a, b = got[k], expected[k]
        if "}tr:" in k:
            if a.keys() != b.keys() or any(abs(a[m] - b[m]) > rel * max(abs(b[m]), 1.0) for m in b):
                bad.append(k)
        elif a != b:
            bad.append(k)
    return sorted(bad)
