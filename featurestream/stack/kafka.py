"""Single-node Apache Kafka 4 (KRaft, combined broker + controller) from Maven Central jars."""

from __future__ import annotations

import base64
import logging
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from featurestream.stack import maven
from featurestream.stack.errors import StackError, ToolMissingError
from streams.kafka_client import KafkaTarget, confluent_conf

KAFKA_VERSION = "4.1.1"  # keep equal to <kafka.version> in deploy/local/pom.xml
JVM_HEAP = ["-Xms256m", "-Xmx768m"]  # two cores and other tenants: keep the broker modest
POM_PATH = Path(__file__).resolve().parents[2] / "deploy" / "local" / "pom.xml"

# librdkafka logs every refused connection while the broker boots; route those lines to
# a logger that drops them, readiness is decided by the calls below, not by the noise.
_quiet = logging.getLogger("featurestream.stack.kafka.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@dataclass(frozen=True)
class SaslSslListener:
    """A second client listener, SASL_SSL with PLAIN, SCRAM-SHA-512 and OAUTHBEARER, beside the
    plaintext one (which stays the inter-broker listener). PEM files: Kafka 4 reads them directly
    (``ssl.keystore.type=PEM``), so no Java keystore is needed: ``keystore`` holds the broker's
    unencrypted PKCS#8 key and its certificate chain, ``ca`` the certificates clients are checked by.

    PLAIN users are the ``plain_users`` below (name → password); SCRAM users are written into the
    metadata log when the storage is formatted (:func:`format_storage` ``scram_users``). OAUTHBEARER
    uses Kafka's default unsecured validator: unsigned JWTs (development and tests only)."""

    port: int
    keystore: Path
    ca: Path
    plain_users: tuple[tuple[str, str], ...] = ()

    def properties(self) -> dict[str, str]:
        users = " ".join(f'user_{name}="{password}"' for name, password in self.plain_users)
        return {
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512,OAUTHBEARER",
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config":
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca),
        }


def render_server_properties(kafka_port: int, controller_port: int, log_dir: Path, node_id: int = 1,
                             sasl_ssl: SaslSslListener | None = None) -> str:
    """The broker's server.properties: one node that is its own controller, loopback only; with
    ``sasl_ssl``, a SASL_SSL client listener as well."""
    for name, port in (("kafka", kafka_port), ("controller", controller_port)):
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise ValueError(f"{name} port must be an integer in 1..65535, got {port!r}")
    if kafka_port == controller_port:
        raise ValueError(f"kafka and controller ports must differ, both are {kafka_port}")
    settings = {
        "process.roles": "broker,controller",
        "node.id": str(node_id),
        # Static quorum of one: simplest KRaft bootstrap, formatted without --standalone.
        "controller.quorum.voters": f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{kafka_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        # One broker: internal topics cannot have more than one replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Tests join consumer groups constantly; the default 3 s delay would slow each one.
        "group.initial.rebalance.delay.ms": "0",
        # The registry creates topics explicitly, with their partitions and cleanup policy.
        "auto.create.topics.enable": "false",
    }
    if sasl_ssl is not None:
        secure = f"SASL_SSL://127.0.0.1:{sasl_ssl.port}"
        settings["listeners"] += f",{secure}"
        settings["advertised.listeners"] += f",{secure}"
        settings["listener.security.protocol.map"] += ",SASL_SSL:SASL_SSL"
        settings.update(sasl_ssl.properties())
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def new_cluster_id() -> str:
    """A KRaft cluster id as Kafka's Uuid prints it: 16 random bytes, base64url, no padding."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka rejects ids that look like a CLI flag
            return text


def jars_present(libs_dir: Path, version: str = KAFKA_VERSION) -> bool:
    return (libs_dir / f"kafka_2.13-{version}.jar").is_file() and any(libs_dir.glob("slf4j-simple-*.jar"))


def fetch_jars(libs_dir: Path, *, pom: Path = POM_PATH, search_path: str | None = None) -> bool:
    """Download the broker's jars with Maven unless cached; True when it downloaded."""
    return maven.copy_dependencies(pom, libs_dir, complete=jars_present, what=f"kafka {KAFKA_VERSION}",
                                   if_missing=" or set FEATURESTREAM_KAFKA_BOOTSTRAP to an existing broker",
                                   search_path=search_path)


def find_java(search_path: str | None = None) -> str:
    java = shutil.which("java", path=search_path)
    if java is None:
        raise ToolMissingError(
            "kafka: `java` was not found on PATH; the local Kafka broker needs a Java 17+ runtime. "
            "Install one (Debian: apt-get install openjdk-17-jre-headless) or set "
            "FEATURESTREAM_KAFKA_BOOTSTRAP to an existing broker."
        )
    return java


def format_storage(java: str, libs_dir: Path, properties: Path, log_dir: Path,
                   scram_users: tuple[tuple[str, str], ...] = ()) -> None:
    """Format the KRaft metadata log once; an already formatted dir is kept (data survives).
    ``scram_users`` (name, password) get SCRAM-SHA-512 credentials in the new log."""
    if (log_dir / "meta.properties").is_file():
        return
    scram = [arg for name, password in scram_users
             for arg in ("--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]")]
    result = subprocess.run(
        [java, *JVM_HEAP, "-cp", f"{libs_dir}/*", "kafka.tools.StorageTool", "format",
         "-t", new_cluster_id(), "-c", str(properties), *scram],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise StackError(f"kafka: formatting the storage in {log_dir} failed (exit {result.returncode}):\n{tail}")


def broker_argv(java: str, libs_dir: Path, properties: Path) -> list[str]:
    return [java, *JVM_HEAP, "-cp", f"{libs_dir}/*", "kafka.Kafka", str(properties)]


def kafka_answers(bootstrap: KafkaTarget, timeout: float = 3.0) -> bool:
    """True when a broker at ``bootstrap`` (with its TLS/SASL settings) returns cluster metadata within
    ``timeout``."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(confluent_conf(bootstrap, {"logger": _quiet}))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return bool(metadata.brokers)
