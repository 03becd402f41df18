"""A Kafka broker with a SASL_SSL listener and a TLS-only Redis, as local processes for tests.

Both use certificates from tests/support/tls.py. The broker is the local stack's own (the same
jars, server.properties renderer and storage formatter) with :class:`SaslSslListener` added.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from featurestream.stack import kafka
from featurestream.stack.layout import StackLayout
from featurestream.stack.ports import free_port
from featurestream.stack.redis_server import find_redis_server, redis_argv
from featurestream.stack.tls import TlsFiles, make_tls_files
from streams.kafka_client import KafkaConnection, KafkaSecurity
from tests.support.wait import wait_for

PLAIN_USER = ("alice", "alice-secret")
SCRAM_USER = ("scrammy", "scram-secret-512")


@dataclass(frozen=True)
class SecureBroker:
    plaintext: str   # the inter-broker listener (admin set-up in tests only)
    sasl_ssl: str    # host:port of the SASL_SSL listener
    tls: TlsFiles
    log: Path

    def security(self, mechanism: str, **overrides: object) -> KafkaSecurity:
        """Working client settings for ``mechanism`` (PLAIN, SCRAM-SHA-512, OAUTHBEARER)."""
        base: dict[str, object] = {"protocol": "SASL_SSL", "sasl_mechanism": mechanism,
                                   "ssl_ca_location": str(self.tls.ca)}
        if mechanism == "PLAIN":
            base.update(sasl_username=PLAIN_USER[0], sasl_password=PLAIN_USER[1])
        elif mechanism == "SCRAM-SHA-512":
            base.update(sasl_username=SCRAM_USER[0], sasl_password=SCRAM_USER[1])
        else:
            base.update(oauthbearer_method="unsecured-jwt", oauthbearer_principal="featurestream-test")
        base.update(overrides)
        return KafkaSecurity(**base)  # type: ignore[arg-type]

    def connection(self, mechanism: str, **overrides: object) -> KafkaConnection:
        return KafkaConnection(self.sasl_ssl, self.security(mechanism, **overrides))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def secure_broker(directory: Path) -> Iterator[SecureBroker]:
    tls = make_tls_files(directory / "tls")
    java = kafka.find_java()
    libs = StackLayout(directory).kafka_libs(kafka.KAFKA_VERSION)  # the shared jar cache
    kafka.fetch_jars(libs)
    ports = set()
    while len(ports) < 3:
        ports.add(free_port())
    plain_port, controller_port, secure_port = sorted(ports)
    listener = kafka.SaslSslListener(secure_port, tls.keystore, tls.ca, plain_users=(PLAIN_USER,))
    props = directory / "server.properties"
    log_dir = directory / "kafka-log"
    props.write_text(kafka.render_server_properties(plain_port, controller_port, log_dir, sasl_ssl=listener))
    kafka.format_storage(java, libs, props, log_dir, scram_users=(SCRAM_USER,))
    log = directory / "kafka.out"
    with log.open("ab") as out:
        proc = subprocess.Popen(kafka.broker_argv(java, libs, props), cwd=directory, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    broker = SecureBroker(f"127.0.0.1:{plain_port}", f"127.0.0.1:{secure_port}", tls, log)
    try:
        wait_for(lambda: proc.poll() is not None or kafka.kafka_answers(broker.connection("PLAIN")),
                 timeout_s=90, interval_s=0.5, what="the SASL_SSL broker to answer")
        assert proc.poll() is None, f"the broker exited:\n{log.read_text()[-3000:]}"
        yield broker
    finally:
        _stop(proc)


@dataclass(frozen=True)
class TlsRedis:
    port: int
    tls: TlsFiles

    @property
    def url(self) -> str:
        """The URL form users write: rediss:// and the CA that signed the server's certificate."""
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls.ca}"


@contextmanager
def tls_redis(directory: Path, tls: TlsFiles) -> Iterator[TlsRedis]:
    """redis-server with TLS only (``--port 0``); clients need not present a certificate."""
    port = free_port()
    argv = redis_argv(find_redis_server(), 0, directory)
    argv[argv.index("--port") + 1] = "0"
    argv += ["--tls-port", str(port), "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
             "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no"]
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "redis.out").open("ab") as out:
        proc = subprocess.Popen(argv, cwd=directory, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = TlsRedis(port, tls)
    try:
        import redis

        def answers() -> bool:
            assert proc.poll() is None, (directory / "redis.out").read_text()[-2000:]
            try:
                return bool(redis.Redis.from_url(server.url, socket_timeout=1).ping())
            except redis.RedisError:
                return False

        wait_for(answers, timeout_s=15, interval_s=0.1, what="the TLS redis-server to answer")
        yield server
    finally:
        _stop(proc)
