"""Shared field checks for the v1 contracts.

Validation never raises on bad input: each check returns the cleaned value or raises
`_Bad`, which the public `validate_*` functions turn into a `Rejected` naming the field.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

MAX_MESSAGE_BYTES = 64 * 1024   # a whole message; a 1 MB string is refused before parsing
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 4096

MIN_TS_MS = 631_152_000_000     # 1990-01-01T00:00:00Z (MovieLens starts in 1997)
MAX_TS_MS = 4_102_444_800_000   # 2100-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused: `reason` starts with the field name.

    >>> Rejected("price: expected a number >= 0, got -1").field
    'price'
    """

    reason: str

    @property
    def field(self) -> str:
        return self.reason.split(":", 1)[0]


class _Bad(Exception):
    pass


def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def load_object(raw: bytes | str | dict) -> dict:
    """Parse one message into a dict, or raise _Bad with a `message:` reason."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise _Bad(f"message: {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"message: invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Bad(f"message: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise _Bad(f"message: expected a JSON object, got {_type_name(obj)}")
    return obj


def check_version(obj: dict, expected: int = 1) -> None:
    v = obj.get("v", expected)
    if v != expected or isinstance(v, bool):
        raise _Bad(f"v: unsupported schema version {v!r}; this consumer reads v{expected}")


def check_unknown(obj: dict, allowed: frozenset[str]) -> None:
    extra = obj.keys() - allowed
    if extra:
        raise _Bad(f"{sorted(extra)[0]}: unknown field (allowed: {', '.join(sorted(allowed))})")


def req(obj: dict, name: str) -> object:
    if name not in obj or obj[name] is None:
        raise _Bad(f"{name}: required field is missing")
    return obj[name]


def ident(obj: dict, name: str, *, required: bool = True) -> str | None:
    """An id: a non-empty string (integers are accepted and turned into strings)."""
    v = req(obj, name) if required else obj.get(name)
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if not isinstance(v, str):
        raise _Bad(f"{name}: expected a string id, got {_type_name(v)}")
    if not v or len(v) > MAX_ID_CHARS:
        raise _Bad(f"{name}: expected 1..{MAX_ID_CHARS} characters, got {len(v)}")
    return v


def text(obj: dict, name: str, *, required: bool = False, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    v = req(obj, name) if required else obj.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _Bad(f"{name}: expected a string, got {_type_name(v)}")
    if len(v) > max_chars:
        raise _Bad(f"{name}: {len(v)} characters exceeds the limit of {max_chars}")
    return v


def timestamp_ms(obj: dict, name: str, *, required: bool = True) -> int | None:
    v = req(obj, name) if required else obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise _Bad(f"{name}: expected integer milliseconds since the epoch, got {_type_name(v)}")
    if MIN_TS_MS // 1000 <= v <= MAX_TS_MS // 1000:
        raise _Bad(f"{name}: {v} looks like seconds; expected milliseconds since the epoch")
    if not MIN_TS_MS <= v <= MAX_TS_MS:
        raise _Bad(f"{name}: {v} is outside 1990-01-01..2100-01-01 in milliseconds")
    return v


def number(obj: dict, name: str, *, minimum: float = 0.0) -> float | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _Bad(f"{name}: expected a number, got {_type_name(v)}")
    if not math.isfinite(v) or v < minimum:
        raise _Bad(f"{name}: expected a finite number >= {minimum:g}, got {v!r}")
    return float(v)


def integer(obj: dict, name: str, *, minimum: int = 1) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise _Bad(f"{name}: expected an integer, got {_type_name(v)}")
    if v < minimum:
        raise _Bad(f"{name}: expected an integer >= {minimum}, got {v}")
    return v
