"""Content embeddings at serving time: onnxruntime + the `tokenizers` library (no torch).

- `ContentEncoder`: an exported sentence encoder (exporters/encoder.py) -> L2-normalised vectors.
- `ContentIndex`: exact nearest neighbours in process (one float32 matrix, cosine = dot product).
  Cost: 384 floats per item, 1.5 KB; 100k items = 154 MB and one query is a 100k x 384 mat-vec
  (a few ms on one core); 1M items = 1.5 GB and ~10x that per query, which is where an HNSW index
  should replace it (see docs/models.md, Content). A batch of users is one matrix product.
- `ContentStore`: the catalog path: item upserts are embedded in batches, stored in Redis
  (`{P}emb` hash: item -> float32 bytes, so a restarted worker reloads them without re-encoding)
  and added to the index at once: a new item is recommendable from the next batch on.
- `ContentSimilar`: candidate source "content": items near what the user recently touched
  (recency-weighted mean of their embeddings) or, with no history, near their search query.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import orjson

from stream.core.onnxrt import open_session

log = logging.getLogger("recstream.content")


class ContentEncoder:
    def __init__(self, model_dir: str | Path, max_batch: int = 64, providers: list[str] | None = None):
        from tokenizers import Tokenizer

        d = Path(model_dir)
        self.manifest = orjson.loads((d / "manifest.json").read_bytes())
        self.dim = int(self.manifest["dim"])
        self.max_len = int(self.manifest.get("max_len", 128))
        self.tok = Tokenizer.from_file(str(d / "tokenizer.json"))
        self.tok.enable_truncation(self.max_len)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self.session, _ = open_session(d / "model.onnx", providers)
        self.provider = self.session.get_providers()[0]
        log.info("text encoder %s on %s", self.manifest.get("source"), self.provider)
        self.max_batch = max_batch
        self.version = f"{self.manifest.get('source', 'encoder')}-onnx"

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # similar lengths together: less padding per run
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.max_batch):
            idx = order[start: start + self.max_batch]
            enc = self.tok.encode_batch([texts[i] or " " for i in idx])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            out[idx] = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        return out


class ContentIndex:
    """Exact cosine nearest neighbours over normalised vectors; upserts in place."""

    def __init__(self, dim: int, capacity: int = 1024):
        self.dim = dim
        self.mat = np.zeros((capacity, dim), dtype=np.float32)
        self.ids: list[str] = []
        self.row: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, ids: list[str], vecs: np.ndarray) -> None:
        for item, v in zip(ids, vecs):
            r = self.row.get(item)
            if r is None:
                r = len(self.ids)
                if r >= len(self.mat):
                    self.mat = np.concatenate([self.mat, np.zeros_like(self.mat)])
                self.ids.append(item)
                self.row[item] = r
            self.mat[r] = v

    def vector(self, item: str) -> np.ndarray | None:
        r = self.row.get(item)
        return None if r is None else self.mat[r]

    def search(self, queries: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
        """(q, dim) normalised queries -> per query the n most similar (item, cosine), best first."""
        size = len(self.ids)
        if size == 0 or len(queries) == 0:
            return [[] for _ in range(len(queries))]
        sims = queries.astype(np.float32) @ self.mat[:size].T
        n = min(n, size)
        neg = np.negative(sims, out=sims)                   # in place: the product is not needed twice
        top = np.argpartition(neg, n - 1, axis=1)[:, :n]
        part = np.take_along_axis(neg, top, axis=1)
        order = np.argsort(part, axis=1, kind="stable")      # each row's top n, best first
        top, best = np.take_along_axis(top, order, axis=1).tolist(), (-np.take_along_axis(part, order, axis=1)).tolist()
        ids = self.ids
        return [[(ids[j], s) for j, s in zip(t, v)] for t, v in zip(top, best)]


class ContentStore:
    """Item texts -> embeddings, in Redis and in the in-process index."""

    def __init__(self, client, prefix: str, encoder: ContentEncoder):
        self.client, self.prefix, self.encoder = client, prefix, encoder
        self.key = f"{prefix}emb"
        self.index = ContentIndex(encoder.dim)
        self._query_cache: dict[str, np.ndarray] = {}

    def load(self) -> int:
        """Everything embedded earlier (by any worker): HSCAN, no re-encoding."""
        ids, vecs = [], []
        for item, raw in self.client.hscan_iter(self.key, count=5000):
            ids.append(item.decode())
            vecs.append(np.frombuffer(raw, dtype=np.float32))
        if ids:
            self.index.add(ids, np.stack(vecs))
        log.info("content index: %d item embeddings loaded from %s", len(ids), self.key)
        return len(ids)

    def upsert(self, items) -> int:
        """Embed the items' text (title, category, brand) in batches; store and index them."""
        items = [it for it in items if it.text]
        if not items:
            return 0
        vecs = self.encoder.encode([it.text for it in items])
        pipe = self.client.pipeline(transaction=False)
        for it, v in zip(items, vecs):
            pipe.hset(self.key, it.item_id, v.astype(np.float32).tobytes())
        pipe.execute()
        self.index.add([it.item_id for it in items], vecs)
        return len(items)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self._query_cache]
        if missing:
            if len(self._query_cache) > 50_000:
                self._query_cache.clear()
            for t, v in zip(missing, self.encoder.encode(missing)):
                self._query_cache[t] = v
        return np.stack([self._query_cache[t] for t in texts]) if texts else np.zeros((0, self.encoder.dim))


