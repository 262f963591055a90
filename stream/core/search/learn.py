"""What users click after a search teaches the re-ranker: the event-time join of result pages to clicks.

A page shown to a user (`rerank.py` records it under the user's keys with its feature rows and displayed
order) stays open until its window (`RerankConfig.window_s` of event time) has passed, or the user searches
for something else, or more than `max_pages` pages are open. While it is open, a click, add-to-cart or
purchase of one of its items by that user (or any event whose `context.search_id` names it) marks the
item clicked. When it closes, every displayed item becomes one example: its features, its displayed
position, and whether it was clicked; the examples of a batch go to `SearchModel.learn` together.

Runs in the worker, once per batch, for the users whose events the batch applied (the worker that owns a
user's partition is the one that sees their clicks): `Pipeline.observers`. Bot-like users teach nothing.
Events are the batch's *applied* ones (a redelivered event was applied before and is not here again).
"""
from __future__ import annotations

import numpy as np
import orjson

from stream.core.search.model import SearchModel
from stream.core.search.rerank import PAGES_OUTCOMES, RerankConfig, pages_key

CLICKS = ("click", "add_to_cart", "purchase")


class SearchFeedback:
    def __init__(self, client, prefix: str, keys, cfg: RerankConfig = RerankConfig(), model: SearchModel | None = None):
        self.client, self.prefix, self.keys, self.cfg = client, prefix, keys, cfg
        self.model = model or SearchModel(client, prefix)
        self.pages_closed = self.pages_clicked = self.examples = self.unreadable = 0

    def observe(self, snaps: dict) -> int:
        """Join the snapshots' applied events to their users' open pages; learn from the pages that closed."""
        users = [uid for uid, s in snaps.items() if s.fresh and not s.bot]
        if not users:
            return 0
        keys = [pages_key(self.keys.user(u)) for u in users]
        examples, pipe = [], self.client.pipeline(transaction=False)
        for uid, key, raw in zip(users, keys, self._read(keys)):
            if not raw:
                continue
            pages = []
            for field, value in raw.items():
                try:
                    pg = orjson.loads(value)
                    if not (isinstance(pg["ts"], int) and isinstance(pg["id"], str) and len(pg["items"]) == len(pg["x"])):
                        raise ValueError("fields")
                    pages.append(pg)
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    pipe.hdel(key, field)              # a record we cannot read teaches nothing and must not wedge
                    self.unreadable += 1
            pages.sort(key=lambda pg: (pg["ts"], pg["id"]))
            closed, changed = self.join(pages, snaps[uid].fresh)
            for pg in closed:
                examples += self.page_examples(pg)
                pipe.hdel(key, pg["id"])
                rule = pg.get("rule", "learning")
                pipe.hincrby(self.prefix + PAGES_OUTCOMES, f"{rule}:shown", 1)
                if pg["clicked"]:
                    pipe.hincrby(self.prefix + PAGES_OUTCOMES, f"{rule}:clicked", 1)
            for pg in changed:
                pipe.hset(key, pg["id"], orjson.dumps(pg))
        pipe.execute()
        return self.model.learn(examples)

    def _read(self, keys: list[str]) -> list[dict]:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        return pipe.execute()

    def join(self, pages: list[dict], events) -> tuple[list[dict], list[dict]]:
        """(pages that closed, pages still open whose clicks changed), given the user's new events in order."""
        w = int(self.cfg.window_s * 1000)
        changed: dict[str, dict] = {}
        for ev in events:
            tag = (ev.context or {}).get("search_id")
            if ev.type in CLICKS and ev.item_id:
                for pg in reversed(pages):                    # the newest open page that showed the item
                    if (tag == pg["id"] or (tag is None and pg["ts"] <= ev.ts <= pg["ts"] + w)) \
                            and ev.item_id in pg["items"]:
                        if ev.item_id not in pg["clicked"]:
                            pg["clicked"].append(ev.item_id)
                            changed[pg["id"]] = pg
                        break
        last = max((ev.ts for ev in events), default=0)
        searched = [(ev.ts, ev.query) for ev in events if ev.type == "search"]
        closed = []
        for n, pg in enumerate(pages):
            newer = len(pages) - n > self.cfg.max_pages
            moved_on = any(ts > pg["ts"] and q != pg["q"] for ts, q in searched)
            if newer or moved_on or last > pg["ts"] + w:
                closed.append(pg)
                changed.pop(pg["id"], None)
        return closed, list(changed.values())

    def page_examples(self, pg: dict) -> list[tuple[np.ndarray, int, int]]:
        self.pages_closed += 1
        self.pages_clicked += bool(pg["clicked"])
        clicked = set(pg["clicked"])
        out = [(np.asarray(x, dtype=float), pos, int(item in clicked))
               for pos, (item, x) in enumerate(zip(pg["items"], pg["x"]))]
        self.examples += len(out)
        return out
