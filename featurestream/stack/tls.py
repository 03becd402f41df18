"""A throw-away certificate authority and a server certificate for 127.0.0.1, made with the openssl CLI
(the venv has no `cryptography`; openssl is on every machine that runs the stack). Used by
`featurestream up --kafka-security sasl_ssl` and by the tests' secure servers."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from featurestream.stack.errors import StackError


@dataclass(frozen=True)
class TlsFiles:
    ca: Path           # the CA certificate clients trust
    cert: Path         # the server certificate (SAN IP:127.0.0.1, DNS:localhost), signed by the CA
    key: Path          # its unencrypted PKCS#8 key
    keystore: Path     # key + certificate in one PEM (Kafka's ssl.keystore.type=PEM)
    other_ca: Path     # a CA that signed nothing here (a client trusting it must be refused)


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if not openssl:
        raise StackError("the openssl CLI is needed to make the local broker's TLS certificates; install "
                         "openssl (apt-get install openssl)")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise StackError(f"openssl {args[0]} failed making TLS certificates in {cwd} (exit {result.returncode}): "
                         f"{result.stderr.strip()[-500:]}")


def _self_signed_ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", f"/CN=featurestream test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=directory)
    return key, cert


def make_tls_files(directory: Path) -> TlsFiles:
    """A new CA, a second CA that signed nothing, and a server certificate for 127.0.0.1 in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _self_signed_ca(directory, "ca")
    _, other_ca = _self_signed_ca(directory, "other-ca")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=127.0.0.1", cwd=directory)
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "2", "-extfile", str(ext), cwd=directory)
    # openssl 3 writes PKCS#8 ("BEGIN PRIVATE KEY") already; Kafka's PEM keystore needs exactly that.
    keystore = directory / "server-keystore.pem"
    keystore.write_text(key.read_text() + cert.read_text())
    return TlsFiles(ca=ca, cert=cert, key=key, keystore=keystore, other_ca=other_ca)
