"""`featurestream up --kafka-security sasl_ssl`: the local broker with a SASL_SSL client listener.

The same broker the tests use (``kafka.SaslSslListener`` beside the plaintext inter-broker
listener), with files of its own under ``<state dir>/data/kafka/``: a throw-away CA and a
certificate for 127.0.0.1 (``tls/``), and one user, ``featurestream``, whose password is made once
(``sasl-password``, mode 0600). The user logs in with SCRAM-SHA-512 (its credentials are written when
the storage is first formatted) or PLAIN. A broker whose storage was formatted before, without the
SCRAM user, is offered PLAIN only.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from featurestream.stack.kafka import SaslSslListener
from featurestream.stack.tls import make_tls_files
from streams.kafka_client import KafkaSecurity

USER = "featurestream"
MODES = ("plaintext", "sasl_ssl")


@dataclass(frozen=True)
class SecureKafkaFiles:
    data_dir: Path

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.tls_dir / "server-keystore.pem"

    @property
    def password_file(self) -> Path:
        return self.data_dir / "sasl-password"

    def prepare(self) -> str:
        """Make the certificates and the password if missing; returns the password."""
        if not (self.ca.is_file() and self.keystore.is_file()):
            make_tls_files(self.tls_dir)
        if not self.password_file.is_file():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def listener(self, port: int, password: str) -> SaslSslListener:
        return SaslSslListener(port, self.keystore, self.ca, plain_users=((USER, password),))


def client_security(ca: str, password_file: str, mechanism: str) -> KafkaSecurity:
    """The settings a client of the local SASL_SSL listener needs (what `up` exports)."""
    return KafkaSecurity(protocol="SASL_SSL", sasl_mechanism=mechanism, sasl_username=USER,
                         sasl_password=Path(password_file).read_text().strip(), ssl_ca_location=ca)
