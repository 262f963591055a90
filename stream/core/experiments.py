"""A/B experiments: variants declared in a file, users assigned by a salted hash, outcomes joined on event time.

    experiments.toml --load--> Experiment --assign(user)--> variant name (sticky: same salt, same user, same variant)
    recommendations shown + the users' later events --OutcomeJoin--> per variant, per user: lists shown,
        lists clicked, carted, bought, revenue  (stream/evaluation/ab.py turns them into rates with intervals)

A file:

    name = "ranker-vs-fallback"
    salt = "2026-12"          # change it to reshuffle users
    holdout = 0.05            # share of users served the plain fallback order, counted apart ("holdout")
    [[variant]]
    name = "A"                # the control: the first variant
    share = 1
    [[variant]]
    name = "B"
    share = 1
    ranker = "off"            # a ranker spec (gbdt, lr, lr:2.0, ...) or "off"; absent: the deployment's
    scorer = "fallback"       # "model" (the promoted model, when there is one) or "fallback"
    explore = false           # the exploration slot for fresh items
    top_k = 5

Outcomes, by one of two attribution rules:
- "window" (any shop): a shown list is clicked when the user views or clicks one of its items within
  `window_ms` of event time after it was shown; carted and bought likewise (add_to_cart, purchase).
  A user who finds a listed item by browsing counts too, so the rates are higher than the lists' own share.
- "tagged" (a shop whose pages send, with an event that came from a list, `context.recommendation_id`:
  the id of that list): only events naming the list count for it, within the window.
Revenue is the price of the bought shown items (the purchase event's price). Each list counts once per outcome.
"""
from __future__ import annotations

import hashlib
import tomllib
from collections import OrderedDict
from dataclasses import dataclass

HOLDOUT = "holdout"
ATTRIBUTIONS = ("window", "tagged")
OUTCOMES = ("lists", "clicked", "carted", "bought", "revenue")
_OUTCOME_OF = {"view": 1, "click": 1, "add_to_cart": 2, "purchase": 3}


