"""AWS Signature Version 4 verification, pure: no I/O, no clock, no server.

The HTTP front door hands :func:`verify` what arrived on the wire (method, raw path, raw
query, headers, body) plus the configured secrets and the current time; it answers with the
access key that signed the request or raises :class:`AuthError` carrying the error code an
AWS service would answer with, so an AWS SDK shows the caller the same error it would show
against AWS. Rebuilt from the public SigV4 specification; unit tests check it against
botocore's signer, which is what every AWS SDK agrees with.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "sagemaker"  # both boto3 clients (runtime and control plane) sign with this name
SERVICES = (SERVICE, "athena")  # ... and the Athena-compatible API's clients with this one
MAX_SKEW = timedelta(minutes=15)
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+)\s*,\s*SignedHeaders=(?P<signed>[^,\s]+)\s*,"
    r"\s*Signature=(?P<sig>[0-9a-fA-F]+)\s*$")


class AuthError(Exception):
    """A request AWS would refuse with 403 and ``code`` (the x-amzn-ErrorType it sends)."""

    def __init__(self, code: str, message: str, status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class SignedRequest:
    """What arrived: ``headers`` as (name, value) pairs in any case, ``path``/``query`` still percent-encoded."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: bytes


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


@lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The HMAC chain; cached because it changes once a day per key and region."""
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


@lru_cache(maxsize=256)
def canonical_path(raw_path: str) -> str:
    """The URI as SDKs canonicalise it for non-S3 services: dot segments removed, then
    percent-encoded once more (the wire path is already encoded, so it ends up double encoded).
    Cached: a server's requests name a few paths (one per group and operation) over and over."""
    path = raw_path or "/"
    normalized = posixpath.normpath(path) if path not in ("", "/") else "/"
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    if normalized.startswith("//"):
        normalized = "/" + normalized.lstrip("/")
    return quote(normalized, safe="/~")