class ContentSimilar:
    """Candidate source "content": per user, a query vector from their recent items (newest weighs most)
    or, with no embedded history, from their last search query; its n nearest items, scored by
    cosine. One matrix product per batch."""

    name = "content"

    def __init__(self, store: ContentStore, n: int = 30, history: int = 5):
        self.store, self.n, self.history = store, n, history

    def user_vectors(self, snapshots: dict) -> tuple[list[str], np.ndarray]:
        """The users with a query vector and their vectors, in snapshot order (then those with only a
        search query). A user's vector is what `np.average` of their embedded recent items (weights 0.7 **
        rank) over its norm gives, computed for the whole batch at once: an absent item adds an exact 0
        in its place, so every sum is the per-user one, bit for bit."""
        index, k = self.store.index, self.history
        get, uids = index.row.get, list(snapshots)
        R = np.full((len(uids), k), -1, np.int64)
        for u, uid in enumerate(uids):
            for rank, item in enumerate(snapshots[uid].recent[:k]):
                r = get(item)
                if r is not None:
                    R[u, rank] = r
        found = R >= 0
        has = found.any(axis=1)
        users = [uid for uid, h in zip(uids, has) if h]
        rows = np.zeros((0, index.dim))
        if users:
            W = np.where(found[has], np.array([0.7 ** r for r in range(k)]), 0.0)      # (U, k)
            V = index.mat[np.where(found[has], R[has], 0)]                                 # (U, k, dim)
            V[~found[has]] = 0.0
            avg = np.multiply(V, W[:, :, None], dtype=np.float64).sum(axis=1) / W.sum(axis=1)[:, None]
            norms = np.sqrt(np.array([q.dot(q) for q in avg]))         # np.linalg.norm of each, exactly
            rows = avg / np.where(norms > 0, norms, 1.0)[:, None]
        queries = [(uid, snapshots[uid].query) for uid, h in zip(uids, has) if not h and snapshots[uid].query]
        if queries:
            qv = self.store.embed_queries([q for _, q in queries])
            users += [u for u, _ in queries]
            rows = np.concatenate([rows, qv.astype(np.float64)]) if len(rows) else qv
        if not users:
            return [], np.zeros((0, self.store.encoder.dim), dtype=np.float32)
        return users, rows

    def plan(self, ctx, pipe):
        users, vecs = self.user_vectors(ctx.snapshots)
        ctx.vectors = dict(zip(users, vecs))       # the ranker's content-similarity feature reuses them
        for uid, hits in zip(users, self.store.index.search(vecs, self.n + self.history)):
            ex = ctx.exclude.get(uid, ())
            recent = set(ctx.snapshots[uid].recent[: self.history])
            ctx.add_all(uid, self.name, [(item, max(0.0, sim)) for item, sim in hits
                                         if item not in ex and item not in recent])
        return lambda replies: None
