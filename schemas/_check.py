"""Shared field checks for the v1 contracts.

Validation never raises on bad input: each check returns the cleaned value or raises
`_Bad`, which the public `validate_*` functions turn into a `Rejected` naming the field.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass

import orjson

MAX_MESSAGE_BYTES = 64 * 1024   # a whole message; a 1 MB string is refused before parsing
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 4096
MAX_PRICE = 1e9                 # a price above a billion is a unit error or an attack, not a product
MAX_QUANTITY = 100_000
MAX_CONTEXT_KEYS = 32
MAX_CONTEXT_KEY_CHARS = 64
MAX_REASON_CHARS = 300          # a rejection never echoes more than this (it travels as a DLQ header)
_SHOW_CHARS = 40                # how much of an offending value a reason quotes
# Unicode categories refused in ids: controls (NUL...), format characters (zero-width, direction
# overrides), surrogates, private use, line/paragraph separators. They make look-alike or invisible ids.
_BAD_ID_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEY_TOKEN = re.compile(rb'"[ \t\r\n]*:')

MIN_TS_MS = 631_152_000_000     # 1990-01-01T00:00:00Z (MovieLens starts in 1997)
MAX_TS_MS = 4_102_444_800_000   # 2100-01-01T00:00:00Z


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused: `reason` starts with the field name.

    >>> Rejected("price: expected a number >= 0, got -1").field
    'price'
    """

    reason: str

    def __post_init__(self):
        object.__setattr__(self, "reason", cap_reason(self.reason))

    @property
    def field(self) -> str:
        return self.reason.split(":", 1)[0]


def cap_reason(reason: str) -> str:
    """A reason cut to MAX_REASON_CHARS (it travels as a DLQ header)."""
    return reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS - 1] + "…"


class _Bad(Exception):
    pass


def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def show(v: object) -> str:
    """A value as a reason quotes it: repr, cut to a few dozen characters.

    >>> len(show("x" * 100))
    40
    """
    r = repr(v)
    return r if len(r) <= _SHOW_CHARS else r[:_SHOW_CHARS - 1] + "…"


def _count_keys(obj) -> int:
    """Keys in a parsed JSON value, at every depth."""
    if type(obj) is dict:
        n = len(obj)
        values = obj.values()
    else:
        n = 0
        values = obj
    for v in values:
        t = type(v)
        if t is dict or t is list:
            n += _count_keys(v)
    return n


def _no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise _Bad(f"{k}: duplicate key in the message" if len(k) <= _SHOW_CHARS
                       else f"message: duplicate key {show(k)}")
        seen[k] = v
    return seen


def _check_duplicate_keys(raw: bytes, obj: dict) -> None:
    """orjson keeps the last of duplicate keys silently. Every key token in the text matches `"` + `:`;
    so do a few string contents. When the text holds exactly as many of those as the parsed object has
    keys, no key was duplicated (the fast path); otherwise the slow parser finds out which."""
    n_keys = _count_keys(obj)
    if raw.count(b'":') == n_keys or len(_KEY_TOKEN.findall(raw)) == n_keys:   # compact JSON, then spaced
        return
    json.loads(raw, object_pairs_hook=_no_duplicates)


