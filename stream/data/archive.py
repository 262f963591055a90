"""The event archive: accepted events kept as date-partitioned Parquet, the history a retrain reads.

    artifacts/archive/date=2026-12-03/part-1764720000000-3f2a9c1b.parquet
    artifacts/archive/date=2026-12-04/...

A partition per UTC day of event time; a file per flush and day, named by its first event time and a
digest of its (user, event id) pairs, written to a temp name and renamed, so a reader never sees half a
file and a flush repeated after a crash (the same events redelivered) rewrites the same file. Readers
keep the first occurrence of each (user, event id): an overlapping redelivery is read once. Retention
is by event time: days older than the newest day minus `retention_days` are deleted after each flush
(a replay of an old log is pruned the same way as live traffic).

    >>> import tempfile
    >>> from schemas import Event
    >>> root = tempfile.mkdtemp()
    >>> w = ArchiveWriter(root)
    >>> w.add([Event("e1", "u1", "i1", "view", 1764720000000), Event("e2", "u1", "i2", "cart", 1764720001000)])
    >>> w.flush()
    2
    >>> w.add([Event("e2", "u1", "i2", "cart", 1764720001000)])     # redelivered: read once
    >>> w.flush()
    1
    >>> [(e.event_id, e.type) for e in read_archive(root)]
    [('e1', 'view'), ('e2', 'cart')]
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

import orjson

from schemas import Event

DAY_MS = 86_400_000
_COLUMNS = ("event_id", "user_id", "item_id", "type", "ts", "session_id", "query", "price", "quantity", "context")


def _schema():
    import pyarrow as pa
    s, i = pa.string(), pa.int64()
    return pa.schema([("event_id", s), ("user_id", s), ("item_id", s), ("type", s), ("ts", i), ("session_id", s),
                      ("query", s), ("price", pa.float64()), ("quantity", i), ("context", s)])


def day_of(ts_ms: int) -> str:
    """The UTC day of an event time (ms), the archive's partition.

    >>> day_of(1764720000000)
    '2025-12-03'
    """
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


class ArchiveWriter:
    """Buffers accepted events and writes them as Parquet (`flush`); `due()` says when a flush is owed
    (`roll_events` buffered or `roll_s` since the last flush). Not thread-safe: one owner."""

    def __init__(self, root: str | Path, *, roll_events: int = 50_000, roll_s: float = 30.0,
                 retention_days: int = 30):
        self.root = Path(root)
        self.roll_events, self.roll_s, self.retention_days = roll_events, roll_s, retention_days
        self.buffer: list[Event] = []
        self.last_flush = time.monotonic()
        self.files_written = 0
        self.events_written = 0

    def add(self, events: Iterable[Event]) -> None:
        self.buffer.extend(events)

    def due(self) -> bool:
        return len(self.buffer) >= self.roll_events or (
            bool(self.buffer) and time.monotonic() - self.last_flush >= self.roll_s)

    def flush(self) -> int:
        """Write what is buffered (a file per day of event time); returns the events written."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        self.last_flush = time.monotonic()
        if not self.buffer:
            return 0
        by_day: dict[str, list[Event]] = defaultdict(list)
        for ev in self.buffer:
            by_day[day_of(ev.ts)].append(ev)
        for day, evs in sorted(by_day.items()):
            digest = hashlib.sha256("\n".join(f"{e.user_id}\t{e.event_id}" for e in evs).encode()).hexdigest()[:8]
            folder = self.root / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            cols = {c: [getattr(e, c) for e in evs] for c in _COLUMNS}
            cols["context"] = [orjson.dumps(c).decode() if c is not None else None for c in cols["context"]]
            table = pa.table(cols, schema=_schema())
            final = folder / f"part-{min(e.ts for e in evs)}-{digest}.parquet"
            tmp = folder / f".{final.name}.tmp"
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, final)
            self.files_written += 1
        n = len(self.buffer)
        self.events_written += n
        self.buffer = []
        self.prune()
        return n

    def prune(self) -> list[str]:
        """Delete the days older than the newest day minus `retention_days`; returns their names."""
        days = sorted(p.name for p in self.root.glob("date=*") if p.is_dir())
        if not days or self.retention_days <= 0:
            return []
        newest = datetime.strptime(days[-1][5:], "%Y-%m-%d")
        cutoff = (newest - timedelta(days=self.retention_days)).strftime("date=%Y-%m-%d")
        gone = [d for d in days if d < cutoff]
        for d in gone:
            shutil.rmtree(self.root / d, ignore_errors=True)
        return gone


def archive_files(root: str | Path, since_ts: int | None = None, until_ts: int | None = None) -> list[Path]:
    """The archive's files whose day can hold events in [since_ts, until_ts), oldest day first."""
    root = Path(root)
    lo = f"date={day_of(since_ts)}" if since_ts is not None else ""
    hi = f"date={day_of(until_ts)}" if until_ts is not None else "date=~"
    return [f for d in sorted(root.glob("date=*")) if lo <= d.name <= hi
            for f in sorted(d.glob("part-*.parquet"))]


def _rows(root, since_ts, until_ts) -> Iterator[dict]:
    import pyarrow.parquet as pq
    for f in archive_files(root, since_ts, until_ts):
        for row in pq.read_table(f).to_pylist():
            ts = row["ts"]
            if (since_ts is not None and ts < since_ts) or (until_ts is not None and ts >= until_ts):
                continue
            if row["context"] is not None:
                row["context"] = orjson.loads(row["context"])
            yield row


def read_archive(root: str | Path, since_ts: int | None = None, until_ts: int | None = None) -> list[Event]:
    """Events in [since_ts, until_ts), each (user, event id) once, in event-time order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for row in _rows(root, since_ts, until_ts):
        key = (row["user_id"], row["event_id"])
        if key not in seen:
            seen.add(key)
            out.append(Event(**row))
    out.sort(key=lambda e: e.ts)
    return out


def archive_span(root: str | Path) -> tuple[int, int, int] | None:
    """(first ts, last ts, rows) over the whole archive from the files' statistics, or None if empty."""
    import pyarrow.parquet as pq
    lo, hi, rows = None, None, 0
    for f in archive_files(root):
        md = pq.ParquetFile(f).metadata
        rows += md.num_rows
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(_COLUMNS.index("ts")).statistics
            if st is not None and st.has_min_max:
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
    return None if lo is None else (lo, hi, rows)

