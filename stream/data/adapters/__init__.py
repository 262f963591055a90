"""Input adapters: real click logs -> `Event` v1 dicts (and `Item` v1 dicts where the log has item data).

Every adapter yields `(line_no, record)` where record is an Event dict or a `Rejected` naming
why that line could not be mapped; nothing is silently dropped. The mapping of each format is
written in its module docstring and in docs/data.md.

    from stream.data.adapters import open_log
    for line_no, rec in open_log("../shared/data/movielens-100k", "movielens").events():
        ...
"""
from __future__ import annotations

from pathlib import Path

from stream.data.adapters.archive import ArchiveLog
from stream.data.adapters.base import LogSource
from stream.data.adapters.delimited import ColumnMapping, DelimitedLog
from stream.data.adapters.jsonl import CsvEventLog, JsonlEventLog
from stream.data.adapters.movielens import MovieLensLog
from stream.data.adapters.otto import OttoLog
from stream.data.adapters.rees46 import Rees46Log
from stream.data.adapters.taobao import TaobaoLog

FORMATS = {
    "jsonl": JsonlEventLog,
    "csv": CsvEventLog,
    "taobao": TaobaoLog,
    "rees46": Rees46Log,
    "movielens": MovieLensLog,
    "otto": OttoLog,
    "archive": ArchiveLog,
}


def guess_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir():
        return "archive" if any(p.glob("date=*")) else "movielens"
    name = p.name.lower()
    if name.endswith((".jsonl", ".json", ".ndjson")) or str(path) == "-":
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    raise ValueError(f"{path}: cannot guess the format from the name; pass --format "
                     f"({', '.join(FORMATS)}, delimited)")


def open_log(path: str | Path, fmt: str | None = None, mapping: ColumnMapping | None = None) -> LogSource:
    fmt = fmt or guess_format(path)
    if fmt == "delimited":
        if mapping is None:
            raise ValueError("--format delimited needs a column mapping (--map)")
        return DelimitedLog(path, mapping)
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}, delimited")
    return FORMATS[fmt](path)


__all__ = ["FORMATS", "ColumnMapping", "LogSource", "guess_format", "open_log"]
