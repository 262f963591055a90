"""Closed-loop searching shoppers: how the search re-ranker is judged before real traffic.

The shoppers of `simulate.py` (latent tastes over sub-categories, drifting), who now also search:
    a visit starts with a search with probability `search_share`: the shopper has a sub-category in mind
    (drawn from their tastes) and an item of it, and types two words of that item's title and category
    (as the synthetic shop's searchers do); the shop's engine (BM25 over titles, `search_engine.py`)
    returns its top `page_size`; recstream re-ranks the page for the user, or (the control) keeps the
    engine's order; the shopper looks at place j with probability `examine_decay`^j and clicks an item
    with probability `click_scale * taste match`, the first one that wins, then the shop's funnel
    (view -> add to cart -> purchase), the events naming the page (`context.search_id`); then organic
    browsing, as in `simulate.py`.
Users are split between the arms by a salted hash (sticky). The events of a round go through the pipeline
core (profiles, the re-ranker's learner in `Pipeline.observers`, recommendations); the pages of the next
round see the state they left. What is measured: click-through per result page shown, per arm, with the
delta-method interval over users, for all pages and for the pages of cold users (no history when shown).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from schemas import validate_event, validate_item
from stream.core.abstats import Z95, ratio
from stream.core.search.rerank import in_share
from stream.ops.search_engine import LexicalEngine
from stream.ops.simulate import Shoppers, SimConfig

ARMS = ("rerank", "engine")


@dataclass(frozen=True)
class SearchSimConfig:
    sim: SimConfig = field(default_factory=lambda: SimConfig(n_users=600, n_items=1000, users_per_round=60, rounds=60,
                                                            round_s=600.0))
    search_share: float = 0.7         # visits that start with a search
    page_size: int = 20
    rerank_share: float = 0.5         # users whose pages are re-ranked; the others see the engine's order
    salt: str = "search-sim"


@dataclass
class SearchStats:
    """arm -> user -> [pages, clicked pages]; the same for the pages shown to cold users."""
    pages: dict = field(default_factory=lambda: {a: {} for a in ARMS})
    cold: dict = field(default_factory=lambda: {a: {} for a in ARMS})

    def add(self, arm: str, user: str, clicked: bool, cold: bool) -> None:
        for table in (self.pages, self.cold) if cold else (self.pages,):
            row = table[arm].setdefault(user, [0, 0])
            row[0] += 1
            row[1] += clicked

    def compare(self, cold: bool = False) -> dict:
        """Click-through per arm with 95 % intervals, and re-ranked over engine with its interval (the delta
        method on the log of the ratio of two independent rates)."""
        table = self.cold if cold else self.pages
        out = {}
        for arm in ARMS:
            rows = np.array(list(table[arm].values()), dtype=float).reshape(-1, 2)
            r, v = ratio(rows[:, 1], rows[:, 0])
            out[arm] = {"users": len(rows), "pages": int(rows[:, 0].sum()), "clicked": int(rows[:, 1].sum()),
                        "ctr": r, "ci": (r, r) if math.isnan(v) else (r - Z95 * math.sqrt(v), r + Z95 * math.sqrt(v))}
        a, b = out["rerank"], out["engine"]
        lift = a["ctr"] / b["ctr"] if b["ctr"] else float("nan")
        va = (a["ci"][1] - a["ctr"]) / Z95
        vb = (b["ci"][1] - b["ctr"]) / Z95
        se = math.sqrt((va / a["ctr"]) ** 2 + (vb / b["ctr"]) ** 2) if a["ctr"] and b["ctr"] else float("nan")
        out["lift"] = {"ratio": lift, "ci": (lift * math.exp(-Z95 * se), lift * math.exp(Z95 * se))}
        return out


def arm_of(user: str, salt: str, share: float) -> str:
    return "rerank" if in_share(user, share, salt) else "engine"


class SearchingShoppers(Shoppers):
    def __init__(self, cfg: SearchSimConfig):
        super().__init__(cfg.sim)
        self.scfg = cfg
        self.engine = LexicalEngine(self.items)

    def query(self, u: int, ts: int) -> str | None:
        shop = self.shop
        item = shop.pick_in_sub(int(self.rng.choice(len(shop.subcats), p=shop.taste[u])), ts)
        if item is None:
            return None
        it = self.items[item]
        words = it["title"].split()[1:] + [it["category"][1]]
        return " ".join(self.rng.choice(words, size=min(2, len(words)), replace=False))

    def search_event(self, u: int, query: str, ts: int) -> dict:
        self._n += 1
        return {"v": 1, "event_id": f"sim{self.cfg.seed}-{self._n}", "user_id": self.uid(u), "type": "search",
                "ts": ts, "query": query}

    def read_page(self, u: int, page: list[str], ts: int, sid: str) -> list[dict]:
        for j, item in enumerate(page):
            if self.rng.random() < self.cfg.examine_decay ** j and self.rng.random() < self.cfg.click_scale * self.match(u, item):
                return self.funnel(u, int(item[1:]), ts, {"search_id": sid})
        return []


def run_search_inprocess(pipeline, reranker, cfg: SearchSimConfig = SearchSimConfig(), *, on_round=None):
    """The loop on the pipeline core (the re-ranker's learner must be in `pipeline.observers`).
    Returns (shoppers, SearchStats)."""
    sim = SearchingShoppers(cfg)
    items = [validate_item(it) for it in sim.items]
    pipeline.catalog.upsert(items)
    if pipeline.content is not None:
        pipeline.content.upsert(items)
    stats = SearchStats()
    for r in range(cfg.sim.rounds):
        ts = cfg.sim.start_ts + int(r * cfg.sim.round_s * 1000)
        events: list[dict] = []
        users = sim.round_users()
        snaps = pipeline.profiles.read([sim.uid(u) for u in users])
        for u in users:
            uid, t = sim.uid(u), ts
            if sim.rng.random() < cfg.search_share and (q := sim.query(u, t)) is not None:
                hits = sim.engine.search(q, cfg.page_size)
                arm = arm_of(uid, cfg.salt, cfg.rerank_share)
                page = reranker.rerank(uid, q, [i for i, _ in hits], [s for _, s in hits], now_ts=t,
                                       keep_order=arm == "engine", snap=snaps[uid])
                events.append(sim.search_event(u, q, t))
                got = sim.read_page(u, [it["item_id"] for it in page["items"]], t + 1000, page["search_id"])
                stats.add(arm, uid, bool(got), page["rule"] == "engine order: no history")
                events += got
                t += 10_000
            events += sim.browse(u, t)
        result = pipeline.process_events([validate_event(e) for e in events])
        pipeline.publish(result, 3600)
        if on_round:
            on_round(r, stats)
    return sim, stats
