"""Gradient-boosted trees over a sliding window of the newest ranking examples: the learned ranker's model.

river's models learn one example at a time and are linear (LR) or pairwise-linear (FM) in the features;
the ranking signal here is not: "the user's own item, seen two events ago, in a session of views" is
worth more than any sum of those columns. LightGBM fits trees on the newest `window` examples (bounded
memory: a ring buffer of float32 rows), refit every `refit_every` new examples, so the model keeps
learning from the stream and forgets what the shop no longer does (the first fits come sooner: each
time the rows held have doubled). Between refits the last fitted
booster scores (vectorised, about 1 µs a row). A restored booster serves until the window holds as many
rows as it was fitted on (a restart does not swap it for a fit on the first few thousand rows after it).

Chosen by measurement: side by side in one backtest run per shared log (the same events, candidates
and features), the trees beat river's logistic regression and FM learning from the same examples
(docs/models.md has the table and the commands).

A refit runs in the caller's thread (`background=False`: the backtest, replay-deterministic, 2 threads)
or in the background (the worker, so a batch never waits for a fit): a thread hands the window to a child
process at the lowest priority (`treeproc`: its own session and autogroup, nice 19), waits, and swaps the
booster in when done; one thread of LightGBM, at most once per `min_interval_s` of wall time, so that
fitting takes a bounded share of a worker's CPU however fast events come (a fit on the full window takes a
few seconds of one core).

In the worker (`compile`, on with `background`; `RECSTREAM_RANKER_COMPILE=0` turns it off) each fitted
booster is also compiled to machine code by lleaves (LLVM) in that child, and that scores: the same
raw scores (to about 1e-14), 5-10x faster than LightGBM's predict (0.5-1 us a row against 4.5; measured in
the twenty-fourth session, docs/benchmarks.md), which was the worker's largest single cost once the trees
rank every candidate. A compile takes about 3 s (in the child, so that LLVM does not hold this process's
GIL; the fit thread loads the object file) for the full window's 100 trees; a restored booster is compiled
as it is restored, before the worker's first batch. The backtest does not compile: its refits are many and
each would cost more than its predictions save.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from stream.core.ranking.treeproc import compile_trees, fit_trees

log = logging.getLogger("recstream.ranker")

PARAMS = {"objective": "binary", "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 50,
          "feature_fraction": 0.9, "bagging_fraction": 0.9, "bagging_freq": 1, "lambda_l2": 1.0,
          "verbose": -1, "num_threads": 2, "deterministic": True, "force_row_wise": True}


class WindowedGBDT:
    """A LightGBM binary model refit on the newest `window` examples every `refit_every` new ones."""

    def __init__(self, n_features: int, *, window: int = 200_000, refit_every: int = 20_000, rounds: int = 100,
                 min_rows: int = 2_000, seed: int = 0, background: bool = False, min_interval_s: float = 30.0,
                 compile: bool | None = None):
        self.n_features, self.window, self.refit_every, self.rounds = n_features, window, refit_every, rounds
        self.min_rows, self.seed, self.background = min_rows, seed, background
        self.compile = (background and os.environ.get("RECSTREAM_RANKER_COMPILE", "1") != "0"
                        if compile is None else compile)
        self._compiled = None           # (the booster it was compiled from, its lleaves model)
        self.min_interval_s = min_interval_s if background else 0.0
        self._last_fit = -float("inf")
        self.X = np.zeros((0, n_features), dtype=np.float32)
        self.y = np.zeros(0, dtype=np.float32)
        self.w = np.zeros(0, dtype=np.float32)
        self.filled = 0                 # rows held (<= window)
        self.head = 0                   # next row to write (ring)
        self.since_fit = 0
        self.complete_since_fit = self.complete_seen = 0     # rows with no missing column
        self.partial_seen = False       # some row had a missing column (a model's in-sample row)
        self.booster = None             # replaced whole when a fit is done (scoring reads it without a lock)
        self.fitted_rows = 0            # the rows the booster was fitted on (a restored one: before the restart)
        self._fitting: threading.Thread | None = None
        if background:     # import now (1.4 s, sklearn included), not in the fit thread where it holds the GIL
            import lightgbm  # noqa: F401

    # ---- learning -------------------------------------------------------------------------------
    def learn_many(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """Append examples to the window; refit when `refit_every` new ones have come (the first fit
        once `min_rows` are held)."""
        n = len(X)
        if n == 0:
            return
        self._grow(min(self.window, self.filled + n))
        for start in range(0, n, self.window):
            chunk = slice(start, min(n, start + self.window))
            m = chunk.stop - chunk.start
            idx = (self.head + np.arange(m)) % self.window
            self.X[idx], self.y[idx], self.w[idx] = X[chunk], y[chunk], w[chunk]
            self.head = (self.head + m) % self.window
            self.filled = min(self.window, self.filled + m)
        self.since_fit += n
        complete = int(np.isfinite(X).all(axis=1).sum())
        self.complete_since_fit += complete
        self.complete_seen += complete
        self.partial_seen = self.partial_seen or complete < n
        # the first fit once `min_rows` are held, then each time the rows held have doubled, then every
        # `refit_every`: early on the model changes most with each new example. Rows with missing
        # columns (a model's in-sample rows, features.in_sample) teach nothing about those columns, so
        # the complete rows count on their own too: a fit each time they have doubled
        def doubled(new: int, held: int) -> bool:
            return new >= min(self.refit_every, max(self.min_rows, held - new))
        # A restored booster serves until the window holds as many rows as it was fitted on: a restart must
        # not swap a model of the full window for one of the first few thousand rows after it.
        due = ((doubled(self.since_fit, self.filled) or self.partial_seen
                and doubled(self.complete_since_fit, self.complete_seen))
               and time.monotonic() - self._last_fit >= self.min_interval_s
               and self.filled >= min(self.fitted_rows, self.window)
               if self.booster is not None else self.filled >= self.min_rows)
        if due and self._both_classes():
            self.refit()

    def _both_classes(self) -> bool:
        return bool((self.y[: self.filled] > 0).any() and (self.y[: self.filled] == 0).any())

    def _grow(self, rows: int) -> None:
        if rows <= len(self.X):
            return
        size = min(self.window, max(rows, 2 * len(self.X), 1024))
        for name in ("X", "y", "w"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=np.float32)
            new[: len(old)] = old
            setattr(self, name, new)

    def refit(self, wait: bool = False) -> None:
        """Fit on the window as it is now (a copy, so learning goes on while a background fit runs); with
        `wait`, after any fit in progress and in this thread."""
        if self._fitting is not None and self._fitting.is_alive():
            if not wait:
                return                  # one fit at a time; the next is due after more examples
            self._fitting.join()
        self.since_fit = self.complete_since_fit = 0
        self._last_fit = time.monotonic()
        data = (self.X[: self.filled].copy(), self.y[: self.filled].copy(), self.w[: self.filled].copy())
        if self.background and not wait:
            self._fitting = threading.Thread(target=self._fit, args=data, name="ranker-fit", daemon=True)
            self._fitting.start()
        else:
            self._fit(*data)

    def fit_now(self) -> bool:
        """Fit on the window as it is now and wait for it (a benchmark's warm-up, so that a timed run scores
        with trees as a worker that has run a while does; a worker itself never waits for a fit). Returns
        whether a model is fitted (not without positive and negative examples)."""
        if self._both_classes():
            self.refit(wait=True)
        elif self._fitting is not None:
            self._fitting.join()
        return self.booster is not None

    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        import lightgbm as lgb
        params = {**PARAMS, "seed": self.seed, "num_threads": 1 if self.background else PARAMS["num_threads"]}
        t, booster, where = time.perf_counter(), None, "here"
        if self.background:         # a child process at the lowest priority fits (and compiles) them
            try:
                booster, fast = fit_trees(X, y, w, params, self.rounds, self.compile)
                self._compiled, where = ((booster, fast) if fast is not None else None), "in a child process"
            except Exception as exc:  # noqa: BLE001 - the same trees, fitted here instead
                log.warning("the ranker's refit in a child process failed (%s: %s): fitting in the worker",
                            type(exc).__name__, exc)
        if booster is None:
            booster = lgb.train(params, lgb.Dataset(X, y, weight=w, free_raw_data=True), self.rounds)
            self._compile(booster)
        # after its compiled copy: scoring never pairs a booster with another's code
        self.booster, self.fitted_rows = booster, len(X)
        if self.background:
            log.info("ranker trees refitted on %d rows in %.1f s (%s%s)", len(X), time.perf_counter() - t, where,
                     ", compiled" if self._compiled is not None else "")

    def _compile(self, booster) -> None:
        fast = compile_trees(booster) if self.compile else None
        self._compiled = (booster, fast) if fast is not None else None

    # ---- scoring --------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self.booster is not None

    def logits(self, X: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n,) raw scores (log-odds); zeros before the first fit."""
        booster, fast = self.booster, self._compiled
        if booster is None or len(X) == 0:
            return np.zeros(len(X))
        if fast is not None and fast[0] is booster:
            return fast[1].predict(np.ascontiguousarray(X, dtype=np.float64), n_jobs=1)
        return booster.predict(np.asarray(X, dtype=np.float32), raw_score=True,
                               num_threads=1).astype(np.float64)

    def importance(self) -> np.ndarray:
        """Each feature's share of the total split gain (sums to 1; zeros before the first fit)."""
        if self.booster is None:
            return np.zeros(self.n_features)
        gain = self.booster.feature_importance("gain").astype(np.float64)
        return gain / gain.sum() if gain.sum() > 0 else gain

    # ---- persistence: the fitted model, not the window (a restart refills it from the stream) ----
    def __getstate__(self) -> dict:
        keep = ("n_features", "window", "refit_every", "rounds", "min_rows", "seed", "background", "min_interval_s",
                "compile")
        st = {k: getattr(self, k) for k in keep}
        st["booster"] = self.booster.model_to_string() if self.booster is not None else None
        st["fitted_rows"] = self.fitted_rows
        return st

    def __setstate__(self, st: dict) -> None:
        model, fitted_rows = st.pop("booster"), st.pop("fitted_rows", 0)
        self.__init__(st.pop("n_features"), **st)
        if model is not None:
            import lightgbm as lgb
            booster = lgb.Booster(model_str=model)
            self._compile(booster)      # here, before the worker's first batch (seconds at start, none per batch)
            self.booster, self.fitted_rows = booster, fitted_rows

