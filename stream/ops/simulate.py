"""Closed-loop simulated shoppers: how an experiment is judged before real traffic.

A replay cannot say what a list does to a user (the log's users never saw it); simulated shoppers can:

    shoppers (latent tastes over sub-categories, drifting) --events--> recstream --lists--> shoppers read them
        a visit: read the latest list (position-biased: place j is looked at with probability 0.85^j), click
        an item with probability `click_scale * taste match` (the user's taste for its sub-category over
        their favourite's), then view -> add_to_cart -> purchase along the synthetic shop's funnel; and browse
        organically (items drawn from their tastes), whether or not a list was clicked

The catalog and tastes are the synthetic shop's (`stream/data/synth.py`). Two loops drive the same shoppers:
`run_kafka` (events produced to Kafka, the real worker in between, lists read back from the
recommendations topic: `recstream simulate`) and `run_inprocess` (the pipeline core called directly:
the same decisions without the transport, fast enough for the repeated A/A runs in the tests).
Deterministic by seed, except for the transport's timing in `run_kafka`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import orjson

from schemas import validate_event
from stream.data.synth import FUNNEL, SynthConfig, SynthShop


@dataclass(frozen=True)
class SimConfig:
    n_users: int = 400
    n_items: int = 800
    users_per_round: int = 50
    rounds: int = 40
    round_s: float = 60.0              # event time between rounds
    click_scale: float = 0.6           # click probability of a perfectly matching item looked at
    examine_decay: float = 0.85        # place j of a list is looked at with probability decay^j
    organic_views: tuple = (1, 4)      # organic views per visit (uniform, upper bound exclusive)
    drift: float = 0.02                # chance per visit that a user's taste moves to a new sub-category
    seed: int = 0
    start_ts: int = 1_733_000_000_000


class Shoppers:
    """The simulated users; `visit` turns what a user was shown into what they do next."""

    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.shop = SynthShop(SynthConfig(n_users=cfg.n_users, n_items=cfg.n_items, n_events=0, seed=cfg.seed,
                                          start_ts=cfg.start_ts, new_item_share=0.0, n_bots=0))
        self.rng = np.random.default_rng([cfg.seed, 1])
        self.items = self.shop.items
        self._n = 0

    def uid(self, u: int) -> str:
        return f"s{u}"

    def match(self, u: int, item: str) -> float:
        taste = self.shop.taste[u]
        return float(taste[self.shop.item_sub[int(item[1:])]] / taste.max())

    def _event(self, u: int, item: int, etype: str, ts: int, context: dict | None) -> dict:
        self._n += 1
        ev = {"v": 1, "event_id": f"sim{self.cfg.seed}-{self._n}", "user_id": self.uid(u), "item_id": f"i{item}",
              "type": etype, "ts": ts, "price": self.items[item]["price"]}
        if context:                            # the shop's page says which list the click came from
            ev["context"] = context
        return ev

    def funnel(self, u: int, item: int, ts: int, context: dict | None = None) -> list[dict]:
        """View, then (always when it came from a page named by `context`, else with the shop's funnel
        probability) click, add to cart, purchase."""
        out = [self._event(u, item, "view", ts, context)]
        if context or self.rng.random() < FUNNEL["click"]:
            out.append(self._event(u, item, "click", ts + 1, context))
            if self.rng.random() < FUNNEL["add_to_cart"]:
                out.append(self._event(u, item, "add_to_cart", ts + 2, context))
                if self.rng.random() < FUNNEL["purchase"]:
                    out.append(self._event(u, item, "purchase", ts + 3, context))
        return out

    def visit(self, u: int, shown: tuple[str, list[str]] | None, ts: int) -> list[dict]:
        """`shown`: (recommendation id, items) of the user's latest list, or None."""
        cfg, rng, shop = self.cfg, self.rng, self.shop
        if rng.random() < cfg.drift:
            shop.drift(u, rng)
        out: list[dict] = []
        rec_id, items = shown or (None, [])
        for j, item in enumerate(items):
            if rng.random() >= cfg.examine_decay ** j:
                continue
            if rng.random() < cfg.click_scale * self.match(u, item):
                out += self.funnel(u, int(item[1:]), ts, {"recommendation_id": rec_id} if rec_id else None)
                ts += 10_000
                break
        return out + self.browse(u, ts)

    def browse(self, u: int, ts: int) -> list[dict]:
        """Organic views: items drawn from the user's tastes."""
        out = []
        for _ in range(int(self.rng.integers(*self.cfg.organic_views))):
            s = int(self.rng.choice(len(self.shop.subcats), p=self.shop.taste[u]))
            item = self.shop.pick_in_sub(s, ts)
            if item is not None:
                out += self.funnel(u, item, ts)
                ts += 10_000
        return out

    def round_users(self) -> list[int]:
        return sorted(self.rng.choice(self.cfg.n_users, self.cfg.users_per_round, replace=False).tolist())


