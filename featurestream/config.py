"""The one configuration object, built from the environment and CLI flags.

No other module reads the environment: front doors build a :class:`Config` here and pass
its values down to ``streams/`` and ``sinks/`` as plain arguments.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from streams.contact import DEFAULT_DELIVERY_TIMEOUT_S
from streams.kafka_client import PLAINTEXT, KafkaConnection, KafkaSecurity, KafkaSecurityError

ENV_KAFKA = "FEATURESTREAM_KAFKA_BOOTSTRAP"
ENV_REDIS = "FEATURESTREAM_REDIS_URL"
ENV_S3 = "FEATURESTREAM_S3_ENDPOINT_URL"
ENV_OFFLINE_URI = "FEATURESTREAM_OFFLINE_URI"
ENV_STATE_DIR = "FEATURESTREAM_STATE_DIR"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_TOPIC_PREFIX = "FEATURESTREAM_TOPIC_PREFIX"
ENV_DELIVERY_TIMEOUT = "FEATURESTREAM_DELIVERY_TIMEOUT"
ENV_CATALOG_URI = "FEATURESTREAM_CATALOG_URI"
CATALOG_FILE = "iceberg-catalog.db"
# Kafka TLS and SASL, one variable per KafkaSecurity field: FEATURESTREAM_KAFKA_<FIELD>
# (FEATURESTREAM_KAFKA_SECURITY_PROTOCOL for the protocol). Named settings rather than a
# librdkafka properties file: they are checked before any client starts, errors name the variable,
# and they map onto both client libraries (librdkafka for confluent-kafka, aiokafka for faust).
KAFKA_SECURITY_ENV = {f.name: "FEATURESTREAM_KAFKA_" + ("SECURITY_PROTOCOL" if f.name == "protocol"
                                                         else f.name.upper())
                      for f in fields(KafkaSecurity)}

DEFAULT_STATE_DIR = Path.home() / ".featurestream"


@dataclass(frozen=True)
class Config:
    """Where the services are and how featurestream names things on them.

    ``None`` for an endpoint means "not configured": ``featurestream up`` starts a local
    server for it, and anything that needs it raises a clear error naming the variable.
    """

    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    s3_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    offline_uri: str | None = None
    state_dir: Path = field(default_factory=lambda: DEFAULT_STATE_DIR)
    # Prefix of every Kafka topic featurestream creates; lets tests isolate themselves. Also the
    # Iceberg namespace of the offline tables.
    topic_prefix: str = "featurestream"
    # Seconds a publish (put, ingest, HTTP PutRecord/BatchWriteRecord) or a registry read waits
    # for a broker that answered before and is now away, before it fails naming what was not
    # delivered. A broker that never answered this process is reported after a few seconds.
    delivery_timeout_s: float = DEFAULT_DELIVERY_TIMEOUT_S
    # The Iceberg catalog of the offline tables: an SQLAlchemy URL (sqlite:////path/file.db,
    # postgresql+psycopg2://user:pw@host/db), or rest+https://..., glue://?..., hive+thrift://...
    # (sinks/offline/catalog.py). None: the embedded SQLite file in the state dir.
    catalog_uri: str | None = None
    # TLS and SASL for every Kafka client (confluent-kafka and the faust engine's aiokafka).
    kafka_security: KafkaSecurity = PLAINTEXT

    def __post_init__(self) -> None:
        timeout = self.delivery_timeout_s
        # librdkafka's message.timeout.ms: 0 means "never time out", at most 2^31-1 ms, and its timeout
        # scan runs about once a second, so less than a second would not mean what it says.
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout <= 2_147_483:
            raise ConfigError(f"the delivery timeout ({ENV_DELIVERY_TIMEOUT} or --delivery-timeout) must be a "
                              f"number of seconds from 1 to 2147483; got {timeout!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Config:
        """Build from ``env`` (default: ``os.environ``); keyword overrides win (CLI flags)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value else None

        cfg = cls(
            kafka_bootstrap=get(ENV_KAFKA),
            redis_url=get(ENV_REDIS),
            s3_endpoint_url=get(ENV_S3),
            aws_access_key_id=get(ENV_ACCESS_KEY),
            aws_secret_access_key=get(ENV_SECRET_KEY),
            offline_uri=get(ENV_OFFLINE_URI),
            state_dir=Path(get(ENV_STATE_DIR) or DEFAULT_STATE_DIR).expanduser(),
            topic_prefix=get(ENV_TOPIC_PREFIX) or "featurestream",
            delivery_timeout_s=_seconds(get(ENV_DELIVERY_TIMEOUT), ENV_DELIVERY_TIMEOUT, DEFAULT_DELIVERY_TIMEOUT_S),
            catalog_uri=get(ENV_CATALOG_URI),
            kafka_security=kafka_security_from_env(get),
        )
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(cfg, **clean) if clean else cfg

    def to_env(self) -> dict[str, str]:
        """The variables ``from_env`` reads, for a child process (``featurestream process``, ...)
        that must reach the same services; unset endpoints are left out."""
        pairs = ((ENV_KAFKA, self.kafka_bootstrap), (ENV_REDIS, self.redis_url), (ENV_S3, self.s3_endpoint_url),
                 (ENV_ACCESS_KEY, self.aws_access_key_id), (ENV_SECRET_KEY, self.aws_secret_access_key),
                 (ENV_OFFLINE_URI, self.offline_uri), (ENV_TOPIC_PREFIX, self.topic_prefix),
                 # only when changed: children then follow the same default as this process
                 (ENV_DELIVERY_TIMEOUT, None if self.delivery_timeout_s == DEFAULT_DELIVERY_TIMEOUT_S
                  else repr(float(self.delivery_timeout_s))),
                 (ENV_CATALOG_URI, self.catalog_uri),
                 # secrets too: a child must authenticate as this process does (never printed: see
                 # KafkaSecurity.describe)
                 *((var, getattr(self.kafka_security, name)) for name, var in KAFKA_SECURITY_ENV.items()
                   if self.kafka_security != PLAINTEXT))
        return {name: str(value) for name, value in pairs if value}

    def kafka(self) -> KafkaConnection:
        """The brokers and how to reach them, for every Kafka client; a ConfigError when unset."""
        return KafkaConnection(self.require("kafka_bootstrap"), self.kafka_security)

    def require(self, attr: str) -> str:
        """Return a configured endpoint or raise a ConfigError naming the variable to set."""
        value = getattr(self, attr)
        if not value:
            var = {
                "kafka_bootstrap": ENV_KAFKA,
                "redis_url": ENV_REDIS,
                "s3_endpoint_url": ENV_S3,
                "offline_uri": ENV_OFFLINE_URI,
            }.get(attr, attr)
            raise ConfigError(
                f"{var} is not set. Run `eval \"$(featurestream up)\"` to start the local stack "
                f"and export it, or set {var} to your own endpoint."
            )
        return str(value)

    def catalog(self) -> str:
        """The Iceberg catalog URI: the configured one, else the embedded SQLite file in the state dir."""
        if self.catalog_uri:
            return self.catalog_uri
        return embedded_catalog_uri(self.state_dir)

    def storage_options(self) -> dict[str, object]:
        """fsspec/s3fs options for the offline store's S3 server (empty when none is configured).

        Given whenever S3 is configured, even when this process writes new tables to a local path:
        the catalog it shares may hold other groups' tables on S3, and a sink resumes every table
        it is assigned (without them, pyiceberg would look for AWS itself)."""
        if not (self.s3_endpoint_url or self.aws_access_key_id):
            return {}
        opts: dict[str, object] = {}
        if self.s3_endpoint_url:
            opts["client_kwargs"] = {"endpoint_url": self.s3_endpoint_url}
        if self.aws_access_key_id:
            opts["key"] = self.aws_access_key_id
            opts["secret"] = self.aws_secret_access_key
        return opts


def embedded_catalog_uri(state_dir: Path) -> str:
    """SQLAlchemy URL of the embedded SQLite catalog in ``state_dir`` (absolute: four slashes)."""
    return f"sqlite:///{Path(state_dir).expanduser().resolve() / CATALOG_FILE}"


class ConfigError(RuntimeError):
    """A required setting is missing or malformed."""


def kafka_security_from_env(get: Callable[[str], str | None]) -> KafkaSecurity:
    """The Kafka security settings from FEATURESTREAM_KAFKA_* variables; a ConfigError names the one at fault."""
    values = {name: get(var) for name, var in KAFKA_SECURITY_ENV.items()}
    values["protocol"] = values["protocol"] or "PLAINTEXT"
    try:
        return KafkaSecurity(**values)
    except KafkaSecurityError as exc:
        raise ConfigError(f"{KAFKA_SECURITY_ENV.get(exc.setting, exc.setting)}: {exc}") from None


def _seconds(text: str | None, name: str, default: float) -> float:
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds (e.g. 120 or 2.5); got {text!r}") from None
