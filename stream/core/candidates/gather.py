"""Stage 3 for a batch: every candidate source's reads in one Redis round-trip, then the items' metadata
(and their popularity and trend, for a scorer that needs them) in a second; the result is the
`CandidateBatch` the scorers read."""
from __future__ import annotations

import math
import threading
import time

import numpy as np

from stream.core.candidates.base import SOURCE_NAMES, BatchContext, CandidateSource
from stream.core.scoring.base import CandidateBatch
from stream.core.storage.rawpipe import pipeline


POP_HISTORY = 10       # the user's newest items whose popularity says how mainstream they are


def gather(client, sources: list[CandidateSource], catalog, snaps: dict, now_ts: int, *, exclude: dict | None,
           triggers: dict | None, content=None, transformer=None) -> tuple[BatchContext, CandidateBatch]:
    """The candidates of the users in `snaps`. With `content` (a ContentStore), each candidate's cosine to
    the user's content vector; with a `transformer`, items it never saw borrow a known neighbour's score."""
    ctx = BatchContext(snaps, now_ts=now_ts, exclude=exclude or {})
    pipe = pipeline(client)
    collectors = []
    for src in sources:
        before = len(pipe)                 # (len(): a cluster pipeline keeps no command_stack)
        fn = src.plan(ctx, pipe)
        collectors.append((fn, before, len(pipe)))
    replies = pipe.execute() if len(pipe) else []
    for fn, a, b in collectors:
        fn(replies[a:b])
    users = list(snaps)
    cand_items, feats = [], []
    width = len(SOURCE_NAMES)
    for uid in users:
        cands = ctx.cands.get(uid, {})
        cand_items.append(list(cands))
        feats.append(np.array(list(cands.values()), dtype=np.float64).reshape(-1, width))
    all_items = {i for ids in cand_items for i in ids}
    if content is not None and transformer is not None:
        transformer.borrow_neighbours(all_items, content.index)
    # the ranker compares candidates to the user's newest item, and their popularity to the recent items'
    recent = {i for u in users for i in snaps[u].recent[:POP_HISTORY]}
    batch = CandidateBatch(users, cand_items, feats, [snaps[u].recent for u in users],
                           [triggers[u].type if triggers else (snaps[u].last_type or "query") for u in users],
                           snapshots=snaps, now_ts=now_ts, meta=catalog.meta(all_items | recent))
    if content is not None:
        batch.content_sim = content_similarity(content.index, ctx.vectors, cand_items, users)
    if ctx.linear:             # the item linear model's score of every candidate, not only those it proposed
        batch.linear = [ctx.linear[u].of(items) if u in ctx.linear else np.zeros(len(items))
                        for u, items in zip(users, cand_items)]
    return ctx, batch


def content_similarity(index, uvec: dict, cand_items: list[list[str]], users: list[str]) -> list[np.ndarray]:
    """Per user, each candidate's cosine to the user's content vector (the one the content source
    searched with; NaN: no embedding either side)."""
    out = []
    for uid, items in zip(users, cand_items):
        sim = np.full(len(items), np.nan)
        q = uvec.get(uid)
        if q is not None and items:
            rows = np.array([index.row.get(i, -1) for i in items])
            ok = rows >= 0
            if ok.any():
                sim[ok] = index.mat[rows[ok]] @ q
        out.append(sim)
    return out


def item_stats(client, keys, trend_half_life_s: float, items: list[str], now_ts: int
               ) -> dict[str, tuple[float, float, float, float]]:
    """item -> (all-time weighted interactions, trend score at now, its explicit ratings' mean against all
    items' mean, how many ratings it has) in one round-trip (ZMSCORE; `_read_raw`)."""
    if not items:
        return {}
    e, scale = trend_epoch(trend_half_life_s, now_ts)
    raw, totals = _read_raw(client, keys, e, items)
    mean = _mean(*totals)
    return {i: (p, r * scale, *_rated(rs, n, mean)) for i, (p, r, rs, n) in zip(items, raw)}


RATING_PRIOR = 5.0     # an item's rating mean is shrunk towards all items' mean as if it had this many more


