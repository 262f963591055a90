"""Any delimited click log, replayed through a column mapping instead of code.

    recstream produce clicks.tsv --format delimited \
        --map 'delimiter=\t,header=false,user=0,item=1,ts=3,ts_unit=s,type=view'

Mapping keys (columns are header names when header=true, else 0-based indexes):
  delimiter  field separator (default ","; "\t" for tabs)   header  true|false (default true)
  user       user column (or session column for anonymous logs)   item   item column
  ts         timestamp column; ts_unit  s | ms | iso (default ms)
  type       a column holding the event type, or a fixed type for every row (view, click, ...)
  types      optional value map for the type column, e.g. "pv:view;buy:purchase"
  session, price, category, brand, query   optional columns
event_id = "{source file stem}:{line number}".
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterator

from schemas import EVENT_TYPES, Rejected
from stream.data.adapters.base import LogSource


@dataclass(frozen=True)
class ColumnMapping:
    user: str
    item: str
    ts: str
    type: str = "view"
    ts_unit: str = "ms"
    delimiter: str = ","
    header: bool = True
    types: dict = field(default_factory=dict)
    session: str | None = None
    price: str | None = None
    category: str | None = None
    brand: str | None = None
    query: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "ColumnMapping":
        """`key=value,key=value`; a `\\t` delimiter may be written literally.

        >>> ColumnMapping.parse("user=0,item=1,ts=3,ts_unit=s,header=false,delimiter=\\\\t").delimiter
        '\\t'
        """
        kv = {}
        for part in spec.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise ValueError(f"--map: {part!r} is not key=value")
            k, v = part.split("=", 1)
            kv[k.strip()] = v.strip()
        if kv.get("delimiter") in ("\\t", "tab"):
            kv["delimiter"] = "\t"
        if "header" in kv:
            kv["header"] = kv["header"].lower() in ("1", "true", "yes")
        if "types" in kv:
            kv["types"] = dict(p.split(":", 1) for p in kv["types"].split(";") if p)
        missing = [k for k in ("user", "item", "ts") if k not in kv]
        if missing:
            raise ValueError(f"--map: missing {', '.join(missing)} (need user, item and ts columns)")
        if kv.get("ts_unit", "ms") not in ("s", "ms", "iso"):
            raise ValueError(f"--map: ts_unit={kv['ts_unit']!r}: expected s, ms or iso")
        unknown = kv.keys() - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"--map: unknown key {sorted(unknown)[0]!r}")
        return cls(**kv)


class DelimitedLog(LogSource):
    name = "delimited"

    def __init__(self, path, mapping: ColumnMapping):
        super().__init__(path)
        self.m = mapping

    def events(self) -> Iterator[tuple[int, dict | Rejected]]:
        m = self.m
        fixed_type = m.type if m.type in EVENT_TYPES else None
        with self._open_bytes() as fh:
            reader = csv.reader(io.TextIOWrapper(fh, encoding="utf-8", errors="replace"), delimiter=m.delimiter)
            header = next(reader) if m.header else None

            def col(name: str | None) -> int | None:
                if name is None:
                    return None
                if header is not None and name in header:
                    return header.index(name)
                try:
                    return int(name)
                except ValueError:
                    raise ValueError(f"--map: column {name!r} is not in the header {header}") from None

            cu, ci, ct = col(m.user), col(m.item), col(m.ts)
            ctype = None if fixed_type else col(m.type)
            extras = {k: col(getattr(m, k)) for k in ("session", "price", "category", "brand", "query")}
            stem = self.path.stem
            for n, row in enumerate(reader, 2 if header else 1):
                try:
                    raw_ts = row[ct]
                    if m.ts_unit == "iso":
                        ts = int(datetime.fromisoformat(raw_ts.replace("Z", "+00:00")).timestamp() * 1000)
                    else:
                        ts = int(float(raw_ts) * (1000 if m.ts_unit == "s" else 1))
                    etype = fixed_type or m.types.get(row[ctype], row[ctype])
                    ev = {"event_id": f"{stem}:{n}", "user_id": row[cu], "item_id": row[ci], "type": etype, "ts": ts}
                except IndexError:
                    yield n, Rejected(f"line: {len(row)} fields is too few for the mapping")
                    continue
                except ValueError:
                    yield n, Rejected(f"ts: cannot read {row[ct]!r} as {m.ts_unit}")
                    continue
                ctx = {}
                for k, c in extras.items():
                    if c is None or c >= len(row) or row[c] == "":
                        continue
                    if k == "session":
                        ev["session_id"] = row[c]
                    elif k == "query":
                        ev["query"] = row[c]
                    elif k == "price":
                        try:
                            ev["price"] = float(row[c])
                        except ValueError:
                            pass
                    else:
                        ctx[k] = row[c]
                if ctx:
                    ev["context"] = ctx
                yield n, ev
