"""The transformer scorer at serving time: onnxruntime only (no torch in the worker).

`OnnxScorer` loads a registered SeqRec export, picks the CUDA execution provider when
onnxruntime-gpu and a GPU are present and the CPU provider otherwise,
and logs which. It maps external item ids to the model's vocabulary: items it does not know get
no transformer score (NaN) and are ranked by the other candidate sources' scores alone.
All users of a worker batch are scored in micro-batches of `max_batch` sequences, one run each.
On the CPU provider, an export with the `state` and `items` outputs (exporters/onnx.py) is run once per
distinct history for its last state; every score is then a dot product with the item table in numpy, so
the model source's pool (thousands of items a user) and the candidates' scores share one run, not two.

`BlendedScorer` = fallback + weight x (transformer score standardised over the user's candidates); the
pipeline learns the weight from what users do next (`blendweight.py`).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import orjson

from stream.core.content import ContentIndex
from stream.core.onnxrt import open_session
from stream.core.scoring.base import CandidateBatch, Scored
from stream.core.scoring.blendweight import standardised
from stream.core.scoring.fallback import FallbackScorer
from stream.core.scoring.linear import ItemLinear, LinearRetrieval
from stream.core.storage.registry import Registry
from stream.errors import ModelError

log = logging.getLogger("recstream.scorer")


TRIM_STEP = 8                              # history lengths are bucketed to multiples of this


class OnnxScorer:
    """A registered SeqRec export on onnxruntime: scores (history, candidates) pairs. Not a pipeline
    `Scorer` by itself (`BlendedScorer` is); it owns its vocabulary and the `proxy` map of unknown
    items to known neighbours, which only `borrow_neighbours` writes."""

    name = "transformer"
    state_path = True                       # False: always the graph's single run (bench.run --no-state-path)

    def __init__(self, model_dir: str | Path, max_batch: int = 256, providers: list[str] | None = None):
        d = self.dir = Path(model_dir)
        self.manifest = orjson.loads((d / "manifest.json").read_bytes())
        self.version = self.manifest["version"]
        vocab = orjson.loads((d / "vocab.json").read_bytes())
        self.index = {item: i for i, item in enumerate(vocab) if i > 0 and item is not None}   # null: a row unused
        self.proxy: dict[str, int] = {}    # unknown item -> model id of its nearest known item (content), 0 = none
        self.T = int(self.manifest["model_config"]["max_len"])
        self.trained_until = self.manifest.get("trained_until_ts")    # ms: its training events end here
        self.session, available = open_session(d / "model.onnx", providers)
        self.provider = self.session.get_providers()[0]
        self.max_batch = max_batch
        # an export whose history axis is dynamic takes short histories with their padding cut off
        self.trim = not isinstance(self.session.get_inputs()[0].shape[1], int)
        outputs = {o.name for o in self.session.get_outputs()}
        self.items = None                   # (n_items, dim) item table when the export has the state path
        # on the CPU provider only: on a GPU the products stay on the device in the single run (the state
        # path there is unmeasured: `python -m bench.scorer --batch-path` on a GPU machine decides)
        if self.state_path and {"state", "items"} <= outputs and self.provider == "CPUExecutionProvider":
            self.items = self._run(["items"], np.zeros((1, self.T), np.int64), np.zeros((1, 1), np.int64))[0]
        self._states: dict[bytes, np.ndarray] = {}   # history row -> last state, the most recent batches'
        self._known = (None, 0)             # (content index over the items the model knows, catalog size then)
        # the item linear model registered with it (models/linear.py), when the version has one
        self.linear = ItemLinear(d / "linear.npz", self.index) if (d / "linear.npz").exists() else None
        log.info("transformer %s on %s (available: %s)", self.version, self.provider, ", ".join(available))

    def _run(self, outputs: list[str], histories: np.ndarray, candidates: np.ndarray) -> list[np.ndarray]:
        """One onnxruntime run; its errors are translated here, at the edge, into `ModelError` naming the
        model version. A plain run on either provider: IOBinding with host buffers measured no faster on
        an H200."""
        try:
            return self.session.run(outputs, {"seq": histories, "candidates": candidates})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind classes
            raise ModelError(f"transformer {self.version} on {self.provider}, batch {histories.shape}x"
                             f"{candidates.shape[1]}: {exc}") from exc

    def states(self, histories: np.ndarray) -> np.ndarray:
        """(B, T) model item ids -> (B, dim) last states (export with the state path only). Histories seen
        in the last few calls (the model source's, then the scorer's, in one batch) are not run again."""
        keys = [row.tobytes() for row in histories]
        got = [self._states.get(k) for k in keys]
        miss = [i for i, g in enumerate(got) if g is None]
        if miss:
            fresh = self._fresh_states(histories[miss])
            if len(self._states) > 8192:
                self._states = {}
            for i, st in zip(miss, fresh):
                got[i] = self._states[keys[i]] = st
        return np.stack(got) if got else np.zeros((0, self.items.shape[1]), np.float32)

    def _fresh_states(self, histories: np.ndarray) -> np.ndarray:
        """The graph's last states of `histories`: one run, or (a dynamic history axis) one run per length
        bucket, each with the bucket's common leading padding cut off. Most histories of a shop are short,
        and the graph's work grows with the history length; the states are the same (to float rounding:
        the products' shapes change)."""
        B = len(histories)
        if not self.trim or B == 0:
            return self._run(["state"], np.ascontiguousarray(histories), np.zeros((B, 1), np.int64))[0]
        lengths = self.T - np.argmax(histories != 0, axis=1)
        lengths[~histories.any(axis=1)] = 1                   # an empty history: one padding position
        width = np.minimum(self.T, -(-lengths // TRIM_STEP) * TRIM_STEP)
        parts = []
        for w in np.unique(width):
            rows = np.flatnonzero(width == w)
            parts.append((rows, self._run(["state"], np.ascontiguousarray(histories[rows, self.T - w:]),
                                          np.zeros((len(rows), 1), np.int64))[0]))
        out = np.empty((B, parts[0][1].shape[1]), parts[0][1].dtype)
        for rows, got in parts:
            out[rows] = got
        return out

    def score_many(self, histories: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(B, T) model item ids, (B, C) model item ids -> (B, C) scores."""
        if self.items is None:
            return self._run(["scores"], histories, candidates)[0]
        if histories.dtype != np.int64 or candidates.dtype != np.int64:
            raise ModelError(f"transformer {self.version}: ids must be int64, got {histories.dtype}, "
                             f"{candidates.dtype}")
        return np.einsum("bcd,bd->bc", self.items[candidates], self.states(histories))

    def score_pool(self, histories: np.ndarray, pool: np.ndarray, pool_items: np.ndarray | None = None) -> np.ndarray:
        """(B, T) histories against one pool of P model ids -> (B, P): one matrix product with the state
        path (`pool_items`, the pool's rows of `items`, may be passed in precomputed)."""
        if self.items is None:
            return self.score_many(histories, np.broadcast_to(pool, (len(histories), len(pool))).copy())
        table = self.items[pool] if pool_items is None else pool_items
        return self.states(histories) @ table.T

    def encode_history(self, recent_newest_first: list[str]) -> np.ndarray:
        ids = [self.index[i] for i in reversed(recent_newest_first) if i in self.index][-self.T:]
        row = np.zeros(self.T, dtype=np.int64)
        if ids:
            row[-len(ids):] = ids
        return row

    def borrow_neighbours(self, items, content) -> None:
        """Items the model never saw (new ones) borrow its score for their nearest known item in content
        space (cosine >= 0.6; `content` is a `ContentIndex`): the transformer and the content path
        cooperate. Each unknown item is looked up once."""
        unknown = [i for i in items if i not in self.index and i not in self.proxy and content.vector(i) is not None]
        if not unknown:
            return
        idx, size = self._known
        if idx is None or len(content) > size * 1.1:
            known = [i for i in content.ids if i in self.index]
            idx = ContentIndex(content.dim, max(1, len(known)))
            if known:
                idx.add(known, np.stack([content.vector(i) for i in known]))
            self._known = (idx, len(content))
        hits = idx.search(np.stack([content.vector(i) for i in unknown]), 1)
        for item, h in zip(unknown, hits):
            self.proxy[item] = self.index[h[0][0]] if h and h[0][1] >= 0.6 else 0

    def predict(self, batch: CandidateBatch) -> list[np.ndarray]:
        """Per user, the model's score of each candidate; NaN where it knows neither the item nor a
        neighbour."""
        out: list[np.ndarray] = []
        n = len(batch.users)
        for start in range(0, n, self.max_batch):
            stop = min(n, start + self.max_batch)
            width = max([len(c) for c in batch.items[start:stop]] + [1])
            seq = np.stack([self.encode_history(h) for h in batch.histories[start:stop]])
            cand = np.zeros((stop - start, width), dtype=np.int64)
            for r, items in enumerate(batch.items[start:stop]):
                cand[r, : len(items)] = [self.index.get(i) or self.proxy.get(i, 0) for i in items]
            scores = self.score_many(seq, cand).astype(np.float64)
            scores[cand == 0] = np.nan      # unknown to the model (or padding): no opinion
            out.extend(scores[r, : len(items)] for r, items in enumerate(batch.items[start:stop]))
        return out


class ModelRetrieval:
    """Candidate source "model": the transformer's own top-n over a pool of the items it knows
    (the whole vocabulary up to `pool` items, else the first `pool`: the training vocabulary is
    ordered, so configure the pool for very large catalogues). One run per 256 users."""

    name = "model"

    def __init__(self, scorer: OnnxScorer, n: int = 50, pool: int = 5000):
        self.scorer, self.n = scorer, n
        ids = sorted(scorer.index.values())[:pool]
        self.pool_ids = np.array(ids, dtype=np.int64)
        inv = {i: item for item, i in scorer.index.items()}
        self.pool_items = [inv[i] for i in ids]
        self.pool_pos = {item: j for j, item in enumerate(self.pool_items)}
        self.pool_table = None if scorer.items is None else np.ascontiguousarray(scorer.items[self.pool_ids])

    def plan(self, ctx, pipe):
        users = list(ctx.snapshots)
        hs = [ctx.snapshots[u].recent for u in users]
        for start in range(0, len(users), self.scorer.max_batch):
            chunk = users[start: start + self.scorer.max_batch]
            seq = np.stack([self.scorer.encode_history(h) for h in hs[start: start + len(chunk)]])
            if not seq.any():
                continue
            scores = self.scorer.score_pool(seq, self.pool_ids, self.pool_table)
            for r, uid in enumerate(chunk):
                ex = ctx.exclude.get(uid)
                if ex:
                    idx = [self.pool_pos[i] for i in ex if i in self.pool_pos]
                    scores[r, idx] = -np.inf
            n = min(self.n, scores.shape[1])      # the top n of the pool, then only those sorted
            part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
            top = np.take_along_axis(part, np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable"), 1)
            for r, uid in enumerate(chunk):
                if not seq[r].any():
                    continue
                items = self.pool_items
                ctx.add_all(uid, self.name, [(items[j], 1.0 / (1.0 + rank)) for rank, j in enumerate(top[r].tolist())])
        return lambda replies: None


def model_sources(scorer: OnnxScorer) -> list:
    """The candidate sources a registered model version brings: the transformer's own top items ("model")
    and, when the version has one, the item linear model's ("linear")."""
    return [ModelRetrieval(scorer)] + ([LinearRetrieval(scorer.linear)] if scorer.linear is not None else [])


class BlendedScorer:
    """fallback + weight x (transformer score standardised over the user's candidates it knows)."""

    name = "blend"
    ranker = None
    needs_item_stats = False

    def __init__(self, transformer: OnnxScorer, fallback: FallbackScorer | None = None, weight: float = 1.0):
        self.transformer, self.fallback, self.weight = transformer, fallback or FallbackScorer(), weight
        self.version = f"{self.fallback.version}+{transformer.version}"

    def score(self, batch: CandidateBatch) -> Scored:
        fb = self.fallback.score(batch).final
        tr = self.transformer.predict(batch)
        final = [f + self.weight * standardised(t) for f, t in zip(fb, tr)]   # the weight: learned (`blendweight.py`)
        return Scored(final, {"fallback": fb, "transformer": tr, self.name: final})


def load_promoted(registry_root: str | Path, name: str = "seqrec") -> BlendedScorer | None:
    reg = Registry(registry_root, name)
    version = reg.promoted()
    return BlendedScorer(OnnxScorer(reg.path(version))) if version else None


class ModelWatcher:
    """Between batches: if the registry's PROMOTED pointer changed, load that version and swap it in.
    The swap happens between two batches, so no event is dropped or processed twice; every
    recommendation names the scorer version that scored it."""

    def __init__(self, registry_root: str | Path, pipeline, interval_s: float = 2.0, name: str = "seqrec"):
        self.reg, self.pipeline, self.interval_s = Registry(registry_root, name), pipeline, interval_s
        self._clock = time.monotonic
        self._next = 0.0
        self.current = None

    def __call__(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.interval_s
        version = self.reg.promoted()
        if version and version != self.current:
            try:
                scorer = BlendedScorer(OnnxScorer(self.reg.path(version)))
            except Exception as exc:  # noqa: BLE001 - a bad model must not stop serving
                log.error("model %s could not be loaded, keeping %s: %s", version, self.current, exc)
                self.current = version
                return
            self.pipeline.set_scorer(scorer)
            log.info("scorer swapped: %s -> %s", self.current or "fallback", version)
            self.current = version
