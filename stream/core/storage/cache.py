"""The worker's copies of its users' profiles: the per-user update computed here, Redis only storing it.

A user's profile lives in Redis as one MessagePack value under a version (the hash U: fields `v` and `b`)
beside the user's seen set (U:seen, the idempotency guard). The worker keeps the profiles of the users it
served lately (least recently used out first), each with the version it read or wrote; a batch's update
is `update.apply_user` on that copy (the former Lua script's logic, exactly), and `lua/profile_put.lua`
writes the result only if the version is still the one the copy came from. A user another worker wrote
meanwhile (a rebalance, a restart) is read again and computed again: the effect is the script's
read-compute-write in one step, with the computing out of Redis (measured: Redis CPU per event of the
whole pipeline 0.63x of the script's, 0.41x of the code #14 was filed against; docs/worker.md).
"""
from __future__ import annotations

import secrets
from collections import OrderedDict

import redis

from stream.core.storage import update
from stream.core.storage.rawpipe import pipeline
from stream.core.storage.store import Script

ATTEMPTS = 5


class VersionConflicts(redis.exceptions.TryAgainError):
    """Other writers kept changing these users' profiles: a transient failure (`stream.errors.TRANSIENT_REDIS`),
    which the worker retries with backoff."""


class ProfileCache:
    """At most `size` users and `max_ids` seen event ids in all, least recently used out first: a user at the
    seen cap holds 2,000 ids, about 400 KiB of Python objects (measured with tracemalloc), so the ids, not the
    users, bound a long-running worker's memory (1,000,000 ids: about 200 MB)."""

    def __init__(self, client, size: int = 100_000, max_ids: int = 1_000_000):
        self.client, self.size, self.max_ids = client, size, max_ids
        # key -> (copy, version, the seen ids it held when put)
        self.held: OrderedDict[str, tuple[update.UserState, str, int]] = OrderedDict()
        self.ids = 0                                    # seen ids held, in all
        self._put = Script(client, "profile_put")

    def forget_all(self) -> None:
        """Drop every copy (the store they came from is gone)."""
        self.held.clear()
        self.ids = 0

    def _hold(self, key: str, st: update.UserState, version: str) -> None:
        self.held[key] = st, version, len(st.seen)                     # the newest at the end
        self.ids += len(st.seen)

    def _drop(self, key: str) -> update.UserState | None:
        got = self.held.pop(key, None)
        if got is None:
            return None
        self.ids -= got[2]
        return got[0]

    def _evict(self) -> None:
        while self.held and (len(self.held) > self.size or self.ids > self.max_ids):
            self.ids -= self.held.popitem(last=False)[1][2]

    def queue_loads(self, pipe, user_keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Queue on `pipe` the reads of the profiles not held (two replies each); the (U, U:seen) queued."""
        missing = list({u: (u, seen) for u, seen in user_keys if u not in self.held}.values())
        for u, seen in missing:
            pipe.execute_command("HMGET", u, "v", "b")
            pipe.execute_command("ZRANGE", seen, 0, -1, "WITHSCORES")
        return missing

    def loaded(self, missing: list[tuple[str, str]], got: list) -> None:
        for i, (u, _) in enumerate(missing):
            (v, blob), seen = got[2 * i], got[2 * i + 1]
            # the profile and its seen ids are written together: ids without a profile are a store of the
            # former layout's (before the profile was one value), whose events a rebuild applies again
            self._drop(u)
            self._hold(u, update.decode(blob, score_pairs(seen) if blob else None), (v or b"0").decode())

    def _load(self, calls: list) -> None:
        """Read the profiles of the calls' users that are not held (one round-trip; none when the caller
        queued them on its own read, `queue_loads`)."""
        pipe = pipeline(self.client)
        missing = self.queue_loads(pipe, [keys for keys, _ in calls])
        if missing:
            self.loaded(missing, pipe.execute())

    def apply(self, calls: list[tuple[tuple[str, str], list]], seen_cap: int) -> tuple[list, list]:
        """Each ((U, U:seen), the former script's arguments) applied and written: the replies, in order (the
        script's form), and the profiles they came from, in the same order (a snapshot reads the affinities
        there as numbers instead of parsing the reply's texts)."""
        replies: list = [None] * len(calls)
        states: list = [None] * len(calls)
        todo = list(range(len(calls)))
        for _ in range(ATTEMPTS):
            self._load([calls[i] for i in todo])
            try:
                versions = {calls[i][0][0]: secrets.token_hex(8) for i in todo}
                done = self._compute_and_put(calls, todo, replies, states, seen_cap, versions)
            except BaseException:
                for i in todo:                        # computed but maybe not written: read them again next time
                    self._drop(calls[i][0][0])
                raise
            conflicts = []
            for i, ok in zip(todo, done):
                key = calls[i][0][0]
                st = self._drop(key)
                if ok:
                    self._hold(key, st, versions[key])
                else:
                    conflicts.append(i)                               # read again, computed again
            self._evict()
            if not conflicts:
                return replies, states
            todo = conflicts
        raise VersionConflicts(f"{len(todo)} profiles kept changing under this worker ({ATTEMPTS} attempts)")

    def _compute_and_put(self, calls: list, todo: list[int], replies: list, states: list, seen_cap: int,
                         versions: dict) -> list:
        writes = []
        for i in todo:
            keys, args = calls[i]
            st, version, _ = self.held[keys[0]]
            card = len(st.seen)
            replies[i], fresh = update.apply_user(st, args)
            states[i] = st
            drop = max(0, card + len(fresh) - seen_cap)
            adds = [x for eid, ts in fresh.items() for x in (ts, eid)]
            writes.append((list(keys), [version, versions[keys[0]], update.encode(st), drop, *adds]))
        return self._put.execute(writes)


def score_pairs(reply: list) -> list[tuple[bytes, float]]:
    """A ZRANGE ... WITHSCORES reply, flat (RESP2: member, score, ...) or paired (RESP3), as (member, score)."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, float(s)) for m, s in reply]
    return list(zip(reply[::2], map(float, reply[1::2])))