def load_object(raw: bytes | str | dict | None) -> dict:
    """Parse one message into a dict, or raise _Bad with a `message:` reason."""
    if raw is None:
        raise _Bad("message: no value (a tombstone); an event or item needs a JSON object")
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (bytearray, memoryview)):
        raw = bytes(raw)
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if not isinstance(raw, bytes):
        raise _Bad(f"message: expected bytes, got {_type_name(raw)}")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise _Bad(f"message: {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Bad(f"message: invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Bad(f"message: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        raise _Bad(f"message: expected a JSON object, got {_type_name(obj)}")
    try:
        _check_duplicate_keys(raw, obj)
    except (ValueError, RecursionError):    # the slow parser disagreeing with orjson: refuse, never raise
        raise _Bad("message: not valid JSON (strict parse failed)") from None
    return obj


def check_version(obj: dict, expected: int = 1) -> None:
    v = obj.get("v", expected)
    if type(v) is not int or v != expected:
        raise _Bad(f"v: unsupported schema version {show(v)}; this consumer reads v{expected} (an integer)")


def check_id_chars(name: str, v: str) -> None:
    """Ids are printable text: no controls, NUL, zero-width or direction-override characters."""
    if v.isascii() and v.isprintable():
        return
    for pos, ch in enumerate(v):
        if unicodedata.category(ch) in _BAD_ID_CATEGORIES:
            raise _Bad(f"{name}: character U+{ord(ch):04X} at position {pos} is not allowed in an id "
                       "(control, format, unassigned or private-use)")


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
    if type(v) is int:
        if not -(2 ** 63) <= v < 2 ** 64:
            raise _Bad(f"{name}: integer id out of the 64-bit range")
        return str(v)
    if not isinstance(v, str):
        raise _Bad(f"{name}: expected a string id, got {_type_name(v)}")
    if not v or len(v) > MAX_ID_CHARS:
        raise _Bad(f"{name}: expected 1..{MAX_ID_CHARS} characters, got {len(v)}")
    check_id_chars(name, v)
    return v


def text(obj: dict, name: str, *, required: bool = False, max_chars: int = MAX_TEXT_CHARS) -> str | None:
    v = req(obj, name) if required else obj.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise _Bad(f"{name}: expected a string, got {_type_name(v)}")
    if len(v) > max_chars:
        raise _Bad(f"{name}: {len(v)} characters exceeds the limit of {max_chars}")
    if "\x00" in v:
        raise _Bad(f"{name}: NUL character at position {v.index(chr(0))}")
    return v


def timestamp_ms(obj: dict, name: str, *, required: bool = True) -> int | None:
    v = req(obj, name) if required else obj.get(name)
    if v is None:
        return None
    if type(v) is not int:
        if type(v) is float and v.is_integer():
            v = int(v)
        else:
            raise _Bad(f"{name}: expected integer milliseconds since the epoch, got {_type_name(v)}")
    if MIN_TS_MS // 1000 <= v <= MAX_TS_MS // 1000:
        raise _Bad(f"{name}: {v} looks like seconds; expected milliseconds since the epoch")
    if not MIN_TS_MS <= v <= MAX_TS_MS:
        raise _Bad(f"{name}: {v} is outside 1990-01-01..2100-01-01 in milliseconds")
    return v


def number(obj: dict, name: str, *, minimum: float = 0.0, maximum: float = MAX_PRICE) -> float | None:
    v = obj.get(name)
    if v is None:
        return None
    if type(v) not in (int, float):
        raise _Bad(f"{name}: expected a number, got {_type_name(v)}")
    if not (minimum <= v <= maximum) or (type(v) is float and not math.isfinite(v)):
        raise _Bad(f"{name}: expected a number in {minimum:g}..{maximum:g}, got {show(v)}")
    return float(v)


def integer(obj: dict, name: str, *, minimum: int = 1, maximum: int = MAX_QUANTITY) -> int | None:
    v = obj.get(name)
    if v is None:
        return None
    if type(v) is not int:
        raise _Bad(f"{name}: expected an integer, got {_type_name(v)}")
    if not minimum <= v <= maximum:
        raise _Bad(f"{name}: expected an integer in {minimum}..{maximum}, got {show(v)}")
    return v


def context(obj: dict, name: str = "context") -> dict | None:
    """Free-form context: at most 32 keys, each a short string, each value a scalar (string, finite
    number, boolean, null); `category` and `brand`, which the profile reads, must be strings."""
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, dict):
        raise _Bad(f"{name}: expected an object, got {_type_name(v)}")
    if len(v) > MAX_CONTEXT_KEYS:
        raise _Bad(f"{name}: {len(v)} keys exceeds the limit of {MAX_CONTEXT_KEYS}")
    for k, x in v.items():
        if not k or len(k) > MAX_CONTEXT_KEY_CHARS:
            raise _Bad(f"{name}: keys need 1..{MAX_CONTEXT_KEY_CHARS} characters, got {len(k)}")
        where = f"{name}.{k}" if k.isascii() and k.isprintable() else f"{name}[{show(k)}]"
        if k in ("category", "brand"):
            if x is not None:
                text({where: x}, where, max_chars=256 if k == "brand" else 1024)
                if not x.strip():
                    raise _Bad(f"{where}: expected a non-empty string")
            continue
        if x is None or isinstance(x, bool):
            continue
        if isinstance(x, str):
            if len(x) > 1024:
                raise _Bad(f"{where}: {len(x)} characters exceeds the limit of 1024")
        elif type(x) in (int, float):
            if type(x) is float and not math.isfinite(x):
                raise _Bad(f"{where}: expected a finite number")
        else:
            raise _Bad(f"{where}: expected a string, number, boolean or null, got {_type_name(x)}")
    return v