def _read_raw(client, keys, epoch: int, items: list[str]
              ) -> tuple[list[tuple[float, float, float, float]], tuple[float, float]]:
    """Per item: its popularity, its trend as stored in `epoch`'s key (not yet decayed to a time), its
    ratings' sum and count (0 on a log whose events carry none); and every item's rating sum and count
    (member "")."""
    pipe = pipeline(client)
    if items:
        pipe.execute_command("ZMSCORE", keys.pop(), *items)
        pipe.execute_command("ZMSCORE", keys.trend(epoch), *items)
    for key in keys.rating():
        pipe.execute_command("ZMSCORE", key, "", *items)
    *stats, rsum, rn = pipe.execute()
    pop, tr = stats if items else ([], [])
    out = [(float(p or 0.0), float(r or 0.0), float(rs or 0.0), float(n or 0.0))
           for p, r, rs, n in zip(pop, tr, rsum[1:], rn[1:])]
    return out, (float(rsum[0] or 0.0), float(rn[0] or 0.0))


def _mean(total: float, count: float) -> float:
    return total / count if count else 0.0


def _rated(rsum: float, n: float, mean: float) -> tuple[float, float]:
    """An item's ratings as the ranker reads them: (sum - n * mean) / (n + RATING_PRIOR), the mean of all
    items' ratings being `mean`, and n."""
    return (rsum - n * mean) / (n + RATING_PRIOR), n


def trend_epoch(trend_half_life_s: float, now_ts: int) -> tuple[int, float]:
    """The trend key's epoch at `now_ts` (ms) and the factor that decays its stored scores to `now_ts`."""
    epoch_ms = 64 * trend_half_life_s * 1000
    e = math.floor(now_ts / epoch_ms)
    return e, 2.0 ** (-(now_ts - e * epoch_ms) / (epoch_ms / 64))


class ItemStatsCache:
    """`item_stats` kept between batches: an item's popularity, stored trend and ratings are read again
    only when stale (within one trend epoch; the trend still decayed to each batch's time).

    The worker's (`max_age_s` a number): reused for up to that much wall time, since other workers write
    the shared statistics too (at 1,000 events/s a batch's ~700 candidates are mostly the last batch's); a
    statistic is then at most `max_age_s` old, the ranker's features, not the shared counts, which the
    worker writes exactly. A backtest's (`max_age_s=None`): its pipeline is the only writer of its key
    space, so an item stays cached until `forget` names it (the pipeline calls it with the items of every
    shared write) and the reads stay exact: the same figures as reading every batch, fewer round-trip
    bytes (the item statistics were about a tenth of a MovieLens backtest's main process)."""

    def __init__(self, max_age_s: float | None, max_items: int = 200_000):
        self.max_age_s, self.max_items = max_age_s, max_items
        self._got: dict[str, tuple] = {}     # item -> its statistics as read (see `_read`), when read
        self._totals: tuple[float, float] | None = None     # every item's rating sum and count (exact mode)
        self._epoch: int | None = None
        self._lock = threading.Lock()      # (a batch not prepared ahead reads on the emitting thread)

    def read(self, client, keys, trend_half_life_s: float, items: list[str], now_ts: int
             ) -> dict[str, tuple[float, float, float, float]]:
        with self._lock:
            return self._read(client, keys, trend_half_life_s, items, now_ts)

    def forget(self, items) -> None:
        """These items' statistics were written: read them (and the rating totals) again when next asked."""
        with self._lock:
            for i in items:
                self._got.pop(i, None)
            self._totals = None

    def _read(self, client, keys, trend_half_life_s: float, items: list[str], now_ts: int):
        e, scale = trend_epoch(trend_half_life_s, now_ts)
        if e != self._epoch or len(self._got) > self.max_items:
            self._got.clear()
            self._epoch, self._totals = e, None
        got, now, old = self._got, time.monotonic(), self.max_age_s
        if old is None:            # exact: (popularity, stored trend, rating sum, ratings), rated at each read
            stale = [i for i in items if i not in got]
            if stale or self._totals is None:
                raw, self._totals = _read_raw(client, keys, e, stale)
                got.update(zip(stale, raw))
            mean = _mean(*self._totals)
            return {i: ((g := got[i])[0], g[1] * scale, *_rated(g[2], g[3], mean)) for i in items}
        stale = [i for i in items if (g := got.get(i)) is None or now - g[4] > old]
        if stale:                  # (popularity, stored trend, rated deviation, ratings, when): reused while fresh
            raw, totals = _read_raw(client, keys, e, stale)
            mean = _mean(*totals)
            for i, (p, r, rs, n) in zip(stale, raw):
                got[i] = (p, r, *_rated(rs, n, mean), now)
        return {i: ((g := got[i])[0], g[1] * scale, g[2], g[3]) for i in items}
