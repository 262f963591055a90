"""Items like an item: co-visitation (what users went to after it), co-occurrence (what shares users'
recent histories with it) and content similarity (its text embedding), each scaled to [0, 1] by its
best and summed; the sources that proposed each item are named. What `GET /v1/items/{id}/similar` serves.
"""
from __future__ import annotations

import numpy as np

from stream.core.storage.store import Keys


def combine(per_source: dict[str, list[tuple[str, float]]], exclude: str, k: int) -> list[dict]:
    """Per source (item, score) lists -> the best k items by the sum of max-scaled scores.

    >>> combine({"covisit": [("b", 4.0), ("c", 2.0)], "content": [("c", 0.9)]}, "a", 2)
    [{'item_id': 'c', 'score': 1.5, 'sources': ['covisit', 'content']}, {'item_id': 'b', 'score': 1.0, 'sources': ['covisit']}]
    """
    total: dict[str, float] = {}
    srcs: dict[str, list[str]] = {}
    for name, pairs in per_source.items():
        pairs = [(i, s) for i, s in pairs if i != exclude and s > 0]
        if not pairs:
            continue
        best = max(s for _, s in pairs)
        for item, s in pairs:
            total[item] = total.get(item, 0.0) + s / best
            srcs.setdefault(item, []).append(name)
    order = sorted(total, key=lambda i: (-total[i], i))[:k]
    return [{"item_id": i, "score": round(total[i], 6), "sources": srcs[i]} for i in order]


def similar_items(client, prefix: str, item: str, k: int = 10, content=None, pool: int = 50) -> list[dict]:
    """The k items most like `item` (see the module docstring); `content`: a ContentStore, or None."""
    keys = Keys(prefix)
    pipe = client.pipeline(transaction=False)
    pipe.zrevrange(keys.covis(item), 0, pool - 1, withscores=True)
    pipe.zrevrange(keys.cooccur(item), 0, pool - 1, withscores=True)
    if content is not None:
        pipe.hget(content.key, item)
    got = pipe.execute()
    per = {"covisit": [(m.decode(), float(s)) for m, s in got[0]],
           "cooccur": [(m.decode(), float(s)) for m, s in got[1]]}
    if content is not None and got[2]:
        vec = np.frombuffer(got[2], dtype=np.float32)[None, :]
        per["content"] = content.index.search(vec, pool + 1)[0]
    return combine(per, item, k)
