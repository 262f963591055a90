"""The base order's learned transformer weight (`blendweight.py`) in Redis, per model version.

Under `{prefix}blend:{group}:{version}` (a hash): the format tag, the weight in service, the judgements
in the window (float64 bytes), the moves, a SHA-256 of the judgements and when it was saved. A worker
saves its state every `every_s` seconds and at shutdown (`BlendKeeper`, the ranker keeper's interface),
and resumes from it when it adopts the same model version (a restart; `adopt(..., stored=...)`), so it
does not spend another few hundred events relearning what it knew. Several workers: last writer wins,
as for the ranker (they judge unbiased samples of users, so they agree). The API serves fresh asks with the
weight the workers learned for the version it serves (`BlendFollower`): it sees no next events to learn
from. A state that fails a check is ignored with a log line (the weight then starts from the scorer's).
A key lives 30 days after its last save: versions no longer served go by themselves.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import time

import numpy as np
import orjson

from stream.core.scoring.blendweight import BlendWeight
from stream.core.storage.store import key_part

log = logging.getLogger("recstream.blend")

FORMAT = "recstream-blend/1"
TTL_S = 30 * 86400


class BlendStore:
    """One deployment's (consumer group's) blend states."""

    def __init__(self, client, prefix: str, group: str):
        self.client, self.base = client, f"{prefix}blend:{key_part(group)}:"

    def key(self, version: str) -> str:
        return self.base + key_part(version)

    def save(self, blend: BlendWeight) -> None:
        st = blend.state()
        judged = st.pop("judged")
        raw = judged.astype("<f8").tobytes()
        key = self.key(blend.version)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(key, mapping={"format": FORMAT, "weight": repr(blend.weight), "state": orjson.dumps(st),
                                "judged": raw, "sha256": hashlib.sha256(raw).hexdigest(),
                                "saved_at": int(time.time() * 1000)})
        pipe.expire(key, TTL_S)
        pipe.execute()

    def restore(self, blend: BlendWeight) -> bool:
        """Resume `blend` from the state saved for its version; False (and a log line for a bad state, which
        leaves `blend` as it was) if there is none or it fails a check."""
        h = self.client.hgetall(self.key(blend.version))
        if not h:
            return False
        version = blend.version
        try:
            if h.get(b"format", b"").decode() != FORMAT:
                raise ValueError(f"format {h.get(b'format', b'')!r}, expected {FORMAT!r}")
            raw = h[b"judged"]
            if hashlib.sha256(raw).hexdigest() != h.get(b"sha256", b"").decode():
                raise ValueError("judgements checksum mismatch (corrupted)")
            st = orjson.loads(h[b"state"])
            st["judged"] = np.frombuffer(raw, "<f8").reshape(-1, len(st["weights"]))
            if st["version"] != version:
                raise ValueError(f"it is {st['version']!r}'s state")
            copy.deepcopy(blend).load_state(st)      # checked on a copy first: a bad state changes nothing
        except Exception as exc:  # noqa: BLE001 - a bad state must never stop serving
            log.error("blend state %s rejected: %s; the weight starts from the scorer's", self.key(version), exc)
            return False
        blend.load_state(st)
        return True

    def weight(self, version: str) -> float | None:
        """The weight the workers serve `version` with (None: nothing saved)."""
        w = self.client.hget(self.key(version), "weight")
        return float(w) if w is not None else None


class BlendKeeper:
    """The worker's side: `pipeline.blend_store` makes a swapped-in model resume from its saved state; this
    saves the state every `every_s` seconds (between batches) and at shutdown. RankerKeeper's interface."""

    def __init__(self, pipeline, store: BlendStore, every_s: float = 30.0):
        self.pipeline, self.store, self.every_s = pipeline, store, every_s
        pipeline.blend_store = store
        self._next = time.monotonic() + every_s
        self._saved = None

    def restore(self) -> bool:          # restoring happens when the model is adopted (`adopt`)
        return True

    def maybe_save(self, _result=None) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            self.save()

    def save(self) -> None:
        blend = self.pipeline.blend
        if blend is None or (blend.version, blend.n_judged) == self._saved:
            return
        self.store.save(blend)
        self._saved = (blend.version, blend.n_judged)
        log.info("blend state of %s saved: weight %s after %d judgements", blend.version, blend.weight, blend.n_judged)


class BlendFollower:
    """The API's side, called before fresh asks: at most every `every_s` seconds, the weight the workers
    saved for the version this pipeline serves becomes the base scorer's."""

    def __init__(self, pipeline, store: BlendStore, every_s: float = 5.0):
        self.pipeline, self.store, self.every_s = pipeline, store, every_s
        self._next = 0.0

    def __call__(self) -> None:
        scorer = self.pipeline.base_scorer
        if getattr(scorer, "weight", None) is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.every_s
        w = self.store.weight(scorer.version)
        if w is not None and w != scorer.weight:
            log.info("fresh asks follow the workers' blend weight for %s: %s -> %s", scorer.version, scorer.weight, w)
            scorer.weight = w
