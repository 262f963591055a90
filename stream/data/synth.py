"""Synthetic shop: a catalog and a stream of shopper events, deterministic by seed.

What it models, so the demo and fast tests exercise every part of the system:
  * a catalog of items with titles, a two-level category path, brands and prices;
  * users with latent category tastes (a few favourites) that drift at random moments;
  * sessions that follow a view -> click -> add_to_cart -> purchase funnel, browsing related
    items (same sub-category, often the same brand), some opened by a search query;
  * new items arriving over time (no interactions yet, only a title and category);
  * trending bursts: an item suddenly draws a share of all sessions for a while;
  * a few bot-like users firing rapid random views.

>>> shop = SynthShop(SynthConfig(n_users=50, n_items=200, n_events=500, seed=7))
>>> events = list(shop.events())
>>> len(events), events[0]["ts"] <= events[-1]["ts"]
(500, True)
>>> list(SynthShop(SynthConfig(n_users=50, n_items=200, n_events=500, seed=7)).events()) == events
True
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Iterator

import numpy as np

_TOP = {
    "electronics": (["smartphone", "headphones", "laptop", "camera", "smartwatch"],
                    ["phone", "earbuds", "notebook", "camera", "watch", "charger", "speaker"]),
    "apparel": (["shoes", "jackets", "shirts", "dresses", "socks"],
                ["sneaker", "jacket", "shirt", "dress", "hoodie", "boot", "sock"]),
    "home": (["kitchen", "furniture", "bedding", "lighting", "decor"],
             ["knife set", "sofa", "pillow", "lamp", "vase", "pan", "blanket"]),
    "sports": (["running", "cycling", "fitness", "camping", "swimming"],
               ["running shoe", "bike helmet", "yoga mat", "tent", "goggles", "dumbbell", "bottle"]),
    "beauty": (["skincare", "makeup", "fragrance", "haircare", "nails"],
               ["serum", "lipstick", "perfume", "shampoo", "nail polish", "cream", "mascara"]),
    "toys": (["puzzles", "dolls", "building", "outdoor", "games"],
             ["puzzle", "doll", "brick set", "kite", "board game", "robot", "ball"]),
    "books": (["fiction", "cooking", "science", "kids", "travel"],
              ["novel", "cookbook", "atlas", "picture book", "guide", "thriller", "biography"]),
    "grocery": (["coffee", "snacks", "tea", "pasta", "spices"],
                ["espresso beans", "crisps", "green tea", "spaghetti", "paprika", "cookies", "olive oil"]),
}
_ADJ = ["classic", "pro", "ultra", "eco", "compact", "premium", "lite", "max", "smart", "vintage",
        "urban", "sport", "deluxe", "mini", "air"]
_BRANDS = ["acme", "nordic", "zenith", "orbit", "kito", "lumen", "vela", "terra", "nova", "pulse",
           "atlas", "fjord", "koda", "mira", "sola", "brio", "cobalt", "delta", "ember", "flux"]

FUNNEL = {"view": 1.0, "click": 0.35, "add_to_cart": 0.25, "purchase": 0.45}  # step probabilities


@dataclass(frozen=True)
class SynthConfig:
    n_users: int = 5_000
    n_items: int = 2_000
    n_events: int = 50_000
    seed: int = 42
    start_ts: int = 1_730_000_000_000     # ms
    duration_s: float = 7 * 24 * 3600.0   # event-time span of the log
    new_item_share: float = 0.15          # items created after the start
    n_bots: int = 3
    bot_share: float = 0.02               # share of events from bots
    search_share: float = 0.08            # sessions that start with a search
    n_trends: int = 4                     # trending bursts over the span


class SynthShop:
    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        self._rng = rng
        tops = list(_TOP)
        self.subcats = [(t, s) for t in tops for s in _TOP[t][0]]
        n_sub = len(self.subcats)
        # items: sub-category, brand, price, created_at
        sub = rng.integers(0, n_sub, cfg.n_items)
        brand = rng.integers(0, len(_BRANDS), cfg.n_items)
        price = np.round(np.exp(rng.normal(3.2, 0.9, cfg.n_items)), 2)
        end = cfg.start_ts + int(cfg.duration_s * 1000)
        created = np.full(cfg.n_items, cfg.start_ts - 86_400_000 * 30, dtype=np.int64)
        fresh = rng.random(cfg.n_items) < cfg.new_item_share
        created[fresh] = rng.integers(cfg.start_ts, end, fresh.sum())
        self.items = []
        for i in range(cfg.n_items):
            top, leaf = self.subcats[sub[i]]
            noun = _TOP[top][1][rng.integers(len(_TOP[top][1]))]
            title = f"{_BRANDS[brand[i]].title()} {_ADJ[rng.integers(len(_ADJ))]} {noun}"
            self.items.append({"item_id": f"i{i}", "title": title, "category": [top, leaf],
                               "brand": _BRANDS[brand[i]], "price": float(price[i]),
                               "created_at": int(created[i])})
        self.item_sub, self._brand, self._created = sub, brand, created
        # per sub-category: items ordered by creation, Zipf popularity, cumulative weights
        self._by_sub = []
        for s in range(n_sub):
            idx = np.flatnonzero(sub == s)
            idx = idx[np.argsort(created[idx], kind="stable")]
            w = 1.0 / (1.0 + rng.permutation(len(idx))) ** 0.9
            self._by_sub.append((idx, created[idx], np.cumsum(w)))
        # users: taste over sub-categories (a few favourites), activity level
        self._n_users = cfg.n_users
        self.taste = rng.dirichlet(np.full(n_sub, 0.08), cfg.n_users)   # user -> weights over sub-categories
        self._activity = rng.pareto(1.5, cfg.n_users) + 1.0
        self._trends = [(int(rng.integers(cfg.start_ts, end)), int(rng.integers(cfg.n_items)))
                        for _ in range(cfg.n_trends)]

    def catalog(self, until_ts: int | None = None) -> list[dict]:
        """Items created up to `until_ts` (all by default)."""
        return [it for it in self.items if until_ts is None or it["created_at"] <= until_ts]

    def pick_in_sub(self, s: int, ts: int) -> int | None:
        """An item of sub-category `s` created by `ts`, by its popularity (None if there is none yet)."""
        idx, created, cum = self._by_sub[s]
        n = int(np.searchsorted(created, ts, side="right"))
        if n == 0:
            return None
        j = int(np.searchsorted(cum[:n], self._rng.random() * cum[n - 1]))
        return int(idx[min(j, n - 1)])

    def drift(self, user: int, rng) -> None:
        """The user's taste moves half-way towards a sub-category drawn at random."""
        t = self.taste[user]
        t *= 0.5
        t[rng.integers(len(t))] += 0.5

    def _related(self, item: int, ts: int) -> int | None:
        """Same sub-category; half the time the same brand."""
        s = self.item_sub[item]
        idx, created, _ = self._by_sub[s]
        n = int(np.searchsorted(created, ts, side="right"))
        if self._rng.random() < 0.5:
            same = idx[:n][self._brand[idx[:n]] == self._brand[item]]
            if len(same) > 1:
                return int(same[self._rng.integers(len(same))])
        pos = int(np.flatnonzero(idx == item)[0]) if item in idx[:n] else 0
        j = pos + int(self._rng.integers(-3, 4))
        return int(idx[min(max(j, 0), n - 1)]) if n else None

    def _trending_item(self, ts: int) -> int | None:
        for start, item in self._trends:
            if start <= ts < start + 6 * 3600_000 and self._created[item] <= ts:
                return item
        return None

    def _session(self, user: int, ts: int, sid: str) -> list[dict]:
        rng, cfg = self._rng, self.cfg
        # drift: occasionally the user's taste moves towards a new sub-category
        if rng.random() < 0.05:
            self.drift(user, rng)
        s = int(rng.choice(len(self.subcats), p=self.taste[user]))
        trend = self._trending_item(ts)
        first = trend if trend is not None and rng.random() < 0.3 else self.pick_in_sub(s, ts)
        if first is None:
            return []
        uid = f"u{user}"
        out = []
        if rng.random() < cfg.search_share:
            it = self.items[first]
            words = it["title"].split()[1:] + [it["category"][1]]
            q = " ".join(rng.choice(words, size=min(2, len(words)), replace=False))
            out.append({"user_id": uid, "item_id": None, "type": "search", "ts": ts, "session_id": sid, "query": q})
        item = first
        for _ in range(int(rng.integers(2, 9))):
            ts += int(rng.exponential(40_000)) + 1000
            price = self.items[item]["price"]
            out.append({"user_id": uid, "item_id": f"i{item}", "type": "view", "ts": ts, "session_id": sid, "price": price})
            if rng.random() < FUNNEL["click"]:
                ts += int(rng.exponential(5_000)) + 200
                out.append({"user_id": uid, "item_id": f"i{item}", "type": "click", "ts": ts, "session_id": sid, "price": price})
                if rng.random() < FUNNEL["add_to_cart"]:
                    ts += int(rng.exponential(20_000)) + 500
                    out.append({"user_id": uid, "item_id": f"i{item}", "type": "add_to_cart", "ts": ts,
                                "session_id": sid, "price": price, "quantity": 1})
                    if rng.random() < FUNNEL["purchase"]:
                        ts += int(rng.exponential(60_000)) + 1000
                        out.append({"user_id": uid, "item_id": f"i{item}", "type": "purchase", "ts": ts,
                                    "session_id": sid, "price": price, "quantity": 1})
                        break
            nxt = self._related(item, ts) if rng.random() < 0.7 else self.pick_in_sub(s, ts)
            item = nxt if nxt is not None else item
        return out

    def events(self) -> Iterator[dict]:
        """Exactly `n_events` events in event-time order, as Event v1 dicts."""
        cfg, rng = self.cfg, self._rng
        n_sessions_est = max(1, cfg.n_events // 5)
        # session start times: uniform over the span, one heap merges their events in time order
        starts = np.sort(rng.integers(cfg.start_ts, cfg.start_ts + int(cfg.duration_s * 1000), n_sessions_est * 2))
        p_user = self._activity / self._activity.sum()
        users = rng.choice(self._n_users, size=len(starts), p=p_user)
        bots = [f"bot{b}" for b in range(cfg.n_bots)]
        heap: list = []
        emitted = 0
        k = 0
        seq = 0
        while emitted < cfg.n_events:
            # start sessions whose start time is before the earliest pending event
            while k < len(starts) and (not heap or starts[k] <= heap[0][0]):
                sid = f"s{cfg.seed}-{k}"
                for ev in self._session(int(users[k]), int(starts[k]), sid):
                    heapq.heappush(heap, (ev["ts"], seq, ev))
                    seq += 1
                if cfg.n_bots and rng.random() < cfg.bot_share:
                    b = bots[int(rng.integers(len(bots)))]
                    t0 = int(starts[k])
                    for j in range(5):
                        ev = {"user_id": b, "item_id": f"i{int(rng.integers(cfg.n_items))}", "type": "view",
                              "ts": t0 + j * 150}
                        heapq.heappush(heap, (ev["ts"], seq, ev))
                        seq += 1
                k += 1
            if not heap:
                break
            _, _, ev = heapq.heappop(heap)
            ev = {k2: v for k2, v in ev.items() if v is not None}
            ev["event_id"] = f"e{cfg.seed}-{emitted}"
            yield {"v": 1, "event_id": ev.pop("event_id"), **ev}
            emitted += 1
