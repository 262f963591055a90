"""recstream's own formats: Event v1 as JSON lines, or as CSV with Event field names in the header."""
from __future__ import annotations

import csv
import io
from typing import Iterator

import orjson

from schemas import Rejected
from stream.data.adapters.base import LogSource

_NUMERIC = {"ts": int, "price": float, "quantity": int}


class JsonlEventLog(LogSource):
    """Lines are passed on as raw bytes, so the validator sees exactly what was in the file."""

    name = "jsonl"

    def raw_lines(self) -> Iterator[tuple[int, bytes]]:
        with self._open_bytes() as fh:
            for n, raw in enumerate(fh, 1):
                raw = raw.rstrip(b"\r\n")
                if raw.strip():
                    yield n, raw

    def events(self) -> Iterator[tuple[int, dict | bytes | Rejected]]:
        for n, raw in self.raw_lines():
            yield n, raw


class CsvEventLog(LogSource):
    name = "csv"

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        with self._open_bytes() as fh:
            reader = csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", errors="strict"))
            n = 1
            try:
                for n, row in enumerate(reader, 2):
                    ev: dict = {}
                    bad = None
                    for k, v in row.items():
                        if k is None or v in (None, ""):
                            continue
                        if k in _NUMERIC:
                            try:
                                v = _NUMERIC[k](v)
                            except ValueError:
                                bad = f"{k}: expected {_NUMERIC[k].__name__}, got {v!r}"
                                break
                        elif k == "context":
                            try:
                                v = orjson.loads(v)
                            except orjson.JSONDecodeError:
                                bad = "context: expected a JSON object"
                                break
                        ev[k] = v
                    yield n, Rejected(bad) if bad else ev
            except UnicodeDecodeError as exc:
                yield n + 1, Rejected(f"message: invalid UTF-8 at byte {exc.start}")
