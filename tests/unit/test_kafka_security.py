"""Kafka TLS/SASL settings: validation, the librdkafka and faust/aiokafka mappings, Config's variables."""

from __future__ import annotations

import base64
import json
import pickle
from pathlib import Path

import pytest

from featurestream.config import KAFKA_SECURITY_ENV, Config, ConfigError
from featurestream.stack.kafka import SaslSslListener, render_server_properties
from streams.kafka_client import (
    PLAINTEXT,
    KafkaConnection,
    KafkaSecurity,
    KafkaSecurityError,
    confluent_conf,
    connection,
)


@pytest.fixture
def ca(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def scram(ca: str, **changes: object) -> KafkaSecurity:
    values: dict[str, object] = {"protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u",
                                 "sasl_password": "pw", "ssl_ca_location": ca}
    return KafkaSecurity(**{**values, **changes})  # type: ignore[arg-type]


def test_plaintext_adds_nothing_to_a_client_configuration():
    assert confluent_conf("h:1", {"group.id": "g"}) == {"bootstrap.servers": "h:1", "group.id": "g"}
    assert connection("a:1, b:2").servers == ["a:1", "b:2"]


def test_sasl_ssl_scram_maps_to_librdkafka(ca):
    conn = KafkaConnection("h:1", scram(ca, protocol="sasl_ssl", sasl_mechanism="scram-sha-512"))
    assert confluent_conf(conn, {"acks": "all"}) == {
        "bootstrap.servers": "h:1", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "u", "sasl.password": "pw", "ssl.ca.location": ca, "acks": "all"}
    assert str(conn) == "h:1"  # "Kafka at ..." messages show the brokers only


def test_oauthbearer_oidc_and_unsecured_jwt_map_to_librdkafka():
    oidc = KafkaSecurity("SASL_SSL", "OAUTHBEARER", oauthbearer_method="oidc", oauthbearer_client_id="id",
                         oauthbearer_client_secret="s", oauthbearer_token_endpoint_url="https://idp/token",
                         oauthbearer_scope="kafka")
    assert oidc.librdkafka() == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER", "sasl.oauthbearer.method": "oidc",
        "sasl.oauthbearer.token.endpoint.url": "https://idp/token", "sasl.oauthbearer.client.id": "id",
        "sasl.oauthbearer.client.secret": "s", "sasl.oauthbearer.scope": "kafka"}
    jwt = KafkaSecurity("SASL_PLAINTEXT", "OAUTHBEARER", oauthbearer_method="unsecured-jwt",
                        oauthbearer_principal="alice")
    assert jwt.librdkafka()["enable.sasl.oauthbearer.unsecure.jwt"] is True
    assert jwt.librdkafka()["sasl.oauthbearer.config"] == "principal=alice"


