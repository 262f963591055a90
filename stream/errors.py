"""One exception tree. Foreign errors (Kafka, Redis, onnxruntime) are translated once, at the edge,
into one of these, and every message names where it happened (a topic[partition]@offset, a key, a URL
with its password redacted).

    RecstreamError
    ├── ConfigError        a setting or argument is wrong: fix it and start again
    ├── BrokerError        Kafka refused or failed (transient ones are retried by the worker first)
    ├── StoreError         Redis failed
    │   ├── StoreUnavailable   cannot reach Redis (retried with backoff by the worker)
    │   └── StoreEmptied       the store lost its data: `recstream rebuild` restores it
    ├── ModelError         a model or checkpoint is missing, corrupt or does not fit
    │   ├── RegistryError      the model registry has no such version, or a broken manifest
    │   └── ParityError        an export disagrees with the model it came from
    ├── ContractError      a message does not match its contract (the DLQ, never a crash, is its home)
    └── StackError         the local stack (broker, redis-server) could not be started or found

>>> issubclass(StoreEmptied, RecstreamError), issubclass(ConfigError, ValueError)
(True, True)
"""
from __future__ import annotations

import redis


class RecstreamError(Exception):
    """Base of every error recstream raises on purpose."""


class ConfigError(RecstreamError, ValueError):
    """A setting, environment variable or argument is wrong; the message names it."""


class BrokerError(RecstreamError, RuntimeError):
    """A Kafka failure, translated once at the edge, naming where it happened. `transient` False: retrying
    cannot help (a fatal client error)."""

    transient = True


class StoreError(RecstreamError, RuntimeError):
    """A Redis failure that is not a transient outage."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached right now (connection refused or reset, timeout, loading after a restart)."""


class StoreEmptied(StoreError):
    """The store's marker key is gone: Redis lost its data. Nothing is applied until it is rebuilt."""


class ModelError(RecstreamError, RuntimeError):
    """A model, encoder or checkpoint is missing, corrupt, or does not match what uses it."""


class RegistryError(ModelError):
    """The model registry has no such version, or its manifest is broken."""


class ParityError(ModelError):
    """An exported model's outputs differ from the model it was exported from beyond the tolerance."""


class StackError(RecstreamError, RuntimeError):
    """The local stack could not be started, found or reached."""


class ContractError(RecstreamError, ValueError):
    """A message that does not match its contract, where a caller asked for an exception."""


# Redis errors that an outage causes: the same call may succeed once Redis is back.
TRANSIENT_REDIS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                   redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
                   redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError)


def translate_redis(exc: BaseException, where: str) -> StoreError:
    """A redis-py error as a StoreError subclass naming `where` (a key, a stage)."""
    if isinstance(exc, TRANSIENT_REDIS):
        return StoreUnavailable(f"{where}: Redis unavailable ({type(exc).__name__}: {exc})")
    if isinstance(exc, redis.exceptions.ResponseError) and "RECSTREAM_EMPTIED" in str(exc):
        return StoreEmptied(f"{where}: {str(exc).replace('RECSTREAM_EMPTIED ', '')}")
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")
