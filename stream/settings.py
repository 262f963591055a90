"""Settings: one frozen object, read once from RECSTREAM_* environment variables.

Every field's environment variable is named beside it; `Settings.from_env()` reads them and
checks the values before the first poll, so a typo fails at start, naming the variable.

>>> Settings.from_env({"RECSTREAM_PARTITIONS": "8"}).partitions
8
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    brokers: str = "localhost:19092"          # RECSTREAM_BROKERS (Kafka bootstrap servers)
    redis_url: str = "redis://localhost:16379/0"  # RECSTREAM_REDIS_URL
    events_topic: str = "recstream.events"    # RECSTREAM_EVENTS_TOPIC
    items_topic: str = "recstream.items"      # RECSTREAM_ITEMS_TOPIC
    recs_topic: str = "recstream.recommendations"  # RECSTREAM_RECS_TOPIC
    dlq_topic: str = "recstream.events.dlq"   # RECSTREAM_DLQ_TOPIC
    partitions: int = 4                       # RECSTREAM_PARTITIONS (for `topics create`)
    group_id: str = "recstream-worker"        # RECSTREAM_GROUP_ID
    key_prefix: str = "rs:"                   # RECSTREAM_KEY_PREFIX (Redis key namespace)
    state_dir: str = ".state"                 # RECSTREAM_STATE_DIR (local stack pid files and logs)
    model_dir: str = "artifacts/models"       # RECSTREAM_MODEL_DIR (model registry root)
    encoder_dir: str = "artifacts/encoder"    # RECSTREAM_ENCODER_DIR (exported text encoder; absent = no content source)
    driver: str = "confluent"                 # RECSTREAM_DRIVER: confluent | faust
    batch_size: int = 1000                    # RECSTREAM_BATCH_SIZE (max events per micro-batch)
    batch_wait_ms: int = 5                    # RECSTREAM_BATCH_WAIT_MS (max wait to fill a batch)
    top_k: int = 10                           # RECSTREAM_TOP_K (items per recommendation)
    exclude_trigger: int = 1                  # RECSTREAM_EXCLUDE_TRIGGER: 1 = never recommend the item just interacted with
    ranker: str = "lr"                        # RECSTREAM_RANKER: online ranker lr | fm | off (optionally lr:WEIGHT)
    ranker_checkpoint_s: float = 30.0         # RECSTREAM_RANKER_CHECKPOINT_S (and at shutdown)
    ranker_window_s: float = 1800.0           # RECSTREAM_RANKER_WINDOW_S (feedback window, event time)
    session_timeout_ms: int = 6000            # RECSTREAM_SESSION_TIMEOUT_MS (Tansu: join waits half of it)
    metrics_port: int = 9108                  # RECSTREAM_METRICS_PORT (0 = off)
    log_every_s: float = 10.0                 # RECSTREAM_LOG_EVERY_S

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            name = _var(f.name)
            if name not in env:
                continue
            raw = env[name]
            try:
                values[f.name] = raw
                if f.type == "int":
                    values[f.name] = int(raw)
                elif f.type == "float":
                    values[f.name] = float(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r}: expected {f.type}") from None
        s = replace(cls(**values), **overrides)
        s.check()
        return s

    def to_env(self) -> dict[str, str]:
        """The RECSTREAM_* variables that reproduce these settings (for child processes).

        >>> Settings(partitions=8).to_env()["RECSTREAM_PARTITIONS"]
        '8'
        """
        return {_var(f.name): str(getattr(self, f.name)) for f in fields(self)}

    def check(self) -> None:
        if self.driver not in ("confluent", "faust"):
            raise SettingsError(f"RECSTREAM_DRIVER={self.driver!r}: expected confluent or faust")
        for name in ("partitions", "batch_size", "top_k"):
            if getattr(self, name) < 1:
                raise SettingsError(f"RECSTREAM_{name.upper()}={getattr(self, name)}: must be >= 1")
        if self.ranker != "off":
            model, _, weight = self.ranker.partition(":")
            try:
                float(weight or 1)
                ok = model in ("lr", "fm")
            except ValueError:
                ok = False
            if not ok:
                raise SettingsError(f"RECSTREAM_RANKER={self.ranker!r}: expected lr, fm or off (optionally MODEL:WEIGHT)")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(f"RECSTREAM_REDIS_URL={self.redis_url!r}: expected redis://host:port/db")


def _var(field_name: str) -> str:
    return "RECSTREAM_" + field_name.upper()


def env_table() -> list[tuple[str, str]]:
    """(variable, default) rows, for `--help` and the README."""
    return [(_var(f.name), str(f.default)) for f in fields(Settings)]
