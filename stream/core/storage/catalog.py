"""The item catalog: `Item` upserts stored in Redis (`{P}i:{item}`) with an in-process cache of
what the ranking stage needs (category, brand, price), filled lazily with one pipelined read per batch."""
from __future__ import annotations

import redis

from schemas import Item
from stream.core.storage.rawpipe import pipeline
from stream.core.storage.store import Keys


class Catalog:
    def __init__(self, client: redis.Redis, prefix: str, max_cache: int = 500_000):
        self.client, self.prefix, self.max_cache = client, prefix, max_cache
        self.keys = Keys(prefix)
        self._meta: dict[str, tuple[str | None, str | None, float | None]] = {}

    def upsert(self, items: list[Item], pipe=None) -> None:
        own = pipe is None
        pipe = pipe or self.client.pipeline(transaction=False)
        for it in items:
            mapping = {"title": it.title, "cat": it.category_key, "text": it.text}
            if it.brand:
                mapping["brand"] = it.brand
            if it.price is not None:
                mapping["price"] = it.price
            if it.created_at is not None:
                mapping["created_at"] = it.created_at
            pipe.hset(self.keys.item(it.item_id), mapping=mapping)
            self._meta[it.item_id] = (it.category_key or None, it.brand or None, it.price)
        if own:
            pipe.execute()

    def meta(self, item_ids) -> dict[str, tuple[str | None, str | None, float | None]]:
        """item -> (category, brand, price), None where unknown."""
        missing = [i for i in item_ids if i not in self._meta]
        if missing:
            if len(self._meta) > self.max_cache:
                self._meta.clear()
            pipe = pipeline(self.client)
            queue_meta(pipe, self.keys, missing)
            self._meta.update(zip(missing, map(parse_meta, pipe.execute())))
        return {i: self._meta.get(i, (None, None, None)) for i in item_ids}


def queue_meta(pipe, keys: Keys, item_ids) -> None:
    """Queue the catalog's (category, brand, price) of each item on `pipe` (replies: `parse_meta`)."""
    for i in item_ids:
        pipe.execute_command("HMGET", keys.item(i), "cat", "brand", "price")


def parse_meta(reply) -> tuple[str | None, str | None, float | None]:
    c, b, p = reply
    return c.decode() if c else None, b.decode() if b else None, float(p) if p else None
