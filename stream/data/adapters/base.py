"""What every input adapter provides."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Iterator

from schemas import Rejected


class LogSource:
    """A log file (or folder) readable as Event dicts and, where it has them, Item dicts."""

    name = "log"

    def __init__(self, path: str | Path):
        self.path = Path(path) if str(path) != "-" else Path("-")
        if str(path) != "-" and not self.path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        raise NotImplementedError

    def items(self) -> Iterator[dict]:
        return iter(())

    def _open_bytes(self, path: Path | None = None) -> IO[bytes]:
        path = path or self.path
        if str(path) == "-":
            return sys.stdin.buffer
        if str(path).endswith(".gz"):
            import gzip
            return gzip.open(path, "rb")
        return open(path, "rb")


def ms(ts_seconds: float) -> int:
    return int(round(ts_seconds * 1000))
