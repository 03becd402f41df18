"""Where the local stack keeps things, and which ports it uses by default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from featurestream.config import DEFAULT_STATE_DIR

# Downloads and builds (Kafka jars, versitygw) are shared by every state dir, so a test
# session's throw-away state dir does not fetch them again.
DEFAULT_CACHE_DIR = DEFAULT_STATE_DIR / "cache"

SERVICES = ("kafka", "redis", "s3")


@dataclass(frozen=True)
class StackPorts:
    """Loopback ports of the local servers: fixed, and away from each product's default
    (9092, 6379, 9000) so a developer's own servers on those ports are left alone."""

    kafka: int = 19092
    controller: int = 19093
    redis: int = 16379
    s3: int = 19000
    kafka_sasl: int = 19094  # the SASL_SSL client listener (`up --kafka-security sasl_ssl` only)

    def __post_init__(self) -> None:
        values = {"kafka": self.kafka, "controller": self.controller, "redis": self.redis, "s3": self.s3,
                  "kafka-sasl": self.kafka_sasl}
        for name, port in values.items():
            if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
                raise ValueError(f"--{name}-port must be an integer in 1..65535, got {port!r}")
        if len(set(values.values())) != len(values):
            raise ValueError(f"the stack's ports must all differ, got {values}")


@dataclass(frozen=True)
class StackLayout:
    state_dir: Path
    cache_dir: Path = DEFAULT_CACHE_DIR

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def data_dir(self, service: str) -> Path:
        return self.state_dir / "data" / service

    def log_path(self, service: str) -> Path:
        return self.logs_dir / f"{service}.log"

    @property
    def bin_dir(self) -> Path:
        return self.cache_dir / "bin"

    def kafka_libs(self, version: str) -> Path:
        return self.cache_dir / f"kafka-{version}" / "libs"
