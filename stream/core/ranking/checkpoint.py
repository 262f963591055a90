"""The online ranker's state in Redis.

Persistence: `RankerCheckpoint` stores the river model in Redis (pickled, with a format tag, the
feature list, a SHA-256 of the payload and a version counter); a checkpoint that fails any check is
rejected with a log line and the ranker starts from scratch. Several workers: one model per
worker, each seeded at start from the group's newest checkpoint and writing it back (last writer
wins). The ranker learns population-level weights over its features (`FEATURE_NAMES`), not per-user state, and key
partitioning gives each worker an unbiased sample of users, so the workers' models converge to the
same place; averaging would add coordination for little gain, and losing a checkpoint interval of
one worker's learning costs little.
"""
from __future__ import annotations

import hashlib
import logging
import time

from stream.core.ranking.ranker import OnlineRanker
from stream.core.scoring.features import FEATURE_NAMES

log = logging.getLogger("recstream.ranker")

CHECKPOINT_FORMAT = "recstream-ranker/1"


class RankerCheckpoint:
    """The ranker's state in Redis under `{prefix}ranker:{group}:{model}` (a hash)."""

    def __init__(self, client, prefix: str, group: str, model: str):
        self.client = client
        self.key = f"{prefix}ranker:{group}:{model}"

    def save(self, ranker: OnlineRanker) -> int:
        payload = ranker.state()
        version = int(self.client.hincrby(self.key, "version", 1))
        self.client.hset(self.key, mapping={
            "format": CHECKPOINT_FORMAT, "features": ",".join(FEATURE_NAMES), "model": ranker.cfg.model,
            "n_learned": ranker.n_learned, "saved_at": int(time.time() * 1000),
            "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload})
        log.info("ranker checkpoint v%d saved to %s (%d examples learned, %d bytes)", version, self.key,
                 ranker.n_learned, len(payload))
        return version

    def restore(self, ranker: OnlineRanker) -> bool:
        """Load the newest checkpoint into `ranker`; False (and a log line) if there is none or it is bad."""
        h = self.client.hgetall(self.key)
        if not h:
            log.info("no ranker checkpoint at %s: starting from scratch", self.key)
            return False
        try:
            fmt = h.get(b"format", b"").decode()
            if fmt != CHECKPOINT_FORMAT:
                raise ValueError(f"format {fmt!r}, expected {CHECKPOINT_FORMAT!r}")
            if h.get(b"features", b"").decode() != ",".join(FEATURE_NAMES):
                raise ValueError("it was trained on another feature list")
            payload = h.get(b"payload", b"")
            if hashlib.sha256(payload).hexdigest() != h.get(b"sha256", b"").decode():
                raise ValueError("payload checksum mismatch (corrupted)")
            ranker.load_state(payload)
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint must never stop the worker
            log.error("ranker checkpoint %s v%s rejected: %s; starting the ranker from scratch", self.key,
                      h.get(b"version", b"?").decode(), exc)
            ranker.reset()
            return False
        log.info("ranker restored from %s v%s (%d examples learned)", self.key, h[b"version"].decode(),
                 ranker.n_learned)
        return True


class RankerKeeper:
    """The worker's side of persistence: restore at start, save every `every_s` seconds (from the
    thread that trains the ranker, between two batches) and at shutdown."""

    def __init__(self, ranker: OnlineRanker, checkpoint: RankerCheckpoint, every_s: float = 30.0):
        self.ranker, self.checkpoint, self.every_s = ranker, checkpoint, every_s
        self._next = time.monotonic() + every_s
        self._saved_at = -1

    def restore(self) -> bool:
        ok = self.checkpoint.restore(self.ranker)
        self._saved_at = self.ranker.n_learned
        return ok

    def maybe_save(self, _result=None) -> None:
        if time.monotonic() >= self._next:
            self._next = time.monotonic() + self.every_s
            if self.ranker.n_learned != self._saved_at:
                self.save()

    def save(self) -> None:
        self.checkpoint.save(self.ranker)
        self._saved_at = self.ranker.n_learned


class Keepers:
    """Several keepers as one, with RankerKeeper's interface: the deployment's ranker and an
    experiment's variant rankers, each under its own checkpoint key."""

    def __init__(self, keepers: list[RankerKeeper]):
        self.keepers = keepers

    def restore(self) -> bool:
        return all([k.restore() for k in self.keepers])

    def maybe_save(self, result=None) -> None:
        for k in self.keepers:
            k.maybe_save(result)

    def save(self) -> None:
        for k in self.keepers:
            k.save()
