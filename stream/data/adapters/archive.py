"""recstream's event archive (stream/data/archive.py) as a log: `--format archive` for `recstream replay`,
`train` and `backtest`. Each (user, event id) once, in event-time order."""
from __future__ import annotations

from typing import Iterator

from schemas import Rejected
from stream.data.adapters.base import LogSource
from stream.data.archive import read_archive


class ArchiveLog(LogSource):
    name = "archive"

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        for n, ev in enumerate(read_archive(self.path), 1):
            yield n, ev.to_dict()
