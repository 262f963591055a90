"""From an event log to training data: a global time split, an item vocabulary, sequences.

Everything is keyed on event time: the model is trained on events before the split time and
evaluated on the events after it (no look-ahead).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from schemas import Rejected, validate_event


@dataclass(frozen=True)
class Interaction:
    user: str
    item: str
    ts: int


def load_interactions(records, limit: int | None = None) -> list[Interaction]:
    """Valid events with an item from `(position, record)` pairs (a log adapter's `events()`), sorted
    by event time (stable: file order breaks ties)."""
    out = []
    for _, rec in records:
        ev = rec if isinstance(rec, Rejected) else validate_event(rec)
        if isinstance(ev, Rejected) or ev.item_id is None:
            continue
        out.append(Interaction(ev.user_id, ev.item_id, ev.ts))
        if limit and len(out) >= limit:
            break
    out.sort(key=lambda x: x.ts)
    return out


def split_time(events: list[Interaction], test_frac: float) -> int:
    """The event time at which the last `test_frac` of events begins."""
    return events[int(len(events) * (1 - test_frac))].ts


class Vocab:
    """External item id <-> model index; 0 is padding, so indexes start at 1."""

    def __init__(self, items: list[str]):
        self.items = ["<pad>"] + list(items)
        self.index = {it: i for i, it in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def encode(self, items: list[str]) -> list[int]:
        return [self.index[i] for i in items if i in self.index]


def train_vocab(train: list[Interaction]) -> Vocab:
    seen = dict.fromkeys(x.item for x in train)
    return Vocab(sorted(seen, key=lambda s: (len(s), s)))


def user_sequences(events: list[Interaction]) -> dict[str, list[Interaction]]:
    seqs = defaultdict(list)
    for x in events:
        seqs[x.user].append(x)
    return seqs


def left_pad(ids: list[int], T: int) -> list[int]:
    ids = ids[-T:]
    return [0] * (T - len(ids)) + ids


def training_windows(seqs: list[list[int]], T: int, stride: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Next-item windows: inputs (N, T) and targets (N, T), both left-padded. Long sequences are cut
    into windows of T+1 ending at the last item; with `stride`, a window also ends every `stride` items
    before that (overlapping windows: each item is predicted from several context lengths), else the
    windows tile the sequence and every next item is a target exactly once."""
    xs, ys = [], []
    step = stride or T
    for s in seqs:
        if len(s) < 2:
            continue
        end = len(s)
        while end > 1:
            start = max(0, end - T - 1)
            w = s[start:end]
            xs.append(left_pad(w[:-1], T))
            ys.append(left_pad(w[1:], T))
            end = end - step if start > 0 else 0
    return np.array(xs, dtype=np.int64), np.array(ys, dtype=np.int64)