def test_mutual_tls_needs_certificate_and_key(ca, tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    sec = KafkaSecurity("SSL", ssl_ca_location=ca, ssl_certificate_location=str(cert), ssl_key_location=str(key))
    assert sec.librdkafka()["ssl.certificate.location"] == str(cert)
    with pytest.raises(KafkaSecurityError) as info:
        KafkaSecurity("SSL", ssl_certificate_location=str(cert))
    assert info.value.setting == "ssl_key_location"


@pytest.mark.parametrize(("changes", "setting", "words"), [
    ({"protocol": "TLS"}, "protocol", "unknown Kafka security protocol 'TLS'"),
    ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism", "unsupported SASL mechanism 'GSSAPI'"),
    ({"sasl_mechanism": None}, "sasl_mechanism", "needs a SASL mechanism"),
    ({"sasl_username": None}, "sasl_username", "SCRAM-SHA-512 needs a username"),
    ({"sasl_password": ""}, "sasl_password", "needs a password"),
    ({"ssl_ca_location": "/no/such/ca.pem"}, "ssl_ca_location", "no such file '/no/such/ca.pem'"),
    ({"protocol": "SASL_PLAINTEXT"}, "ssl_ca_location", "does not use TLS"),
    ({"sasl_mechanism": "OAUTHBEARER"}, "oauthbearer_method", "needs a token method"),
    ({"sasl_mechanism": "OAUTHBEARER", "oauthbearer_method": "oidc", "oauthbearer_client_id": "i",
      "oauthbearer_client_secret": "s"}, "oauthbearer_token_endpoint_url", "needs oauthbearer_token_endpoint_url"),
    ({"sasl_mechanism": "OAUTHBEARER", "oauthbearer_method": "unsecured-jwt"}, "oauthbearer_principal",
     "needs oauthbearer_principal"),
])
def test_bad_settings_name_the_setting(ca, changes, setting, words):
    with pytest.raises(KafkaSecurityError) as info:
        scram(ca, **changes)
    assert info.value.setting == setting and words in str(info.value)


def test_a_mechanism_without_sasl_and_a_bad_bootstrap_are_refused():
    with pytest.raises(KafkaSecurityError, match="use SASL_SSL"):
        KafkaSecurity("SSL", "PLAIN")
    with pytest.raises(KafkaSecurityError, match="host:port"):
        KafkaConnection(" , ")


def test_secrets_are_never_shown(ca):
    sec = scram(ca, sasl_password="hunter2")
    conn = KafkaConnection("h:1", sec)
    for text in (repr(sec), repr(conn), str(conn), sec.describe(), repr(Config(kafka_security=sec))):
        assert "hunter2" not in text, text
    assert sec.describe() == f"SASL_SSL, SCRAM-SHA-512 as u, CA {ca}"


def test_config_reads_every_setting_and_children_get_them(ca, tmp_path):
    env = {"FEATURESTREAM_KAFKA_BOOTSTRAP": "h:1", "FEATURESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "FEATURESTREAM_KAFKA_SASL_MECHANISM": "PLAIN", "FEATURESTREAM_KAFKA_SASL_USERNAME": "u",
           "FEATURESTREAM_KAFKA_SASL_PASSWORD": "pw", "FEATURESTREAM_KAFKA_SSL_CA_LOCATION": ca}
    cfg = Config.from_env(env)
    assert cfg.kafka() == KafkaConnection("h:1", KafkaSecurity("SASL_SSL", "PLAIN", "u", "pw", ca))
    assert {k: v for k, v in cfg.to_env().items() if k in env} == env
    assert Config.from_env({**cfg.to_env(), "FEATURESTREAM_STATE_DIR": str(cfg.state_dir)}) == cfg
    assert set(KAFKA_SECURITY_ENV.values()) >= set(env) - {"FEATURESTREAM_KAFKA_BOOTSTRAP"}
    assert "FEATURESTREAM_KAFKA_SECURITY_PROTOCOL" not in Config(kafka_bootstrap="h:1").to_env()


@pytest.mark.parametrize(("change", "variable"), [
    ({"FEATURESTREAM_KAFKA_SASL_MECHANISM": "KERBEROS"}, "FEATURESTREAM_KAFKA_SASL_MECHANISM"),
    ({"FEATURESTREAM_KAFKA_SASL_PASSWORD": ""}, "FEATURESTREAM_KAFKA_SASL_PASSWORD"),
    ({"FEATURESTREAM_KAFKA_SSL_CA_LOCATION": "/missing.pem"}, "FEATURESTREAM_KAFKA_SSL_CA_LOCATION"),
    ({"FEATURESTREAM_KAFKA_SECURITY_PROTOCOL": "HTTPS"}, "FEATURESTREAM_KAFKA_SECURITY_PROTOCOL"),
])
def test_config_errors_name_the_variable(ca, change, variable):
    env = {"FEATURESTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "FEATURESTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
           "FEATURESTREAM_KAFKA_SASL_USERNAME": "u", "FEATURESTREAM_KAFKA_SASL_PASSWORD": "pw",
           "FEATURESTREAM_KAFKA_SSL_CA_LOCATION": ca}
    with pytest.raises(ConfigError, match=variable):
        Config.from_env({**env, **change})


def test_a_connection_survives_the_apply_childs_pickled_first_frame(ca):
    conn = KafkaConnection("h:1", scram(ca))
    assert pickle.loads(pickle.dumps(conn)) == conn


def test_faust_credentials_follow_the_same_settings():
    from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials
    from faust.types.auth import AuthProtocol

    from streams.online.faust_auth import UnsecuredJwtProvider, faust_credentials

    assert faust_credentials(PLAINTEXT) is None
    creds = faust_credentials(KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "u", "pw"))
    assert isinstance(creds, SASLCredentials) and creds.protocol == AuthProtocol.SASL_PLAINTEXT
    assert (creds.mechanism.value, creds.username, creds.password) == ("SCRAM-SHA-512", "u", "pw")
    tls = faust_credentials(KafkaSecurity("SSL"))  # system CAs
    assert isinstance(tls, SSLCredentials) and tls.protocol == AuthProtocol.SSL
    oauth = faust_credentials(KafkaSecurity("SASL_SSL", "OAUTHBEARER", oauthbearer_method="unsecured-jwt",
                                            oauthbearer_principal="p"))
    assert isinstance(oauth, OAuthCredentials) and oauth.protocol == AuthProtocol.SASL_SSL
    assert isinstance(oauth.oauth_cb, UnsecuredJwtProvider)


def test_unsecured_jwt_is_what_kafkas_unsecured_validator_reads():
    from streams.online.faust_auth import unsecured_jwt

    header, payload, signature = unsecured_jwt("alice", now=1000, lifetime_s=60).split(".")

    def decode(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    assert decode(header) == {"alg": "none"} and signature == ""
    assert decode(payload) == {"sub": "alice", "iat": 1000, "exp": 1060}


def test_broker_properties_with_a_sasl_ssl_listener(tmp_path):
    listener = SaslSslListener(9093, tmp_path / "ks.pem", tmp_path / "ca.pem", plain_users=(("alice", "pw"),))
    props = dict(line.split("=", 1) for line in
                 render_server_properties(9092, 9094, tmp_path / "log", sasl_ssl=listener).splitlines())
    assert props["listeners"].endswith(",SASL_SSL://127.0.0.1:9093")
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9093"
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-512,OAUTHBEARER"
    assert 'user_alice="pw"' in props["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert "sasl.enabled.mechanisms" not in render_server_properties(9092, 9094, tmp_path / "log")


def test_brokers_that_answered_are_remembered_with_their_security_settings(ca):
    from streams.contact import has_answered, mark_answered

    secure = KafkaConnection("answered.example:9093", scram(ca))
    mark_answered(secure)
    assert has_answered(KafkaConnection("answered.example:9093", scram(ca)))
    # the same address spoken to in plaintext (or with another login) has not answered: first-contact wait
    assert not has_answered("answered.example:9093")
    assert not has_answered(KafkaConnection("answered.example:9093", scram(ca, sasl_password="other")))
    mark_answered("plain.example:9092")
    assert has_answered(KafkaConnection("plain.example:9092"))