def run_inprocess(pipeline, cfg: SimConfig, *, on_round=None, ttl_s: int = 3600) -> Shoppers:
    """The loop with the pipeline core called directly (no Kafka, no worker process)."""
    from schemas import validate_item
    sim = Shoppers(cfg)
    items = [validate_item(it) for it in sim.items]
    pipeline.catalog.upsert(items)
    if pipeline.content is not None:
        pipeline.content.upsert(items)
    latest: dict[str, tuple[str, list[str]]] = {}
    for r in range(cfg.rounds):
        ts = cfg.start_ts + int(r * cfg.round_s * 1000)
        events = []
        for u in sim.round_users():
            events += sim.visit(u, latest.get(sim.uid(u)), ts)
        result = pipeline.process_events([validate_event(e) for e in events])
        pipeline.publish(result, ttl_s)
        for rec in result.recommendations:
            latest[rec.user_id] = (rec.recommendation_id, [it.item_id for it in rec.items])
        if on_round:
            on_round(r, sim)
    return sim


def run_kafka(s, cfg: SimConfig, *, on_round=None, wait_s: float = 30.0, progress: bool = False) -> Shoppers:
    """The loop through Kafka and the running worker(s): each round's events are produced, and the next
    round starts once every visited user's list for their newest event is on the recommendations topic
    (or after `wait_s`; a user whose list is late reads the older one)."""
    import threading

    from confluent_kafka import Producer

    from schemas import validate_recommendation
    from stream.drivers.kafka import producer_conf
    from stream.ops.consume import records
    from stream.ops.produce import produce_items
    sim = Shoppers(cfg)
    produce_items(sim.items, s.items_topic, s.brokers)
    latest: dict[str, tuple[str, tuple[str, list[str]]]] = {}     # user -> (trigger event id, (list id, items))
    stop, ready = threading.Event(), threading.Event()

    def read():
        for rec in records(s.recs_topic, s.brokers, from_beginning=False, stop=stop.is_set, ready=ready):
            v = validate_recommendation(rec.value)
            if not hasattr(v, "reason"):
                latest[v.user_id] = (v.trigger_event_id, (v.recommendation_id, [it.item_id for it in v.items]))
    reader = threading.Thread(target=read, daemon=True, name="sim-lists")
    reader.start()
    ready.wait(30)
    producer = Producer(producer_conf(s.brokers))
    try:
        for r in range(cfg.rounds):
            ts = cfg.start_ts + int(r * cfg.round_s * 1000)
            last: dict[str, str] = {}
            for u in sim.round_users():
                uid = sim.uid(u)
                evs = sim.visit(u, latest.get(uid, (None, None))[1], ts)
                for ev in evs:
                    producer.produce(s.events_topic, orjson.dumps(ev), uid.encode())
                if evs:
                    last[uid] = evs[-1]["event_id"]
            producer.flush(30)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and any(latest.get(u, ("",))[0] != e for u, e in last.items()):
                time.sleep(0.05)
            if on_round:
                on_round(r, sim)
            if progress:
                print(f"\rround {r + 1}/{cfg.rounds}", end="", flush=True)
    finally:
        stop.set()
        reader.join(15)
        if progress:
            print()
    return sim
