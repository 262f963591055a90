"""Ranking features for the online ranker: pure functions of what the candidate stage already holds
(source scores, the transformer's and the base scorer's scores, the user's profile snapshot, item
metadata and popularity). No I/O here: the pipeline gathers the inputs once per batch.

One row per candidate, columns in `FEATURE_NAMES` order; every value finite (missing -> 0 plus an
indicator column where "missing" itself carries information).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stream.core.candidates import SOURCE_NAMES
from stream.core.scoring.itemtable import ItemTable
from stream.core.scoring.segments import segment_rank_inverse, segment_zscore

TRIGGER_TYPES = ("view", "click", "add_to_cart", "purchase", "search")

FEATURE_NAMES: tuple[str, ...] = (
    *(f"src_{s}" for s in SOURCE_NAMES),            # each source's own score (0 = not proposed)
    *(f"rank_{s}" for s in SOURCE_NAMES),           # 1 / (1 + rank among the user's candidates by that source)
    "n_sources",                                    # how many sources proposed it
    "transformer_z", "transformer_known",           # transformer score standardised over the user's candidates
    "base_z", "base_rank",                          # the base scorer's score (z) and position (1 / (1 + rank))
    "log_popularity", "trend",                      # all-time popularity; decayed trend / batch max
    "cat_affinity", "brand_affinity",               # the user's decayed affinity / their strongest one
    "cat_log_hours", "cat_never",                   # hours since the user last touched the item's category
    "price_rel", "price_known",                     # log(item price) - the user's usual log price
    "log_since_last_s", "log_gap_before_last_s",    # time since the user's last event; the gap before it
    "log_history",                                  # length of the user's recent sequence
    *(f"trigger_{t}" for t in TRIGGER_TYPES),       # what the user did last
    "hist_recency", "hist_count", "hist_is_last",   # in the user's own history: 1/(1+newest position), log1p(count), newest
    "hist_log_hours",                               # log1p(hours since the user last touched it); 0 if never or unknown
    "hist_bought",                                  # among the user's recent purchases (shoppers come back to them)
    "content_sim", "content_known",                 # cosine to the user's recent items' (or query's) embedding
    "last_same_cat", "last_same_brand",             # same category / brand as the user's newest item
    "last_price_rel", "last_price_known",           # log(item price) - log(the newest item's price)
    "linear_score",                                 # the item linear model's score / the user's best (any candidate)
    "pop_rel",                                      # log popularity - its mean over the user's recent items (0 without)
    "item_rating", "item_rated",                    # its ratings' mean against all items' (shrunk); log1p(count)
)
N_FEATURES = len(FEATURE_NAMES)
_W = len(SOURCE_NAMES)
_HIST, _BOUGHT, _CONTENT, _LAST, _LINEAR, _POP_REL, _RATING = (FEATURE_NAMES.index(n) for n in (
    "hist_recency", "hist_bought", "content_sim", "last_same_cat", "linear_score", "pop_rel", "item_rating"))


@dataclass
class UserView:
    """The slice of a profile snapshot the features need."""
    affinity: dict[str, float]        # "c:{cat}" / "b:{brand}" -> decayed value
    aff_ts: dict[str, int]            # same keys -> last event time on it (ms)
    last_ts: int
    prev_ts: int
    last_type: str
    price_mean: float | None          # mean log price
    history: int
    recent_ts: list[int] | None = None  # when the user last touched each recent item (ms, newest first; 0 unknown)
    pop_mean: float | None = None     # mean log1p(popularity) of the user's recent items (how mainstream they are)
    bought: list[str] | None = None   # the user's recent purchases (newest first)


def user_features(user: UserView, now_ts: int) -> np.ndarray:
    """The columns that are the same for every candidate of a user."""
    since = max(0, now_ts - user.last_ts) / 1000 if user.last_ts else 0.0
    gap = max(0, user.last_ts - user.prev_ts) / 1000 if user.prev_ts else 0.0
    trig = [1.0 if user.last_type == t else 0.0 for t in TRIGGER_TYPES]
    return np.array([math.log1p(since), math.log1p(gap), math.log1p(user.history), *trig])


def candidate_features(sources: np.ndarray, transformer: np.ndarray | None, base: np.ndarray,
                       meta: list[tuple[str | None, str | None, float | None]], user: UserView, now_ts: int,
                       popularity: np.ndarray, trend: np.ndarray, content_sim: np.ndarray | None = None,
                       items: list[str] | None = None, history: list[str] | None = None,
                       last_meta: tuple | None = None) -> np.ndarray:
    """(C, N_FEATURES) for one user's C candidates.

    sources: (C, len(SOURCE_NAMES)) source scores; transformer: (C,) with NaN where unknown, or None;
    base: (C,) the base scorer's final score; meta: per candidate (category, brand, price);
    popularity: (C,) all-time weighted interactions; trend: (C,) already scaled to [0, 1];
    content_sim: (C,) cosine to the user's content vector, NaN where an embedding is missing (or None);
    items, history: the candidates' ids and the user's recent items, newest first (history columns 0 without);
    last_meta: (category, brand, price) of the user's newest item (the "last_" columns 0 without).
    """
    return batch_features([sources], None if transformer is None else [transformer], [base], [meta], [user],
                          now_ts, [popularity], [trend], None if content_sim is None else [content_sim],
                          None if items is None else [items], None if history is None else [history],
                          [last_meta])[0]


def history_features(items: list[str], history: list[str], touched: list[int] | None = None,
                     now_ts: int = 0) -> np.ndarray:
    """(C, 4): per candidate, 1/(1 + its newest position in the user's history), log1p(how often it is
    there), whether it is the newest item, log1p(hours since the user last touched it) (`touched`: the
    history's times in ms, same order; 0 where unknown): repeat consumption, which dominates shopping and
    session logs, and how fresh it is (five items ago may be a minute or a month).

    >>> history_features(["a", "b", "z"], ["b", "a", "b"], [7_200_000, 3_600_000, 0], 7_200_000).round(3).tolist()
    [[0.5, 0.693, 0.0, 0.693], [1.0, 1.099, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    for pos, it in enumerate(history):
        first.setdefault(it, pos)
        count[it] = count.get(it, 0) + 1
    out = np.zeros((len(items), 4))
    row = dict(zip(items, range(len(items))))      # the history is short, the candidates many: walk the history
    rows_of: dict[str, list[int]] | None = None
    if len(row) != len(items):                    # repeated candidates: every row of each
        rows_of = {}
        for r, it in enumerate(items):
            rows_of.setdefault(it, []).append(r)
    at, values = [], []                           # filled in one assignment (one a row cost a microsecond each)
    for it, pos in first.items():
        n = row.get(it)
        if n is not None:
            t = touched[pos] if touched is not None and pos < len(touched) else 0
            hours = math.log1p(max(0, now_ts - t) / 3.6e6) if t else 0.0
            v = (1.0 / (1.0 + pos), math.log1p(count[it]), float(pos == 0), hours)
            for r in (n,) if rows_of is None else rows_of[it]:
                at.append(r)
                values.append(v)
    if at:
        out[at] = values
    return out


def _affinity_columns(users: list[UserView], ids: np.ndarray, index: dict, seg: np.ndarray, kind: str, now_ts: int,
                      timed: bool = True) -> list[np.ndarray]:
    """Per candidate (`ids`: the id of its category or brand in `index`, name -> id, negative without one;
    `seg`: its user), from the users' affinities of `kind`: the affinity over the user's strongest of that kind
    and, with `timed`, log1p of the hours since the user last touched it and whether they never did (0, 0, 1
    without the field)."""
    n = len(index) + 1                                 # the last column: no field
    key = np.where(ids >= 0, ids, n - 1)
    value = np.zeros((len(users), n))
    hours, never = (np.zeros((len(users), n)), np.ones((len(users), n))) if timed else (None, None)
    for u, user in enumerate(users):
        aff, when = user.affinity, user.aff_ts
        mine = [(k, v) for k, v in aff.items() if k.startswith(kind)]
        top = max((v for _, v in mine), default=0.0) or 1.0
        for k, v in mine:
            c = index.get(k[len(kind):])
            if c is not None:
                value[u, c] = v / top
        for k, w in when.items() if timed else ():
            c = index.get(k[len(kind):]) if k.startswith(kind) else None
            if c is not None and w is not None:
                hours[u, c], never[u, c] = math.log1p(max(0, now_ts - w) / 3.6e6), 0.0
    return [value[seg, key]] + ([hours[seg, key], never[seg, key]] if timed else [])


def batch_features(sources: list[np.ndarray], transformer: list[np.ndarray] | None, base: list[np.ndarray],
                   meta: list[list], users: list[UserView], now_ts: int, popularity: list[np.ndarray],
                   trend: list[np.ndarray], content_sim: list[np.ndarray] | None = None,
                   items: list[list[str]] | None = None, histories: list[list[str]] | None = None,
                   last_meta: list[tuple | None] | None = None, linear: list[np.ndarray] | None = None
                   ) -> list[np.ndarray]:
    """`candidate_features` for every user of a batch at once, from per-candidate lists (each candidate its
    own row of the item table): see `table_features`."""
    flat = [m for m_u in meta for m in m_u]
    table = ItemTable.of(flat, np.concatenate(popularity) if flat else [], np.concatenate(trend) if flat else [])
    return table_features(sources, transformer, base, users, now_ts, table, np.arange(len(flat)), content_sim,
                          items, histories, last_meta, linear)


def table_features(sources: list[np.ndarray], transformer: list[np.ndarray] | None, base: list[np.ndarray],
                   users: list[UserView], now_ts: int, table: ItemTable, rows: np.ndarray,
                   content_sim: list[np.ndarray] | None = None, items: list[list[str]] | None = None,
                   histories: list[list[str]] | None = None, last_meta: list[tuple | None] | None = None,
                   linear: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """`candidate_features` for every user of a batch at once (the per-user statistics, ranks and
    standardisation, computed segment-wise over one flat array; the items' metadata and statistics read from
    `table` at each candidate's row, `rows`): a list of (C_u, N_FEATURES)."""
    sizes = [len(b) for b in base]
    n_users, total = len(sizes), sum(sizes)
    X = np.zeros((total, N_FEATURES), order="F")      # filled column by column
    if total == 0:
        return [X[:0] for _ in sizes]
    seg = np.repeat(np.arange(n_users), sizes)
    S = np.concatenate([s.reshape(-1, _W) for s in sources])
    B = np.concatenate(base).astype(np.float64)
    X[:, :_W] = S
    for j in range(_W):
        if S[:, j].any():
            X[:, _W + j] = segment_rank_inverse(S[:, j], seg)
    col = 2 * _W
    X[:, col] = (S > 0).sum(axis=1)
    T = np.concatenate(transformer).astype(np.float64) if transformer is not None else np.full(total, np.nan)
    X[:, col + 1] = segment_zscore(T, seg, n_users)
    X[:, col + 2] = np.isfinite(T)
    X[:, col + 3] = segment_zscore(B, seg, n_users)
    seg_min = np.full(n_users, np.inf)
    np.minimum.at(seg_min, seg, B)
    X[:, col + 4] = segment_rank_inverse(B - seg_min[seg] + 1.0, seg)    # every candidate gets a position
    X[:, col + 5] = np.log1p(np.maximum(table.pop[rows], 0.0))
    X[:, col + 6] = table.trend[rows]
    usual_pop = np.array([u.pop_mean if u.pop_mean is not None else np.nan for u in users], dtype=np.float64)[seg]
    X[:, _POP_REL] = np.where(np.isfinite(usual_pop), X[:, col + 5] - usual_pop, 0.0)
    X[:, _RATING], X[:, _RATING + 1] = table.rating[rows], np.log1p(np.maximum(table.rated[rows], 0.0))
    # the user's category and brand affinities: each distinct category (brand) of the batch gets a column of
    # a small users x categories table filled from the profiles, and every candidate reads its cell
    cat, brand = table.cat[rows], table.brand[rows]
    X[:, col + 7], X[:, col + 9], X[:, col + 10] = _affinity_columns(users, cat, table.cats, seg, "c:", now_ts)
    X[:, col + 8] = _affinity_columns(users, brand, table.brands, seg, "b:", now_ts, timed=False)[0]
    # prices as one array (NaN: unknown), compared with the user's usual and newest item's price in numpy
    log_price = table.log_price[rows]
    usual = np.array([u.price_mean if u.price_mean is not None else np.nan for u in users], dtype=np.float64)[seg]
    X[:, col + 11], X[:, col + 12] = _log_ratio(log_price, usual)
    uf = np.stack([user_features(u, now_ts) for u in users])
    X[:, col + 13: col + 13 + uf.shape[1]] = uf[seg]
    if items is not None and histories is not None:
        X[:, _HIST:_HIST + 4] = np.concatenate([history_features(i, h, u.recent_ts, now_ts)
                                                for i, h, u in zip(items, histories, users)]).reshape(-1, 4)
    if items is not None and any(u.bought for u in users):
        ends = np.cumsum(sizes)
        for u, user in enumerate(users):          # only the users who bought something lately
            if user.bought:
                b = set(user.bought)
                X[ends[u] - sizes[u]: ends[u], _BOUGHT] = [it in b for it in items[u]]
    if content_sim is not None:
        cs = np.concatenate(content_sim).astype(np.float64)
        known = np.isfinite(cs)
        X[:, _CONTENT] = np.where(known, cs, 0.0)
        X[:, _CONTENT + 1] = known
    if last_meta is not None:
        lm = [m if m is not None else (None, None, None) for m in last_meta]
        for j, ids in ((0, cat), (1, brand)):     # same category, same brand as the user's newest item
            newest = np.array([table.field_id(j, m[j]) for m in lm], dtype=np.int64)
            present = np.array([m[j] is not None for m in lm], dtype=bool)
            X[:, _LAST + j] = (ids == newest[seg]) & present[seg]
        lp = np.log(np.array([m[2] if m[2] and m[2] > 0 else np.nan for m in lm], dtype=np.float64))
        X[:, _LAST + 2], X[:, _LAST + 3] = _log_ratio(log_price, lp[seg])
    if linear is not None:
        X[:, _LINEAR] = np.concatenate(linear)
    return np.split(X, np.cumsum(sizes)[:-1])


_N_SOURCES = FEATURE_NAMES.index("n_sources")
_MODEL_SOURCES = [SOURCE_NAMES.index("model"), SOURCE_NAMES.index("linear")]
MODEL_COLUMNS = tuple(FEATURE_NAMES.index(n) for n in ("src_model", "rank_model", "src_linear", "rank_linear",
                                                       "transformer_z", "transformer_known", "linear_score"))
BASE_COLUMNS = tuple(FEATURE_NAMES.index(n) for n in ("base_z", "base_rank"))


def in_sample(X: np.ndarray, base_has_model: bool) -> np.ndarray:
    """A copy of feature rows computed at a time the model had trained on (its own training events), with
    the model's columns missing (NaN; the trees route missing values by themselves) and `n_sources`
    counting the other sources only. On its training events a model looks better than it will on
    anything new, so a ranker that learned its columns there would trust it too much; it learns them
    from the rows after the model's training window only. `base_has_model`: the base order blends the
    transformer in, so its columns are the model's too.

    >>> X = np.zeros((1, N_FEATURES)); X[0, [_MODEL_SOURCES[0], _N_SOURCES]] = 0.5, 2
    >>> Y = in_sample(X, True); int(Y[0, _N_SOURCES]), bool(np.isnan(Y[0, list(MODEL_COLUMNS + BASE_COLUMNS)]).all())
    (1, True)
    """
    out = np.array(X, dtype=np.float32, copy=True)
    out[:, _N_SOURCES] -= (out[:, _MODEL_SOURCES] > 0).sum(axis=1)
    out[:, list(MODEL_COLUMNS + (BASE_COLUMNS if base_has_model else ()))] = np.nan
    return out


def _log_ratio(log_a: np.ndarray, log_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log a - log b clipped to +-5, 0 where either is unknown (NaN); whether both are known)."""
    known = np.isfinite(log_a) & np.isfinite(log_b)
    with np.errstate(invalid="ignore"):
        return np.where(known, np.clip(log_a - log_b, -5.0, 5.0), 0.0), known


def last_item_features(meta: list, last: tuple | None) -> np.ndarray:
    """(C, 4): per candidate, same category as the user's newest item, same brand, log price ratio to it
    (clipped to +-5) and whether both prices are known: in a session, the next item is often a sibling of
    the one on screen. The per-candidate reference: `batch_features` computes the same columns in numpy
    over a whole batch, and tests/test_ranker.py holds the two equal.

    >>> last_item_features([("shoes", "acme", 50.0), ("hats", None, None)], ("shoes", "acme", 25.0)).round(3).tolist()
    [[1.0, 1.0, 0.693, 1.0], [0.0, 0.0, 0.0, 0.0]]
    """
    out = np.zeros((len(meta), 4))
    if last is None:
        return out
    lc, lb, lp = last
    for r, (c, b, p) in enumerate(meta):
        known = bool(p and lp and p > 0 and lp > 0)
        out[r] = (c is not None and c == lc, b is not None and b == lb,
                  max(-5.0, min(5.0, math.log(p / lp))) if known else 0.0, known)
    return out
