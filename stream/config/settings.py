"""Settings: one frozen object, read once from RECSTREAM_* environment variables.

Every field's environment variable is named beside it; `Settings.from_env()` reads them and
checks the values before the first poll, so a typo fails at start, naming the variable.

>>> Settings.from_env({"RECSTREAM_PARTITIONS": "8"}).partitions
8
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

from stream.errors import ConfigError


class SettingsError(ConfigError):
    """A RECSTREAM_* variable with a wrong value; the message names the variable."""


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
    archive_dir: str = "artifacts/archive"    # RECSTREAM_ARCHIVE_DIR (the event archive, date-partitioned Parquet)
    archive_retention_days: int = 30          # RECSTREAM_ARCHIVE_RETENTION_DAYS (by event time; 0 = keep all)
    encoder_dir: str = "artifacts/encoder"    # RECSTREAM_ENCODER_DIR (exported text encoder; absent = no content source)
    driver: str = "confluent"                 # RECSTREAM_DRIVER: confluent | faust
    batch_size: int = 1000                    # RECSTREAM_BATCH_SIZE (max events per micro-batch)
    batch_wait_ms: int = 5                    # RECSTREAM_BATCH_WAIT_MS (max wait to fill a batch)
    stats_max_age_ms: int = 1000              # RECSTREAM_STATS_MAX_AGE_MS: the worker reuses an item's popularity and trend (ranker features) this long (0 = read every batch)
    top_k: int = 10                           # RECSTREAM_TOP_K (items per recommendation)
    exclude_trigger: int = 1                  # RECSTREAM_EXCLUDE_TRIGGER: 1 = never recommend the item just interacted with
    exclude_bought: int = 0                   # RECSTREAM_EXCLUDE_BOUGHT: 1 = never recommend the user's recent purchases
    ranker: str = "gbdt"                      # RECSTREAM_RANKER: online ranker gbdt | lr | fm | off (gbdt:ungated, lr:WEIGHT, lr:learned)
    max_per_category: int = 0                 # RECSTREAM_MAX_PER_CATEGORY: diversity cap per category in a list (0 = off)
    covis_cap: int = 100                      # RECSTREAM_COVIS_CAP: co-visitation/co-occurrence members kept per item
    profile_cache_ids: int = 1_000_000        # RECSTREAM_PROFILE_CACHE_IDS: seen event ids a worker's profile cache holds (memory bound)
    ranker_checkpoint_s: float = 30.0         # RECSTREAM_RANKER_CHECKPOINT_S (and at shutdown); the blend weight too
    ranker_window_s: float = 1800.0           # RECSTREAM_RANKER_WINDOW_S (feedback window, event time)
    experiments: str = ""                     # RECSTREAM_EXPERIMENTS: an A/B experiment file (TOML; empty = none)
    outcome_window_s: float = 1800.0          # RECSTREAM_OUTCOME_WINDOW_S: a shown list's outcomes count this long (event time)
    outcome_attribution: str = "window"       # RECSTREAM_OUTCOME_ATTRIBUTION: window | tagged (events name their list in context.recommendation_id)
    latest_ttl_s: int = 86400                 # RECSTREAM_LATEST_TTL_S: each user's latest list kept in Redis (0 = not kept)
    api_fresh_after_s: float = 300.0          # RECSTREAM_API_FRESH_AFTER_S: the API asks afresh when the latest list is older
    search_learn: int = 1                     # RECSTREAM_SEARCH_LEARN: 1 = the worker teaches the search re-ranker with the clicks after a search
    search_holdout: float = 0.0               # RECSTREAM_SEARCH_HOLDOUT: share of users kept on the engine's order (the control; by a salted hash)
    search_window_s: float = 600.0            # RECSTREAM_SEARCH_WINDOW_S: a result page's clicks count this long (event time)
    search_requests_topic: str = "recstream.search.requests"  # RECSTREAM_SEARCH_REQUESTS_TOPIC (re-rank requests, Kafka-only shops)
    search_results_topic: str = "recstream.search.results"    # RECSTREAM_SEARCH_RESULTS_TOPIC (the re-ranked pages, keyed by user)
    trends_topic: str = "recstream.trends"    # RECSTREAM_TRENDS_TOPIC (`recstream trends run` publishes here)
    trends_window_s: float = 3600.0           # RECSTREAM_TRENDS_WINDOW_S: a trend's window (event time)
    trends_every_s: float = 10.0              # RECSTREAM_TRENDS_EVERY_S: how often trends are published
    session_timeout_ms: int = 6000            # RECSTREAM_SESSION_TIMEOUT_MS (Tansu: join waits half of it)
    metrics_port: int = 9108                  # RECSTREAM_METRICS_PORT (0 = off)
    log_every_s: float = 10.0                 # RECSTREAM_LOG_EVERY_S
    # Kafka client security (passed to every producer, consumer and admin client; empty = broker default)
    kafka_security_protocol: str = ""         # RECSTREAM_KAFKA_SECURITY_PROTOCOL: PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    kafka_sasl_mechanism: str = ""            # RECSTREAM_KAFKA_SASL_MECHANISM: PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    kafka_sasl_username: str = ""             # RECSTREAM_KAFKA_SASL_USERNAME
    kafka_sasl_password: str = ""             # RECSTREAM_KAFKA_SASL_PASSWORD (secret: never printed)
    kafka_ssl_ca_location: str = ""           # RECSTREAM_KAFKA_SSL_CA_LOCATION (CA bundle, PEM)
    kafka_ssl_certificate_location: str = ""  # RECSTREAM_KAFKA_SSL_CERTIFICATE_LOCATION (client certificate, PEM)
    kafka_ssl_key_location: str = ""          # RECSTREAM_KAFKA_SSL_KEY_LOCATION (client key, PEM)
    kafka_ssl_key_password: str = ""          # RECSTREAM_KAFKA_SSL_KEY_PASSWORD (secret)
    pseudonymise_key: str = ""                # RECSTREAM_PSEUDONYMISE_KEY (secret, >= 16 chars): user ids become keyed pseudonyms before Redis, logs and the recommendations topic

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

    def kafka_security(self) -> dict[str, str]:
        """The confluent-kafka (librdkafka) security settings in effect; {} for a plaintext broker.

        >>> Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        ...          kafka_sasl_username="app", kafka_sasl_password="pw").kafka_security()["sasl.mechanism"]
        'SCRAM-SHA-512'
        """
        conf = {"security.protocol": self.kafka_security_protocol, "sasl.mechanism": self.kafka_sasl_mechanism,
                "sasl.username": self.kafka_sasl_username, "sasl.password": self.kafka_sasl_password,
                "ssl.ca.location": self.kafka_ssl_ca_location,
                "ssl.certificate.location": self.kafka_ssl_certificate_location,
                "ssl.key.location": self.kafka_ssl_key_location, "ssl.key.password": self.kafka_ssl_key_password}
        return {k: v for k, v in conf.items() if v}

    def secrets(self) -> list[str]:
        """Secret values in effect (for log redaction): passwords, keys, the Redis URL's password."""
        from urllib.parse import urlsplit
        out = [self.kafka_sasl_password, self.kafka_ssl_key_password, self.pseudonymise_key]
        try:
            out.append(urlsplit(self.redis_url).password or "")
        except ValueError:
            pass
        return [x for x in out if x]

    def shown(self) -> list[tuple[str, str, bool]]:
        """(variable, value in effect with secrets masked, differs from the default) rows."""
        from stream.secrets import MASK, redact_url
        rows = []
        for f in fields(self):
            v = getattr(self, f.name)
            text = str(v)
            if f.name in SECRET_FIELDS and text:
                text = MASK
            elif f.name == "redis_url":
                text = redact_url(text)
            rows.append((_var(f.name), text, v != f.default))
        return rows

    def check(self) -> None:
        if self.driver not in ("confluent", "faust"):
            raise SettingsError(f"RECSTREAM_DRIVER={self.driver!r}: expected confluent or faust")
        if not 0.0 <= self.search_holdout <= 1.0:
            raise SettingsError(f"RECSTREAM_SEARCH_HOLDOUT={self.search_holdout}: expected a share in 0..1")
        for name in ("search_window_s", "trends_window_s", "trends_every_s"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"RECSTREAM_{name.upper()}={getattr(self, name)}: must be > 0 (seconds)")
        for name in ("partitions", "batch_size", "top_k"):
            if getattr(self, name) < 1:
                raise SettingsError(f"RECSTREAM_{name.upper()}={getattr(self, name)}: must be >= 1")
        if self.ranker != "off":
            from stream.core.ranking.spec import parse_spec
            try:
                parse_spec(self.ranker)
            except ValueError as e:
                raise SettingsError(f"RECSTREAM_RANKER={self.ranker!r}: expected gbdt, lr, fm or off (lr and fm "
                                    f"optionally MODEL:WEIGHT or MODEL:learned): {e}") from None
        if self.outcome_attribution not in ("window", "tagged"):
            raise SettingsError(f"RECSTREAM_OUTCOME_ATTRIBUTION={self.outcome_attribution!r}: expected window or tagged")
        if self.experiments:
            from stream.core.experiments import Experiment, ExperimentError
            try:
                Experiment.load(self.experiments)
            except ExperimentError as e:
                raise SettingsError(f"RECSTREAM_EXPERIMENTS={self.experiments!r}: {e}") from None
        if self.archive_retention_days < 0:
            raise SettingsError(f"RECSTREAM_ARCHIVE_RETENTION_DAYS={self.archive_retention_days}: must be >= 0 "
                                "(0 = keep everything)")
        if self.stats_max_age_ms < 0:
            raise SettingsError(f"RECSTREAM_STATS_MAX_AGE_MS={self.stats_max_age_ms}: must be >= 0 (0 = read every batch)")
        if self.covis_cap < 1:
            raise SettingsError(f"RECSTREAM_COVIS_CAP={self.covis_cap}: must be >= 1")
        if self.profile_cache_ids < 0:
            raise SettingsError(f"RECSTREAM_PROFILE_CACHE_IDS={self.profile_cache_ids}: must be >= 0 (0 = hold no "
                                "profile between batches)")
        if self.max_per_category < 0:
            raise SettingsError(f"RECSTREAM_MAX_PER_CATEGORY={self.max_per_category}: must be >= 0 (0 = no cap)")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            from stream.secrets import redact_url
            raise SettingsError(f"RECSTREAM_REDIS_URL={redact_url(self.redis_url)!r}: expected redis://host:port/db")
        if "{" in self.key_prefix or "}" in self.key_prefix:
            raise SettingsError(f"RECSTREAM_KEY_PREFIX={self.key_prefix!r}: must not contain {{ or }} (they are "
                                "the users' Redis Cluster hash tags)")
        proto = self.kafka_security_protocol.upper()
        if proto and proto not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            raise SettingsError(f"RECSTREAM_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol!r}: expected "
                                "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
        if proto.startswith("SASL") and not (self.kafka_sasl_mechanism and self.kafka_sasl_username
                                             and self.kafka_sasl_password):
            raise SettingsError(f"RECSTREAM_KAFKA_SECURITY_PROTOCOL={proto}: needs RECSTREAM_KAFKA_SASL_MECHANISM, "
                                "RECSTREAM_KAFKA_SASL_USERNAME and RECSTREAM_KAFKA_SASL_PASSWORD")
        if self.kafka_sasl_mechanism and self.kafka_sasl_mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            raise SettingsError(f"RECSTREAM_KAFKA_SASL_MECHANISM={self.kafka_sasl_mechanism!r}: expected PLAIN, "
                                "SCRAM-SHA-256 or SCRAM-SHA-512")
        if self.pseudonymise_key and len(self.pseudonymise_key) < 16:
            raise SettingsError("RECSTREAM_PSEUDONYMISE_KEY: needs at least 16 characters (a short key can be "
                                "brute-forced)")


SECRET_FIELDS = frozenset({"kafka_sasl_password", "kafka_ssl_key_password", "pseudonymise_key"})


def _var(field_name: str) -> str:
    return "RECSTREAM_" + field_name.upper()


def env_table() -> list[tuple[str, str]]:
    """(variable, default) rows, for `--help` and docs/settings.md."""
    return [(_var(f.name), str(f.default)) for f in fields(Settings)]