def canonical_query(raw_query: str) -> str:
    """Each key and value decoded and re-encoded the AWS way (RFC 3986 unreserved kept), sorted."""
    if not raw_query:
        return ""
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((quote(unquote(key), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_headers(headers: Sequence[tuple[str, str]], signed: Sequence[str]) -> str:
    by_name: dict[str, list[str]] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in signed:  # only the signed headers' values are normalised (the others are never used)
            by_name.setdefault(lower, []).append(" ".join(str(value).split()))
    lines = []
    for name in signed:
        if name not in by_name:
            raise AuthError("IncompleteSignatureException",
                            f"Header {name!r} is listed in SignedHeaders but is not in the request.")
        lines.append(f"{name}:{','.join(by_name[name])}\n")
    return "".join(lines)


def canonical_request(req: SignedRequest, signed: Sequence[str], payload_hash: str) -> str:
    return "\n".join([req.method.upper(), canonical_path(req.path), canonical_query(req.query),
                      canonical_headers(req.headers, signed), ";".join(signed), payload_hash])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, _sha256(canonical.encode("utf-8"))])


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class Verified(NamedTuple):  # tuples, not frozen dataclasses: one of each per request, built 3-5 times faster
    access_key: str
    region: str


class Credential(NamedTuple):
    """What the Authorization header and X-Amz-Date claim, checked as far as they can be without the
    body: well formed, a known access key, a date within the window, the scope (date, service, an
    accepted region). Only :func:`verify_signature` proves the caller holds the secret."""

    access_key: str
    secret: str
    date: str
    amz_date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_amz_date(text: str) -> datetime:
    """``YYYYMMDD'T'HHMMSS'Z'`` as a UTC datetime; ValueError otherwise.

    By hand rather than ``datetime.strptime``, which took ~3 % of a server worker's time per request
    (its locale lookup and regex), and which also accepted fields of one digit that no SDK sends."""
    if len(text) != 16 or text[8] != "T" or text[15] != "Z" or not text.isascii():
        raise ValueError(text)
    day, clock = text[:8], text[9:15]
    if not (day.isdigit() and clock.isdigit()):
        raise ValueError(text)
    return datetime(int(day[:4]), int(day[4:6]), int(day[6:]), int(clock[:2]), int(clock[2:4]), int(clock[4:]),
                    tzinfo=UTC)


# Every request signed within the same second carries the same X-Amz-Date: parse each text once.
_instant = lru_cache(maxsize=64)(parse_amz_date)


class _Scope(NamedTuple):
    access_key: str
    date: str
    region: str
    service: str
    signed: tuple[str, ...]


@lru_cache(maxsize=256)
def _scope(credential: str, signed_headers: str, regions: frozenset[str] | None) -> _Scope:
    """The Credential and SignedHeaders fields checked (AuthError if one is wrong): a pure function of the
    two texts and the accepted regions, which a client repeats on every request of a day, so it is cached
    (an error is raised again each time: lru_cache keeps only results)."""
    cred = credential.split("/")
    if len(cred) != 5 or cred[4] != "aws4_request" or not all(cred):
        raise AuthError("IncompleteSignatureException",
                        f"Credential should be 'ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request'; got "
                        f"{credential[:120]!r}")
    access_key, date, region, service, _ = cred
    if service not in SERVICES:
        raise AuthError("InvalidSignatureException",
                        f"Credential should be scoped to correct service: '{SERVICE}' (or 'athena').")
    if regions is not None and region not in regions:
        raise AuthError("InvalidSignatureException",
                        f"Credential should be scoped to a valid region, not {region[:40]!r}; this server "
                        f"accepts {', '.join(sorted(regions))}.")
    signed = signed_headers.split(";")
    if signed != sorted(signed) or any(s != s.lower() for s in signed) or "host" not in signed:
        raise AuthError("IncompleteSignatureException",
                        "SignedHeaders must be lower-case, sorted, separated by ';' and include 'host'.")
    return _Scope(access_key, date, region, service, tuple(signed))


def check_header(headers: Sequence[tuple[str, str]], query: str,
                 secret_of: Callable[[str], str | None] | Mapping[str, str], now: datetime, *,
                 regions: frozenset[str] | None = None) -> Credential:
    """The cheap checks of a request's signature, done before its body is read; AuthError if one fails.

    ``regions``: the regions a request may be signed for (None: any). Codes follow AWS JSON
    services: MissingAuthenticationTokenException (no signature at all), IncompleteSignatureException
    (malformed, or a payload left unsigned), UnrecognizedClientException (unknown key),
    InvalidSignatureException (a date off by more than 15 minutes, a scope that does not match).
    """
    lookup = secret_of.get if isinstance(secret_of, Mapping) else secret_of
    auth = _header(headers, "authorization")
    if not auth:
        if "X-Amz-Signature=" in query or "X-Amz-Credential=" in query:
            raise AuthError("IncompleteSignatureException",
                            "Presigned (query string) requests are not supported; sign the Authorization "
                            "header (every AWS SDK does by default).")
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    if not auth.startswith(ALGORITHM):
        raise AuthError("IncompleteSignatureException",
                        f"Authorization header must use {ALGORITHM} (AWS Signature Version 4); "
                        f"got {auth.split(' ', 1)[0][:40]!r}")
    m = _AUTH_RE.match(auth)
    if m is None:
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                        f"parameters, as in '{ALGORITHM} Credential=AKID/20240101/us-east-1/sagemaker/"
                        "aws4_request, SignedHeaders=host;x-amz-date, Signature=<hex>'.")
    access_key, date, region, service, signed = _scope(m.group("cred"), m.group("signed"), regions)
    amz_date = _header(headers, "x-amz-date")
    if amz_date is None:
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                        "header (featurestream requires X-Amz-Date, which every AWS SDK sends).")
    try:
        when = _instant(amz_date)
    except ValueError:
        raise AuthError("IncompleteSignatureException",
                        f"X-Amz-Date {amz_date[:40]!r} is not in the form YYYYMMDD'T'HHMMSS'Z'") from None
    if date != amz_date[:8]:
        raise AuthError("InvalidSignatureException",
                        f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date "
                        f"from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'.")
    if when < now - MAX_SKEW:
        raise AuthError("InvalidSignatureException",
                        f"Signature expired: {amz_date} is now earlier than "
                        f"{(now - MAX_SKEW).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} - 15 min.)")
    if when > now + MAX_SKEW:
        raise AuthError("InvalidSignatureException",
                        f"Signature not yet current: {amz_date} is still later than "
                        f"{(now + MAX_SKEW).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} + 15 min.)")
    secret = lookup(access_key)
    if not secret:
        raise AuthError("UnrecognizedClientException", "The security token included in the request is invalid.")
    if _header(headers, "x-amz-content-sha256") == UNSIGNED_PAYLOAD:
        # The signature would then cover no byte of the body: anyone who saw one signed request
        # could replay its headers with a body of their own for 15 minutes.
        raise AuthError("IncompleteSignatureException",
                        f"x-amz-content-sha256: {UNSIGNED_PAYLOAD} is not accepted: featurestream verifies the "
                        "SHA-256 of every request body; sign the payload (the AWS SDKs do for this service).",
                        400)
    return Credential(access_key, secret, date, amz_date, region, service, signed, m.group("sig").lower())