class ExperimentError(ValueError):
    """An experiment file that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Variant:
    name: str
    share: float = 1.0
    scorer: str = "model"
    ranker: str | None = None          # None: the deployment's ranker
    explore: bool = True
    top_k: int | None = None           # None: the deployment's top-K


HOLDOUT_VARIANT = Variant(HOLDOUT, 0.0, scorer="fallback", ranker="off", explore=False)


def unit_hash(salt: str, user: str) -> float:
    """A user's sticky place in [0, 1) under `salt` (BLAKE2b): how experiments and shares assign users."""
    h = hashlib.blake2b(f"{salt}\x00{user}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2 ** 64


@dataclass(frozen=True)
class Experiment:
    name: str
    salt: str
    variants: tuple[Variant, ...]
    holdout: float = 0.0

    def assign(self, user: str) -> str:
        """The user's variant: a salted hash mapped onto [0, 1), the holdout share first.

        >>> e = Experiment("e", "s", (Variant("A"), Variant("B")))
        >>> e.assign("u1") == e.assign("u1"), sorted({e.assign(f"u{i}") for i in range(50)})
        (True, ['A', 'B'])
        """
        x = unit_hash(self.salt, user)
        if x < self.holdout:
            return HOLDOUT
        x = (x - self.holdout) / (1 - self.holdout)
        total = sum(v.share for v in self.variants)
        acc = 0.0
        for v in self.variants:
            acc += v.share / total
            if x < acc:
                return v.name
        return self.variants[-1].name

    def variant(self, name: str) -> Variant:
        if name == HOLDOUT:
            return HOLDOUT_VARIANT
        return next(v for v in self.variants if v.name == name)

    @property
    def control(self) -> str:
        return self.variants[0].name

    @classmethod
    def load(cls, path: str) -> Experiment:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ExperimentError(f"{path}: {exc}") from None
        return cls.parse(raw, where=path)

    @classmethod
    def parse(cls, raw: dict, where: str = "experiment") -> Experiment:
        """From the file's table; every error names the field.

        >>> Experiment.parse({"name": "e", "variant": [{"name": "A", "top_k": 0}]})
        Traceback (most recent call last):
        ...
        stream.core.experiments.ExperimentError: experiment: variant[0].top_k: must be >= 1, got 0
        """
        def bad(field: str, why: str):
            return ExperimentError(f"{where}: {field}: {why}")
        unknown = set(raw) - {"name", "salt", "holdout", "variant"}
        if unknown:
            raise bad(min(unknown), "unknown field (expected name, salt, holdout, variant)")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise bad("name", "a non-empty string is required")
        holdout = raw.get("holdout", 0.0)
        if not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
            raise bad("holdout", f"a share in [0, 1) is required, got {holdout!r}")
        vs = raw.get("variant")
        if not isinstance(vs, list) or not vs:
            raise bad("variant", "at least one [[variant]] table is required")
        variants, seen = [], set()
        for i, v in enumerate(vs):
            at = f"variant[{i}]"
            if not isinstance(v, dict):
                raise bad(at, "expected a table")
            extra = set(v) - {"name", "share", "scorer", "ranker", "explore", "top_k"}
            if extra:
                raise bad(f"{at}.{min(extra)}", "unknown field (expected name, share, scorer, ranker, "
                          "explore, top_k)")
            vname = v.get("name")
            if not isinstance(vname, str) or not vname or vname == HOLDOUT or vname in seen:
                raise bad(f"{at}.name", f"a unique non-empty name other than {HOLDOUT!r} is required, got {vname!r}")
            seen.add(vname)
            share = v.get("share", 1.0)
            if not isinstance(share, (int, float)) or share <= 0:
                raise bad(f"{at}.share", f"must be > 0, got {share!r}")
            scorer = v.get("scorer", "model")
            if scorer not in ("model", "fallback"):
                raise bad(f"{at}.scorer", f"expected 'model' or 'fallback', got {scorer!r}")
            ranker = v.get("ranker")
            if ranker is not None and ranker != "off":
                from stream.core.ranking.spec import parse_spec
                try:
                    parse_spec(ranker)
                except ValueError as exc:
                    raise bad(f"{at}.ranker", str(exc)) from None
            explore = v.get("explore", True)
            if not isinstance(explore, bool):
                raise bad(f"{at}.explore", f"expected true or false, got {explore!r}")
            top_k = v.get("top_k")
            if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
                raise bad(f"{at}.top_k", f"must be >= 1, got {top_k!r}")
            variants.append(Variant(vname, float(share), scorer, ranker, explore, top_k))
        return cls(name, str(raw.get("salt", name)), tuple(variants), float(holdout))


@dataclass
class _Shown:
    key: str
    variant: str
    ts: int
    items: frozenset
    got: int = 0                       # the outcomes already counted: bit 1 clicked, 2 carted, 4 bought


class OutcomeJoin:
    """Shown lists joined to the users' later events on event time, with bounded memory: at most
    `per_user` open lists per user (the oldest closes), at most `max_users` users with open lists (the
    least recently shown closes). `drain()` returns the increments since the last call:
    (variant, user) -> [lists, clicked, carted, bought, revenue]."""

    def __init__(self, window_ms: int = 30 * 60_000, per_user: int = 4, max_users: int = 200_000,
                 attribution: str = "window"):
        if attribution not in ATTRIBUTIONS:
            raise ValueError(f"attribution {attribution!r}: expected one of {', '.join(ATTRIBUTIONS)}")
        self.window_ms, self.per_user, self.max_users = window_ms, per_user, max_users
        self.tagged = attribution == "tagged"
        self.open: OrderedDict[str, list[_Shown]] = OrderedDict()
        self.pending: dict[tuple[str, str], list[float]] = {}

    def _add(self, variant: str, user: str, col: int, value: float = 1.0) -> None:
        row = self.pending.setdefault((variant, user), [0, 0, 0, 0, 0.0])
        row[col] += value

    def shown(self, user: str, key: str, variant: str, ts: int, items) -> None:
        lst = self.open.setdefault(user, [])
        if any(s.key == key for s in lst):
            return                                  # the same list again (a redelivered trigger)
        self.open.move_to_end(user)
        lst.append(_Shown(key, variant, ts, frozenset(items)))
        self._add(variant, user, 0)
        del lst[:-self.per_user]
        while len(self.open) > self.max_users:
            self.open.popitem(last=False)

    def shown_all(self, recs) -> None:
        """A batch's Recommendations (those of an experiment's variants) as shown."""
        for rec in recs:
            if rec.variant is not None:
                self.shown(rec.user_id, rec.recommendation_id, rec.variant, rec.event_ts,
                           [it.item_id for it in rec.items])

    def event(self, user: str, etype: str, item: str | None, ts: int, price: float | None = None,
              tag: str | None = None) -> None:
        """One of the user's events; `tag`: the list it names (`context.recommendation_id`), if any."""
        lst = self.open.get(user)
        kind = _OUTCOME_OF.get(etype)
        if not lst or kind is None or not item:
            return
        keep = []
        for s in lst:
            if ts > s.ts + self.window_ms:
                continue                            # its window closed
            keep.append(s)
            bit = 1 << (kind - 1)
            if self.tagged and tag != s.key:
                continue
            if ts >= s.ts and item in s.items and not s.got & bit:
                s.got |= bit
                self._add(s.variant, user, kind)
                if kind == 3 and price:
                    self._add(s.variant, user, 4, float(price))
        if keep:
            self.open[user] = keep
        else:
            del self.open[user]

    def observe(self, snaps: dict) -> None:
        """The users' newly applied events (profile snapshots' `fresh`), in each user's order."""
        for uid, snap in snaps.items():
            for ev in snap.fresh:
                self.event(uid, ev.type, ev.item_id, ev.ts, ev.price,
                           ev.context.get("recommendation_id") if ev.context else None)

    def drain(self) -> dict[tuple[str, str], list[float]]:
        out, self.pending = self.pending, {}
        return out
