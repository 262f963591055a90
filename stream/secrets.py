"""Secrets and personal data: redaction for log lines and `recstream settings`, and keyed pseudonyms
for user ids.

* `redact_url` hides the password of a `redis://user:password@host` URL.
* `RedactingFilter` replaces every registered secret (Redis password, SASL password, pseudonym key) in
  every log record, whoever wrote the line; the CLI installs it on the root logger.
* `Pseudonymiser` turns a user id into `p_` + 32 hex digits of HMAC-SHA256 under the operator's key, before
  the id reaches Redis, a log line or the recommendations topic. The shop, which holds the key, maps its own
  ids forward the same way (`recstream pseudonym USER`) and keeps the reverse table if it needs one.

>>> redact_url("redis://app:s3cret@db:6379/0")
'redis://app:***@db:6379/0'
>>> redact_url("redis://:s3cret@db:6379/0")
'redis://:***@db:6379/0'
>>> k1, k2 = b"k" * 16, b"j" * 16
>>> Pseudonymiser(k1).user("alice") == Pseudonymiser(k1).user("alice") != Pseudonymiser(k2).user("alice")
True
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re

MASK = "***"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@")


def redact_url(url: str) -> str:
    """`url` with its password (if any) replaced by ***."""
    return _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", url)


def redact_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Any URL password and every given secret (4+ characters) in `text` replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Redacts URL passwords and the registered secrets from each record's final message."""

    def __init__(self, secrets: list[str] | tuple[str, ...] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact_text(msg, self.secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def install_redaction(secrets: list[str] | tuple[str, ...] = ()) -> RedactingFilter:
    """Put one RedactingFilter on every handler of the root logger (a handler filter sees records from
    every logger, a logger filter only its own)."""
    f = RedactingFilter(secrets)
    root = logging.getLogger()
    for h in root.handlers:
        for old in [x for x in h.filters if isinstance(x, RedactingFilter)]:
            h.removeFilter(old)
        h.addFilter(f)
    return f


class Pseudonymiser:
    """Keyed pseudonyms for user ids (HMAC-SHA256, 128 bits shown): stable for one key, unlinkable without it."""

    def __init__(self, key: bytes):
        if len(key) < 16:
            raise ValueError("the pseudonym key needs at least 16 bytes")  # short keys are brute-forceable
        self.key = key

    def user(self, user_id: str) -> str:
        return "p_" + hmac.new(self.key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]

    def events(self, events: list) -> list:
        """The same events with pseudonymous user ids (validated events, before anything stores them)."""
        from dataclasses import replace
        return [replace(ev, user_id=self.user(ev.user_id)) for ev in events]
