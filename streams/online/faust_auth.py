"""The faust engine's Kafka security: :class:`KafkaSecurity` as faust credentials for aiokafka.

faust hands ``broker_credentials`` to aiokafka (``credentials_to_aiokafka_auth`` in faust's
aiokafka driver): ``SSLCredentials`` → ``security_protocol=SSL`` with an ``ssl_context``;
``SASLCredentials`` → PLAIN or SCRAM with a username and password (SASL_SSL when it carries an
ssl_context); ``OAuthCredentials`` → OAUTHBEARER with a token provider. aiokafka has no OpenID
Connect client of its own, so ``oidc`` gets a small client-credentials token provider here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import urllib.parse
import urllib.request

from aiokafka.abc import AbstractTokenProvider
from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from streams.kafka_client import KafkaSecurity, KafkaSecurityError

UNSECURED_JWT_LIFETIME_S = 3600


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context that checks the broker's certificate and host name, as librdkafka does."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_ca_location)
    if security.ssl_certificate_location:
        context.load_cert_chain(security.ssl_certificate_location, security.ssl_key_location,
                                password=security.ssl_key_password)
    return context


def faust_credentials(security: KafkaSecurity) -> CredentialsT | None:
    """faust's ``broker_credentials`` for ``security`` (None: plaintext)."""
    context = ssl_context(security) if security.uses_tls else None
    if not security.uses_sasl:
        return SSLCredentials(context) if context is not None else None
    if security.sasl_mechanism == "OAUTHBEARER":
        provider: AbstractTokenProvider = (UnsecuredJwtProvider(str(security.oauthbearer_principal))
                                           if security.oauthbearer_method == "unsecured-jwt"
                                           else OidcTokenProvider(security))
        return OAuthCredentials(oauth_cb=provider, ssl_context=context)
    # faust picks SASL_SSL when given a context, SASL_PLAINTEXT otherwise
    return SASLCredentials(username=security.sasl_username, password=security.sasl_password,
                           ssl_context=context, mechanism=security.sasl_mechanism)


def unsecured_jwt(principal: str, *, now: float | None = None, lifetime_s: int = UNSECURED_JWT_LIFETIME_S) -> str:
    """An unsigned JWT (``alg: none``) naming ``principal``, as librdkafka's
    ``enable.sasl.oauthbearer.unsecure.jwt`` makes; only brokers with the unsecured validator take it."""
    issued = int(time.time() if now is None else now)

    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part({'sub': principal, 'iat': issued, 'exp': issued + lifetime_s})}."


class UnsecuredJwtProvider(AbstractTokenProvider):
    def __init__(self, principal: str) -> None:
        self.principal = principal

    async def token(self) -> str:
        return unsecured_jwt(self.principal)


class OidcTokenProvider(AbstractTokenProvider):
    """OAuth 2 client credentials grant against the token endpoint, as librdkafka's
    ``sasl.oauthbearer.method=oidc`` does; a fresh token for each new connection."""

    def __init__(self, security: KafkaSecurity, timeout_s: float = 10.0) -> None:
        self.security = security
        self.timeout_s = timeout_s

    async def token(self) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self.fetch)

    def fetch(self) -> str:
        s = self.security
        form = {"grant_type": "client_credentials"}
        if s.oauthbearer_scope:
            form["scope"] = s.oauthbearer_scope
        basic = base64.b64encode(f"{s.oauthbearer_client_id}:{s.oauthbearer_client_secret}".encode()).decode()
        request = urllib.request.Request(str(s.oauthbearer_token_endpoint_url),
                                         data=urllib.parse.urlencode(form).encode(), method="POST",
                                         headers={"Authorization": f"Basic {basic}",
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (configured URL)
            body = json.loads(response.read())
        token = body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise KafkaSecurityError("oauthbearer_token_endpoint_url", f"the token endpoint "
                                     f"{s.oauthbearer_token_endpoint_url} answered without an access_token")
        return str(token)