def verify_signature(req: SignedRequest, credential: Credential) -> Verified:
    """The expensive half: hash the body and check the signature; AuthError if it does not match."""
    payload_hash = _sha256(req.body)
    declared = _header(req.headers, "x-amz-content-sha256")
    if declared not in (None, payload_hash):
        raise AuthError("InvalidSignatureException",
                        "The provided 'x-amz-content-sha256' header does not match what was computed.")
    c = credential
    scope = f"{c.date}/{c.region}/{c.service}/aws4_request"
    canonical = canonical_request(req, c.signed_headers, payload_hash)
    to_sign = string_to_sign(c.amz_date, scope, canonical)
    expected = hmac.new(signing_key(c.secret, c.date, c.region, c.service), to_sign.encode("utf-8"),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, c.signature):
        raise AuthError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you provided. "
                        "Check your AWS Secret Access Key and signing method. Consult the service "
                        "documentation for details.")
    return Verified(c.access_key, c.region)


def verify(req: SignedRequest, secret_of: Callable[[str], str | None] | Mapping[str, str],
           now: datetime, *, regions: frozenset[str] | None = None) -> Verified:
    """Both halves at once (:func:`check_header`, then :func:`verify_signature`): who signed ``req``,
    or AuthError."""
    return verify_signature(req, check_header(req.headers, req.query, secret_of, now, regions=regions))


def sign(method: str, url_path: str, query: str, headers: dict[str, str], body: bytes, *, access_key: str,
         secret: str, region: str, now: datetime, unsigned_payload: bool = False) -> dict[str, str]:
    """Sign a request the SDK way (for featurestream's own load generator and tests); returns the
    headers to send: ``headers`` plus X-Amz-Date and Authorization. ``headers`` must hold Host.
    ``unsigned_payload``: sign ``x-amz-content-sha256: UNSIGNED-PAYLOAD`` instead of the body's hash
    (as S3 clients may; this server refuses it)."""
    amz_date = now.strftime(_AMZ_DATE)
    out = dict(headers)
    out["X-Amz-Date"] = amz_date
    if unsigned_payload:
        out["X-Amz-Content-SHA256"] = UNSIGNED_PAYLOAD
    signed = sorted({k.lower() for k in out})
    req = SignedRequest(method, url_path, query, list(out.items()), body)
    scope = f"{amz_date[:8]}/{region}/{SERVICE}/aws4_request"
    payload_hash = UNSIGNED_PAYLOAD if unsigned_payload else _sha256(body)
    to_sign = string_to_sign(amz_date, scope, canonical_request(req, signed, payload_hash))
    sig = hmac.new(signing_key(secret, amz_date[:8], region, SERVICE), to_sign.encode("utf-8"),
                   hashlib.sha256).hexdigest()
    out["Authorization"] = (f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={';'.join(signed)}, "
                            f"Signature={sig}")
    return out
