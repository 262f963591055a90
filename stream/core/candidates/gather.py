"""Stage 3 for a batch: every candidate source's reads in one Redis round-trip, then the items' metadata
(and their popularity and trend, for a scorer that needs them) in a second; the result is the
`CandidateBatch` the scorers read."""
from __future__ import annotations

import math

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


def item_stats(client, keys, trend_half_life_s: float, items: list[str], now_ts: int) -> dict[str, tuple[float, float]]:
    """item -> (all-time weighted interactions, trend score at now) in one round-trip (ZMSCORE)."""
    if not items:
        return {}
    epoch_ms = 64 * trend_half_life_s * 1000
    e = math.floor(now_ts / epoch_ms)
    pipe = pipeline(client)
    pipe.execute_command("ZMSCORE", keys.pop(), *items)
    pipe.execute_command("ZMSCORE", keys.trend(e), *items)
    pop, tr = pipe.execute()
    scale = 2.0 ** (-(now_ts - e * epoch_ms) / (epoch_ms / 64))
    return {i: (float(p or 0.0), float(r or 0.0) * scale) for i, p, r in zip(items, pop, tr)}

