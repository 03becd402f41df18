"""`up`, `down` and `status` of the local stack: Kafka, Redis and an S3 server as processes.

`up` is idempotent: a service already running from this state dir is reused, a service whose
endpoint the Config already names is left to its owner, and only the rest is started. All
checks that can fail (tools, ports) run before anything starts, and a failed start stops
what this call started, so a failure leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from featurestream.config import (
    ENV_ACCESS_KEY,
    ENV_CATALOG_URI,
    ENV_KAFKA,
    ENV_OFFLINE_URI,
    ENV_REDIS,
    ENV_S3,
    ENV_SECRET_KEY,
    KAFKA_SECURITY_ENV,
    Config,
    embedded_catalog_uri,
)
from featurestream.stack import kafka, procs
from featurestream.stack.errors import PortInUseError, ServerStartError, StackError
from featurestream.stack.layout import SERVICES, StackLayout, StackPorts
from featurestream.stack.ports import port_is_free, port_owner
from featurestream.stack.redis_server import find_redis_server, redis_answers, redis_argv
from featurestream.stack.s3_server import S3Server, bucket_of, ensure_bucket, find_s3_server, s3_answers
from featurestream.stack.secure_kafka import MODES, USER, SecureKafkaFiles, client_security
from streams.kafka_client import PLAINTEXT, KafkaConnection, KafkaSecurity

DEFAULT_OFFLINE_URI = "s3://featurestream/offline"
READY_TIMEOUT = {"kafka": 90.0, "redis": 15.0, "s3": 30.0}
# How long `up` lets a server that died a moment ago (kill -9) release its ports before calling them
# taken: the JVM's main thread is gone 0.1-0.2 s before its other threads close Kafka's sockets.
RELEASE_WAIT_S = 10.0

Say = Callable[[str], None]


def _silent(_: str) -> None:
    pass


@dataclass(frozen=True)
class Endpoints:
    """What `up` exports: where each service is and how to reach the offline store."""

    kafka_bootstrap: str
    redis_url: str
    s3_endpoint_url: str | None
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    offline_uri: str
    # The Iceberg catalog of the offline tables (the embedded SQLite file in the state dir unless
    # the Config names one).
    catalog_uri: str | None = None
    # How clients reach the Kafka `up` started (SASL_SSL with --kafka-security sasl_ssl).
    kafka_security: KafkaSecurity = PLAINTEXT

    def exports(self) -> dict[str, str]:
        """Variable → value, in a stable order; credentials only when known."""
        pairs = [
            (ENV_KAFKA, self.kafka_bootstrap), (ENV_REDIS, self.redis_url), (ENV_S3, self.s3_endpoint_url),
            (ENV_ACCESS_KEY, self.aws_access_key_id), (ENV_SECRET_KEY, self.aws_secret_access_key),
            (ENV_OFFLINE_URI, self.offline_uri), (ENV_CATALOG_URI, self.catalog_uri),
        ]
        if self.kafka_security != PLAINTEXT:
            pairs += [(var, getattr(self.kafka_security, name)) for name, var in KAFKA_SECURITY_ENV.items()]
        return {name: str(value) for name, value in pairs if value is not None}

    def apply(self, config: Config) -> Config:
        """``config`` with these endpoints filled in (what code in the same process uses)."""
        return replace(config, kafka_bootstrap=self.kafka_bootstrap, redis_url=self.redis_url,
                       s3_endpoint_url=self.s3_endpoint_url, aws_access_key_id=self.aws_access_key_id,
                       aws_secret_access_key=self.aws_secret_access_key, offline_uri=self.offline_uri,
                       catalog_uri=self.catalog_uri or config.catalog_uri)


@dataclass(frozen=True)
class ServiceStatus:
    service: str
    state: str  # "running" (ours), "external" (from the environment), "stopped", "stale"
    endpoint: str | None
    pid: int | None
    answers: bool
    detail: str = ""

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "-"
        answer = "answers" if self.answers else "does not answer" if self.endpoint else ""
        return f"{self.service:<6} {self.state:<9} {pid:<11} {self.endpoint or '-':<28} {answer} {self.detail}".rstrip()


def _configured(config: Config, service: str) -> str | None:
    return {"kafka": config.kafka_bootstrap, "redis": config.redis_url, "s3": config.s3_endpoint_url}[service]


def _is_external(config: Config, service: str, record: procs.ProcessRecord | None) -> bool:
    """True when the Config names an endpoint that is not one this state dir started.

    After `eval "$(featurestream up)"` the environment names our own servers; those stay
    ours (so `up` restarts one that died, and `status` shows its pid).
    """
    configured = _configured(config, service)
    return bool(configured) and (record is None or record.info.get("endpoint") != configured)


def _kafka_security(info: dict[str, str], fallback: KafkaSecurity = PLAINTEXT) -> KafkaSecurity:
    """How to reach a Kafka that `up` started: its pid file says whether it listens with SASL_SSL."""
    if info.get("security") == "sasl_ssl":
        return client_security(info["ca"], info["password_file"], info["mechanism"])
    return fallback


def _answers(service: str, info: dict[str, str], kafka_security: KafkaSecurity = PLAINTEXT) -> bool:
    if service == "kafka":
        return kafka.kafka_answers(KafkaConnection(info["endpoint"], _kafka_security(info, kafka_security)))
    if service == "redis":
        return redis_answers(info["endpoint"])
    return s3_answers(info["endpoint"], info.get("access_key"), info.get("secret_key"))


def _wait_ready(record: procs.ProcessRecord, deadline: float) -> None:
    while True:
        if not procs.is_running(record):
            raise ServerStartError(record.service, "the server exited during start-up", record.log_path,
                                   procs.log_tail(record.log_path))
        if _answers(record.service, record.info):
            return
        if time.monotonic() > deadline:
            raise ServerStartError(record.service, f"the server did not answer at {record.info['endpoint']} "
                                   f"within {READY_TIMEOUT[record.service]:.0f} s", record.log_path,
                                   procs.log_tail(record.log_path))
        time.sleep(0.25)


def _owner_service(port_name: str) -> str:
    return "kafka" if port_name in ("controller", "kafka-sasl") else port_name


def _wait_released(ports: dict[str, int], timeout_s: float = RELEASE_WAIT_S) -> bool:
    """Wait (bounded) until ``ports`` can be bound; True if they can. A port still taken at the
    deadline is left for _check_ports to report."""
    deadline = time.monotonic() + timeout_s
    while not all(port_is_free(port) for port in ports.values()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _check_ports(wanted: dict[str, int]) -> None:
    for service, port in wanted.items():
        if not port_is_free(port):
            raise PortInUseError(service, port, port_owner(port))


def up(config: Config, *, ports: StackPorts | None = None, layout: StackLayout | None = None,
       search_path: str | None = None, say: Say = _silent, kafka_security: str | None = None) -> Endpoints:
    """Start what is missing of the local stack and return the endpoints to export.

    ``search_path`` replaces PATH when looking for java, mvn, go and the server binaries
    (None: the process's PATH). ``kafka_security``: "plaintext" or "sasl_ssl" (a SASL_SSL client
    listener on ``ports.kafka_sasl``, see secure_kafka.py); None: as the running broker is, else plaintext.
    """
    if kafka_security is not None and kafka_security not in MODES:
        raise ValueError(f"kafka_security must be one of {', '.join(MODES)}; got {kafka_security!r}")
    ports = ports or StackPorts()
    layout = layout or StackLayout(config.state_dir)
    pidfiles = procs.PidFiles(layout.run_dir)

    running: dict[str, procs.ProcessRecord] = {}
    to_start: list[str] = []
    died: set[str] = set()  # recorded as ours, and no longer running
    for service in SERVICES:
        record = pidfiles.read(service)
        if _is_external(config, service, record):
            say(f"{service}: using {_configured(config, service)} from the environment")
            continue
        if record is not None and procs.is_running(record):
            running_mode = record.info.get("security", "plaintext")
            if service == "kafka" and kafka_security is not None and running_mode != kafka_security:
                raise StackError(f"kafka: already running (pid {record.pid}) with {running_mode}, not "
                                 f"{kafka_security}; stop it first (`featurestream down`)")
            say(f"{service}: already running (pid {record.pid}) at {record.info['endpoint']}")
            running[service] = record
            continue
        if record is not None:
            pidfiles.remove(service)  # the process is gone or is no longer ours
            died.add(service)
        to_start.append(service)

    # Everything that can fail before a server starts is checked first: tools, then ports.
    java = kafka.find_java(search_path) if "kafka" in to_start else ""
    redis_bin = find_redis_server(search_path) if "redis" in to_start else ""
    wanted_ports: dict[str, int] = {}
    secure = kafka_security == "sasl_ssl"
    if "kafka" in to_start:
        wanted_ports.update(kafka=ports.kafka, controller=ports.controller)
        if secure:
            wanted_ports["kafka-sasl"] = ports.kafka_sasl
    if "redis" in to_start:
        wanted_ports["redis"] = ports.redis
    if "s3" in to_start:
        wanted_ports["s3"] = ports.s3
    _wait_released({name: port for name, port in wanted_ports.items() if _owner_service(name) in died})
    _check_ports(wanted_ports)
    libs = layout.kafka_libs(kafka.KAFKA_VERSION)
    if "kafka" in to_start and not kafka.jars_present(libs):
        say(f"kafka: fetching Kafka {kafka.KAFKA_VERSION} jars into {libs} (once)")
        kafka.fetch_jars(libs, search_path=search_path)
    s3 = find_s3_server(layout.bin_dir, search_path=search_path) if "s3" in to_start else None

    started: list[procs.ProcessRecord] = []
    try:
        for service in to_start:
            record = _start(service, layout, ports, java=java, redis_bin=redis_bin, s3=s3, secure=secure)
            pidfiles.write(record)
            started.append(record)
            say(f"{service}: started pid {record.pid}, log {record.log_path}")
        for record in started:
            _wait_ready(record, time.monotonic() + READY_TIMEOUT[record.service])
            say(f"{record.service}: ready at {record.info['endpoint']}")
            running[record.service] = record
        offline_uri = config.offline_uri or DEFAULT_OFFLINE_URI
        if "s3" in running:
            info = running["s3"].info
            ensure_bucket(info["endpoint"], info["access_key"], info["secret_key"], bucket_of(offline_uri))
    except BaseException:
        for record in started:
            procs.stop(record)
            pidfiles.remove(record.service)
        raise

    def endpoint(service: str) -> str | None:
        return running[service].info["endpoint"] if service in running else _configured(config, service)

    s3_info = running["s3"].info if "s3" in running else {}
    return Endpoints(
        kafka_bootstrap=str(endpoint("kafka")),
        redis_url=str(endpoint("redis")),
        s3_endpoint_url=endpoint("s3"),
        aws_access_key_id=s3_info.get("access_key", config.aws_access_key_id),
        aws_secret_access_key=s3_info.get("secret_key", config.aws_secret_access_key),
        offline_uri=offline_uri,
        catalog_uri=config.catalog_uri or embedded_catalog_uri(layout.state_dir),
        kafka_security=_kafka_security(running["kafka"].info) if "kafka" in running else config.kafka_security,
    )


def _start(service: str, layout: StackLayout, ports: StackPorts, *, java: str, redis_bin: str,
           s3: S3Server | None, secure: bool = False) -> procs.ProcessRecord:
    data = layout.data_dir(service)
    data.mkdir(parents=True, exist_ok=True)
    log = layout.log_path(service)
    if service == "kafka":
        return _start_kafka(layout, ports, java, secure)
    if service == "redis":
        return procs.spawn("redis", redis_argv(redis_bin, ports.redis, data), cwd=data, log_path=log,
                           info={"endpoint": f"redis://127.0.0.1:{ports.redis}/0"})
    assert s3 is not None, "up() finds the S3 server before starting anything"
    s3.prepare(data)
    key, secret = s3.keys()
    return procs.spawn("s3", s3.argv(ports.s3, data), cwd=data, log_path=log,
                       info={"endpoint": f"http://127.0.0.1:{ports.s3}", "access_key": key,
                             "secret_key": secret, "kind": s3.kind})


def _start_kafka(layout: StackLayout, ports: StackPorts, java: str, secure: bool) -> procs.ProcessRecord:
    data = layout.data_dir("kafka")
    libs = layout.kafka_libs(kafka.KAFKA_VERSION)
    props = data / "server.properties"
    info = {"endpoint": f"127.0.0.1:{ports.kafka}", "controller_port": str(ports.controller)}
    listener, scram = None, ()
    mechanism = "PLAIN"
    if secure:
        files = SecureKafkaFiles(data)
        password = files.prepare()
        listener = files.listener(ports.kafka_sasl, password)
        scram = ((USER, password),)
        if not (data / "log" / "meta.properties").is_file():
            mechanism = "SCRAM-SHA-512"  # its credentials go into the new metadata log below
        info = {"endpoint": f"127.0.0.1:{ports.kafka_sasl}", "plaintext_endpoint": f"127.0.0.1:{ports.kafka}",
                "controller_port": str(ports.controller), "security": "sasl_ssl", "mechanism": mechanism,
                "ca": str(files.ca), "password_file": str(files.password_file)}
    props.write_text(kafka.render_server_properties(ports.kafka, ports.controller, data / "log", sasl_ssl=listener))
    kafka.format_storage(java, libs, props, data / "log", scram_users=scram)
    return procs.spawn("kafka", kafka.broker_argv(java, libs, props), cwd=data, log_path=layout.log_path("kafka"),
                       info=info)


def down(state_dir: Path, *, say: Say = _silent) -> list[str]:
    """Stop the processes `up` started from ``state_dir``; the services it stopped."""
    pidfiles = procs.PidFiles(StackLayout(state_dir).run_dir)
    stopped: list[str] = []
    # Reverse start order: clients of Kafka would not mind, but S3/Redis going first is harmless too.
    for service in reversed(SERVICES):
        record = pidfiles.read(service)
        if record is None:
            continue
        if procs.stop(record):
            say(f"{service}: stopped pid {record.pid}")
            stopped.append(service)
        else:
            say(f"{service}: pid {record.pid} was no longer running (or no longer ours); nothing to stop")
        pidfiles.remove(service)
    return stopped


def status(config: Config) -> list[ServiceStatus]:
    """What runs where: our processes from the state dir, or endpoints from the environment."""
    pidfiles = procs.PidFiles(StackLayout(config.state_dir).run_dir)
    result: list[ServiceStatus] = []
    for service in SERVICES:
        external = _configured(config, service)
        record = pidfiles.read(service)
        if external and _is_external(config, service, record):
            info = {"endpoint": external, "access_key": config.aws_access_key_id or "",
                    "secret_key": config.aws_secret_access_key or ""}
            # how Kafka is reached (never a secret), so a refused login is easy to place
            detail = (f"({config.kafka_security.describe()})"
                      if service == "kafka" and config.kafka_security != PLAINTEXT else "")
            result.append(ServiceStatus(service, "external", external, None,
                                        _answers(service, info, config.kafka_security), detail))
        elif record is None:
            result.append(ServiceStatus(service, "stopped", None, None, False))
        elif not procs.is_running(record):
            result.append(ServiceStatus(service, "stale", record.info.get("endpoint"), record.pid, False,
                                        "(pid file left by a process that is gone; `up` restarts it)"))
        else:
            detail = f"({record.info['kind']})" if "kind" in record.info else ""
            result.append(ServiceStatus(service, "running", record.info["endpoint"], record.pid,
                                        _answers(service, record.info, config.kafka_security), detail))
    return result
