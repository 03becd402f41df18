"""Kafka over SASL_SSL and Redis over TLS, end to end, with certificates this module generates.

One broker (module scope) has a SASL_SSL listener with PLAIN, SCRAM-SHA-512 and OAUTHBEARER
(unsecured JWTs); one redis-server speaks only TLS. S3 and the catalog are the session stack's.
Every Kafka client here — the SDK's publisher and registry, both processor engines, the sink,
the CLI's status — reaches the broker only through Config's Kafka security settings.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from featurestream.config import Config, ConfigError
from featurestream.sdk import FeatureStore
from schemas.errors import ServiceUnavailableError
from streams.admin import KafkaAuthenticationError
from streams.kafka_client import KafkaConnection, KafkaSecurity
from streams.online.faust_auth import unsecured_jwt
from tests.integration.helpers import customer, customers_group
from tests.integration.procs import Proc, stack_env
from tests.support.secure_servers import SecureBroker, TlsRedis, secure_broker, tls_redis
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> SecureBroker:
    with secure_broker(tmp_path_factory.mktemp("sasl-ssl-kafka")) as b:
        yield b


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory: pytest.TempPathFactory, broker: SecureBroker) -> TlsRedis:
    with tls_redis(tmp_path_factory.mktemp("tls-redis"), broker.tls) as r:
        yield r


def _config(stack: Config, broker: SecureBroker, redis_tls: TlsRedis, mechanism: str, **overrides) -> Config:
    """The session stack's S3 and catalog; Kafka and Redis only over TLS."""
    return replace(stack, kafka_bootstrap=broker.sasl_ssl, kafka_security=broker.security(mechanism, **overrides),
                   redis_url=redis_tls.url)


def _processor(config: Config, engine: str, log: Path) -> Proc:
    return Proc(config, ["process", "--engine", engine, "--metrics-port", "0", "--log-level", "warning"], log)


def _latest(store: FeatureStore, group: str, want: dict[str, int]) -> bool:
    return all((r := store.get_record(group, rid)) is not None and r["age"] == age for rid, age in want.items())


@pytest.mark.timeout(240)
# Each mechanism and each engine once (the other pairs passed too, at ~30 s each: the module keeps to
# a few minutes); OAUTHBEARER below drives the faust engine as well.
@pytest.mark.parametrize(("mechanism", "engine"), [("PLAIN", "confluent"), ("SCRAM-SHA-512", "faust")])
def test_whole_flow_over_sasl_ssl_and_tls_redis(stack, broker, redis_tls, unique_name, tmp_path, mechanism, engine):
    config = _config(stack, broker, redis_tls, mechanism)
    assert config.to_env()["FEATURESTREAM_KAFKA_SASL_PASSWORD"], "children get the credentials"
    procs = [_processor(config, engine, tmp_path / "processor.log"),
             Proc(config, ["sink", "--metrics-port", "0", "--log-level", "warning", "--max-age-s", "1",
                           "--compact-every-s", "0"], tmp_path / "sink.log")]
    try:
        with FeatureStore(config) as store:
            g = store.create_feature_group(customers_group(unique_name("sec"), partitions=2))
            rows = [customer(i % 10, second=i, age=i) for i in range(40)]  # each id's last row wins
            assert store.ingest(g.name, rows, progress=False).published == 40
            store.put_record(g.name, customer(3, second=3000, age=99))
            want = {f"c{i}": 30 + i for i in range(10)} | {"c3": 99}
            wait_for(lambda: all(p.alive() for p in procs) and _latest(store, g.name, want), timeout_s=120,
                     interval_s=0.2, what=f"the {engine} processor to serve the latest values "
                                          f"({[p.tail(5) for p in procs]})")
            count = f'SELECT count(*) AS n FROM "{g.name}"'
            wait_for(lambda: store.query(count).column("n")[0].as_py() == 41, timeout_s=120, interval_s=1,
                     what=f"41 offline rows committed by the sink ({procs[1].tail(5)})")
            assert store.query(f'SELECT age FROM "{g.name}" WHERE customer_id = \'c3\' ORDER BY age DESC '
                               'LIMIT 1').column("age")[0].as_py() == 99
        status = subprocess.run([sys.executable, "-m", "featurestream.cli", "status"], env=stack_env(config),
                                capture_output=True, text=True, timeout=60)
        kafka_line = next(line for line in status.stdout.splitlines() if line.startswith("kafka"))
        assert "answers" in kafka_line and "does not" not in kafka_line, status.stdout + status.stderr
        assert f"(SASL_SSL, {mechanism} as " in kafka_line, kafka_line
        assert g.name in status.stdout, status.stdout + status.stderr
        assert broker.security(mechanism).sasl_password not in status.stdout + status.stderr
    finally:
        for p in procs:
            p.stop()


