"""The raw pipeline on a real redis-server: the same replies as redis-py's pipeline for the commands the worker
sends through it, an error reply raised only after every reply was read (the connection stays usable), and
redis-py's own pipeline wherever the raw one does not apply."""
import uuid

import pytest
import redis

from stream.core.storage.rawpipe import RawPipeline, pipeline

pytestmark = pytest.mark.integration


def _commands(p: str) -> list[tuple]:
    return [("ZREVRANGE", p + "z", 0, 2, "WITHSCORES"), ("ZMSCORE", p + "z", "a", "nope", "c"),
            ("HMGET", p + "h", "cat", "brand", "price"), ("HGET", p + "h", "missing"), ("EXISTS", p + "h"),
            ("HSETNX", p + "h", "cat", "other"), ("SET", p + "s", b'{"x": 1}', "EX", 60), ("GET", p + "s"),
            ("ZADD", p + "clock", "GT", 5, "events"), ("HINCRBYFLOAT", p + "f", "x", 0.1 + 0.2),
            ("HINCRBY", p + "f", "n", 3), ("SADD", p + "set", "b", "a"), ("ZRANGE", p + "z", 0, -1, "WITHSCORES")]


def _seed(client, p: str) -> None:
    client.delete(p + "z", p + "h", p + "s", p + "clock", p + "f", p + "set")
    client.zadd(p + "z", {"a": 1.5, "b": 0.1 + 0.2, "c": 7})
    client.hset(p + "h", mapping={"cat": "shoes", "price": "12.5"})


def test_same_replies_as_redis_py(redis_client):
    p = f"rs:raw{uuid.uuid4().hex[:6]}:"
    _seed(redis_client, p)
    reference = redis_client.pipeline(transaction=False)
    for c in _commands(p):
        reference.execute_command(*c)
    want = reference.execute()
    _seed(redis_client, p)
    raw = pipeline(redis_client)
    assert isinstance(raw, RawPipeline)
    for c in _commands(p):
        raw.execute_command(*c)
    assert len(raw) == len(_commands(p))
    got = raw.execute()
    # redis-py's callbacks parse ZMSCORE's and HINCRBYFLOAT's numbers and turn SET's OK into True; the raw
    # replies keep Redis' text (the same value; the worker's callers take either or ignore the reply)
    parsed = {1: lambda r: [float(v) if v is not None else None for v in r], 6: lambda r: r == b"OK", 9: float}
    assert [parsed.get(i, lambda r: r)(r) for i, r in enumerate(got)] == want
    assert raw.execute() == [] and len(raw) == 0          # nothing queued: no round trip


def test_an_error_reply_is_raised_after_every_reply_was_read(redis_client):
    p = f"rs:raw{uuid.uuid4().hex[:6]}:"
    redis_client.set(p + "text", "not a set")
    raw = pipeline(redis_client)
    raw.execute_command("SET", p + "a", "1")
    raw.execute_command("ZREVRANGE", p + "text", 0, 1)         # WRONGTYPE
    raw.execute_command("EVALSHA", "0" * 40, 0)               # NOSCRIPT
    raw.execute_command("SET", p + "b", "2")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        raw.execute()
    # the commands after the errors ran, and the next pipeline on the pooled connection reads its own replies
    assert redis_client.mget(p + "a", p + "b") == [b"1", b"2"]
    again = pipeline(redis_client)
    again.execute_command("GET", p + "a")
    assert again.execute() == [b"1"]
    only = pipeline(redis_client)
    only.execute_command("EVALSHA", "0" * 40, 0)
    with pytest.raises(redis.exceptions.NoScriptError):       # what `Script` reloads on
        only.execute()


def test_other_clients_keep_redis_pys_pipeline(stack, cluster_url):
    from stream.core.storage.store import connect
    resp3 = redis.Redis.from_url(stack[1], protocol=3)
    assert not isinstance(pipeline(resp3), RawPipeline)
    cluster = connect(cluster_url)
    assert isinstance(cluster, redis.RedisCluster) and not isinstance(pipeline(cluster), RawPipeline)
