"""A bounded exploration slot for fresh items: Thompson sampling on their early click-through.

An item is fresh while it has fewer than `fresh_below` weighted interactions. When a ranked list
holds no fresh item, the best fresh candidate that a relevance source proposed (content similarity
or the user's categories) may take the list's last slot: one slot per list at most, so new items
collect feedback without flooding lists. The draw is Beta(1 + clicks, 1 + shows - clicks) times the
item's relevance, so an item that was shown and ignored loses its slot, and one that users take
keeps it until it is no longer fresh (then it competes on its own scores).

Whether a list explores at all is itself learned (`gate`), Thompson sampling between two arms: the
exploration slot (how often users take the fresh item shown there) and what it displaces (how often users
take, later, the item the slot pushed out of the list). A list explores when a draw from the slot's
Beta posterior beats a draw from the displaced item's: where fresh items do as well as the list's last
place, most lists explore; where they rarely do, exploration falls to the rate the remaining uncertainty
allows (never below `floor` of the lists that could explore: the gate must keep seeing the slot), and rises
again if fresh items start being taken. Both arms forget slowly (counts halved every
`memory` slots), so the rate follows the shop.

Shows are counted when a list is recorded as shown; clicks when a user who was shown the item
interacts with it afterwards. State is per worker, in memory, bounded (`max_items`): fresh items
are few and short-lived, and each worker explores over its own users.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from stream.core.candidates import SOURCE_NAMES

_REL = [SOURCE_NAMES.index("content"), SOURCE_NAMES.index("category")]


class Slot(NamedTuple):
    index: int                  # the fresh candidate's index into the candidate items
    displaced: str | None       # the item it pushes out of a full list


class FreshExplorer:
    def __init__(self, fresh_below: float = 3.0, min_relevance: float = 0.3, max_items: int = 50_000, seed: int = 0,
                 gate: bool = True, memory: float = 5_000.0, floor: float = 0.05):
        self.fresh_below, self.min_relevance, self.max_items = fresh_below, min_relevance, max_items
        self.gate, self.memory, self.floor = gate, memory, floor
        self.rng = np.random.default_rng(seed)
        self.stats: OrderedDict[str, list] = OrderedDict()   # item -> [shows, clicks, users shown]
        self.slots_used = 0
        self.slot = [0.0, 0.0]           # exploration slots shown, and taken (decayed counts)
        self.displaced = [0.0, 0.0]      # items a slot pushed out of a list, and taken later anyway
        self._pending: OrderedDict[tuple[str, str], None] = OrderedDict()   # (user, displaced item)

    def open(self) -> bool:
        """The gate's Thompson draw: does this list explore?"""
        (sn, sh), (dn, dh) = self.slot, self.displaced
        if self.rng.random() < self.floor:
            return True
        return self.rng.beta(1 + sh, 1 + max(0.0, sn - sh)) >= self.rng.beta(1 + dh, 1 + max(0.0, dn - dh))

    def choose(self, items: list[str], sources: np.ndarray, popularity: dict, picked: list[tuple[int, float]],
               exclude: set, k: int = 10) -> Slot | None:
        """The fresh candidate for the exploration slot (its index into items) and the item it displaces, or
        None. `picked` is the list before the slot (`k` long when full: then its last item is the one
        displaced; hand it to `shown`)."""
        if not picked or any(popularity.get(items[i], 0.0) < self.fresh_below for i, _ in picked):
            return None
        rel = sources[:, _REL].max(axis=1) if len(items) else np.zeros(0)
        taken = {i for i, _ in picked}
        best, best_v = None, 0.0
        for j in np.flatnonzero(rel >= self.min_relevance):
            item = items[j]
            if j in taken or item in exclude or popularity.get(item, 0.0) >= self.fresh_below:
                continue
            shows, clicks, _ = self.stats.get(item, (0, 0, None))
            v = self.rng.beta(1 + clicks, 1 + max(0, shows - clicks)) * rel[j]
            if v > best_v:
                best, best_v = int(j), v
        if best is None or (self.gate and not self.open()):
            return None
        return Slot(best, items[picked[-1][0]] if len(picked) >= k else None)

    def shown(self, user: str, item: str, displaced: str | None = None) -> None:
        """The slot was shown to `user` with `item`, pushing `displaced` (if any) out of the list."""
        st = self.stats.get(item)
        if st is None:
            st = self.stats[item] = [0, 0, set()]
            if len(self.stats) > self.max_items:
                self.stats.popitem(last=False)
        st[0] += 1
        if len(st[2]) < 1000:
            st[2].add(user)
        self.slots_used += 1
        self.slot[0] += 1
        if displaced is not None:
            self.displaced[0] += 1
            self._pending[(user, displaced)] = None
            while len(self._pending) > 100_000:
                self._pending.popitem(last=False)
        if self.slot[0] > self.memory:        # forget slowly: the shop changes
            self.slot = [x / 2 for x in self.slot]
            self.displaced = [x / 2 for x in self.displaced]

    def feedback(self, snaps: dict) -> None:
        for uid, snap in snaps.items():
            for ev in snap.fresh:
                st = self.stats.get(ev.item_id) if ev.item_id else None
                if st is not None and uid in st[2]:
                    st[1] += 1
                    st[2].discard(uid)      # one click per show
                    self.slot[1] += 1
                if ev.item_id and (uid, ev.item_id) in self._pending:
                    del self._pending[(uid, ev.item_id)]
                    self.displaced[1] += 1