@pytest.fixture(scope="module")
def token_endpoint() -> Iterator[tuple[str, list[str]]]:
    """A local OAuth 2 token endpoint (client credentials grant, client "fs" / "fs-secret") handing out
    unsigned JWTs, which the broker's unsecured validator accepts; and the clients it served."""
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
            basic = "Basic " + base64.b64encode(b"fs:fs-secret").decode()
            if self.headers.get("Authorization") != basic or body.get("grant_type") != ["client_credentials"]:
                self.send_response(401)
                self.end_headers()
                return
            # librdkafka's libcurl sends no User-Agent; the faust engine's provider is urllib's
            served.append("aiokafka" if self.headers.get("User-Agent", "").startswith("Python-urllib") else "librdkafka")
            answer = json.dumps({"access_token": unsecured_jwt("oidc-client"), "token_type": "bearer",
                                 "expires_in": 3600}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/token", served
    finally:
        server.shutdown()
        server.server_close()


OAUTH_SETTINGS = {
    "unsecured-jwt": {},
    "oidc": {"oauthbearer_method": "oidc", "oauthbearer_principal": None, "oauthbearer_client_id": "fs",
             "oauthbearer_client_secret": "fs-secret"},
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", OAUTH_SETTINGS)
def test_oauthbearer_round_trip_with_confluent_kafka_and_faust(stack, broker, redis_tls, token_endpoint,
                                                              unique_name, tmp_path, method):
    url, served = token_endpoint
    settings = OAUTH_SETTINGS[method] | ({"oauthbearer_token_endpoint_url": url} if method == "oidc" else {})
    config = _config(stack, broker, redis_tls, "OAUTHBEARER", **settings)
    served.clear()
    with FeatureStore(config) as store:
        g = store.create_feature_group(customers_group(unique_name("oauth"), partitions=1))
        store.put_record(g.name, customer(1, age=41))  # confluent-kafka producer
        read = store.stream(g.name, start="beginning", max_records=1, idle_timeout_s=15)  # and consumer
        assert [r.message.record["age"] for r in read] == [41]
        proc = _processor(config, "faust", tmp_path / "faust.log")  # aiokafka with an unsecured JWT
        try:
            wait_for(lambda: proc.alive() and _latest(store, g.name, {"c1": 41}), timeout_s=90, interval_s=0.2,
                     what=f"the faust processor over OAUTHBEARER to serve c1 ({proc.tail(10)})")
        finally:
            proc.stop()
    if method == "oidc":  # both clients fetched tokens: librdkafka (libcurl) and the faust engine's
        assert set(served) == {"librdkafka", "aiokafka"}, served


# ---------------------------------------------------------------------------------------- bad input
def _refused(target: KafkaConnection, config: Config) -> tuple[Exception, float]:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError) as info, FeatureStore(replace(config, kafka_bootstrap=target.bootstrap,
                                                                             kafka_security=target.security)) as fs:
        fs.list_feature_groups()
    return info.value, time.monotonic() - started


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_password_is_an_authentication_error_at_once(stack, broker, mechanism):
    error, took = _refused(broker.connection(mechanism, sasl_password="not-the-password"), stack)
    assert isinstance(error, KafkaAuthenticationError), error
    assert "authentication failed" in str(error).lower() and mechanism in str(error), error
    assert "not-the-password" not in str(error)
    assert took < 10, f"took {took:.1f} s"


def test_plaintext_client_on_the_sasl_ssl_listener_is_refused_in_bounded_time(stack, broker):
    error, took = _refused(KafkaConnection(broker.sasl_ssl), stack)
    # librdkafka gives no reason here (the broker drops the connection), so the message names the
    # protocol this client used and asks the question
    assert "(PLAINTEXT)" in str(error) and "does it speak this security protocol" in str(error), error
    assert took < 15, f"took {took:.1f} s"


def test_a_ca_that_did_not_sign_the_broker_fails_the_tls_handshake(stack, broker):
    error, took = _refused(broker.connection("PLAIN", ssl_ca_location=str(broker.tls.other_ca)), stack)
    assert "certificate verify failed" in str(error), error
    assert took < 15, f"took {took:.1f} s"


def test_missing_ca_file_and_unknown_mechanism_stop_the_cli_naming_the_variable(stack, broker, tmp_path):
    env = {**stack_env(stack), "FEATURESTREAM_KAFKA_BOOTSTRAP": broker.sasl_ssl,
           "FEATURESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FEATURESTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
           "FEATURESTREAM_KAFKA_SASL_USERNAME": "alice", "FEATURESTREAM_KAFKA_SASL_PASSWORD": "alice-secret",
           "FEATURESTREAM_KAFKA_SSL_CA_LOCATION": str(tmp_path / "nowhere.pem")}
    for change, variable in (({}, "FEATURESTREAM_KAFKA_SSL_CA_LOCATION"),
                             ({"FEATURESTREAM_KAFKA_SSL_CA_LOCATION": str(broker.tls.ca),
                               "FEATURESTREAM_KAFKA_SASL_MECHANISM": "GSSAPI"}, "FEATURESTREAM_KAFKA_SASL_MECHANISM")):
        run = subprocess.run([sys.executable, "-m", "featurestream.cli", "group", "list"], env={**env, **change},
                             capture_output=True, text=True, timeout=60)
        assert run.returncode != 0 and variable in run.stderr, run.stderr
        assert "alice-secret" not in run.stderr + run.stdout


def test_kafka_security_from_env_reaches_a_real_broker(broker):
    """Config.from_env → KafkaConnection: the variables users set are the ones that work."""
    env = {"FEATURESTREAM_KAFKA_BOOTSTRAP": broker.sasl_ssl, "FEATURESTREAM_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
           "FEATURESTREAM_KAFKA_SASL_MECHANISM": "scram-sha-512", "FEATURESTREAM_KAFKA_SASL_USERNAME": "scrammy",
           "FEATURESTREAM_KAFKA_SASL_PASSWORD": "scram-secret-512",
           "FEATURESTREAM_KAFKA_SSL_CA_LOCATION": str(broker.tls.ca)}
    from featurestream.stack.kafka import kafka_answers

    config = Config.from_env(env)
    assert config.kafka().security == KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "scrammy", "scram-secret-512",
                                                    str(broker.tls.ca))
    assert kafka_answers(config.kafka(), timeout=10)
    with pytest.raises(ConfigError):
        Config.from_env({**env, "FEATURESTREAM_KAFKA_SASL_USERNAME": ""})


def test_redis_tls_needs_the_ca(redis_tls):
    from sinks.online.connect import connect

    assert connect(redis_tls.url).ping()
    without_ca = redis_tls.url.split("?")[0]
    with pytest.raises(ServiceUnavailableError, match="did not answer"):
        connect(without_ca, timeout_s=3)
    plain = without_ca.replace("rediss://", "redis://")
    with pytest.raises(ServiceUnavailableError):
        connect(plain, timeout_s=3)
