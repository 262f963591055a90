"""Reading recommendations without applying anything: what the API's fresh ask and the backtest's
evaluated asks call (the `Pipeline`'s read-only half: the same candidate, scoring and ranking stages)."""
from __future__ import annotations

import numpy as np

from stream.core.scoring import scored


class Asking:
    """Mixed into `stream.core.pipeline.Pipeline`: uses its profiles, `_candidates`, `_score_rank`, `_record_blend`."""

    def ask(self, users: list[str], now_ts: int, k: int | None = None,
            exclude: dict[str, set] | None = None) -> dict[str, list[str]]:
        """Read-only: each user's current top-k from the state as it is now (no event applied), leaving out
        `exclude[user]`; a user with no profile gets what a new user gets (trending). What the API calls."""
        return self.ask_variants(users, now_ts, {"": self.scorer}, k=k, exclude=exclude)[""]

    def ask_variants(self, users: list[str], now_ts: int, scorers: dict, *, k: int | None = None,
                     exclude: dict[str, set] | None = None, record: bool = False,
                     candidates: dict | None = None, unexplored: dict | None = None) -> dict[str, dict[str, list[str]]]:
        """`ask` for several scorers over one candidate stage (the backtest's variants side by side); with
        `record`, what is returned counts as shown (each scorer's ranker's impressions). `candidates` gets each
        user's candidates, best first by the first scorer, as (item, a bool per source that proposed it);
        `unexplored` scorer -> user -> the list without exploration."""
        snaps = self.profiles.read(users)
        self._asks += 1       # one key per user and ask, the same for every scorer: their rankers sample alike
        ctx, batch = self._candidates(snaps, now_ts, {}, exclude, None)
        if record:
            self._record_blend(ctx, batch, None)
        if candidates is not None and scorers:
            first = scored(next(iter(scorers.values())), batch).final
            for u, uid in enumerate(batch.users):
                order = np.argsort(-np.nan_to_num(first[u], nan=-np.inf), kind="stable")
                proposed = batch.features[u] > 0           # (C, sources): which source proposed which item
                candidates[uid] = [(batch.items[u][i], proposed[i]) for i in order]
        out = {}
        for name, scorer in scorers.items():
            plain = {} if unexplored is not None else None
            ranked = self._score_rank(ctx, batch, scorer, {}, k=k, triggers=None, record=record, unexplored=plain)
            out[name] = {uid: [items[i] for i, _ in picked] for uid, (items, _, picked, _) in ranked.items()}
            if plain is not None:
                unexplored[name] = {uid: [ranked[uid][0][i] for i, _ in p] for uid, p in plain.items()}
        return out
