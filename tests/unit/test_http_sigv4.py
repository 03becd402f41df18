"""SigV4 verification checked against botocore's signer (what every AWS SDK agrees with)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from featurestream.http.sigv4 import (
    AuthError,
    SignedRequest,
    canonical_path,
    canonical_query,
    check_header,
    sign,
    verify,
    verify_signature,
)

KEYS = {"AKIDEXAMPLE": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "other": "s3cr3t"}
NOW = datetime(2031, 5, 4, 12, 0, 0, tzinfo=UTC)


def botocore_signed(method: str, url: str, body: bytes = b"", *, key: str = "AKIDEXAMPLE",
                    secret: str | None = None, when: datetime = NOW, headers: dict | None = None,
                    region: str = "us-east-1", service: str = "sagemaker") -> SignedRequest:
    """Sign with botocore at ``when``, then take the request apart as the server sees it."""
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    auth = SigV4Auth(Credentials(key, secret or KEYS.get(key, "x")), service, region)
    import botocore.auth

    real = botocore.auth.datetime.datetime

    class Frozen(real):  # botocore reads the clock itself
        @classmethod
        def utcnow(cls):
            return when.replace(tzinfo=None)

        @classmethod
        def now(cls, tz=None):
            return when if tz else when.replace(tzinfo=None)

    botocore.auth.datetime.datetime = Frozen
    try:
        auth.add_auth(req)
    finally:
        botocore.auth.datetime.datetime = real
    parts = urlsplit(req.url)
    headers_out = list(req.headers.items())
    if not any(k.lower() == "host" for k, _ in headers_out):
        headers_out.append(("Host", parts.netloc))
    return SignedRequest(method, parts.path, parts.query, headers_out, body)


@pytest.mark.parametrize("method,url,body", [
    ("GET", "http://127.0.0.1:8080/FeatureGroup/customers?RecordIdentifierValueAsString=c-42", b""),
    ("GET", "http://127.0.0.1:8080/FeatureGroup/customers?RecordIdentifierValueAsString=a%20b%2Bc%2F%3D"
            "&FeatureName=age&FeatureName=city&ExpirationTimeResponse=Enabled", b""),
    ("PUT", "http://127.0.0.1:8080/FeatureGroup/customers", b'{"Record": [{"FeatureName": "x", "ValueAsString": "1"}]}'),
    ("DELETE", "http://localhost:9/FeatureGroup/arn%3Aaws%3Asagemaker%3Aus-east-1%3A123456789012%3Afeature-group"
               "%2Fcustomers?EventTime=2021-10-02T12%3A00%3A00Z&RecordIdentifierValueAsString=%C3%A9t%C3%A9", b""),
    ("POST", "http://127.0.0.1:8080/", b'{"FeatureGroupName": "c"}'),
])
def test_botocore_signatures_verify(method, url, body):
    req = botocore_signed(method, url, body, headers={"X-Amz-Target": "SageMaker.DescribeFeatureGroup"})
    got = verify(req, KEYS, NOW + timedelta(minutes=3))
    assert got.access_key == "AKIDEXAMPLE" and got.region == "us-east-1"


def test_our_signer_matches_botocore_byte_for_byte():
    url = "http://127.0.0.1:8080/FeatureGroup/g?RecordIdentifierValueAsString=a%20b"
    theirs = botocore_signed("GET", url)
    ours = sign("GET", "/FeatureGroup/g", "RecordIdentifierValueAsString=a%20b", {"Host": "127.0.0.1:8080"}, b"",
                access_key="AKIDEXAMPLE", secret=KEYS["AKIDEXAMPLE"], region="us-east-1", now=NOW)
    assert dict(theirs.headers)["Authorization"] == ours["Authorization"]


def _code(req: SignedRequest, now: datetime = NOW, keys: dict = KEYS) -> str:
    with pytest.raises(AuthError) as info:
        verify(req, keys, now)
    assert info.value.status == 403
    return info.value.code


URL = "http://127.0.0.1:8080/FeatureGroup/customers?RecordIdentifierValueAsString=c1"


def test_wrong_secret_unknown_key_and_unsigned():
    assert _code(botocore_signed("GET", URL, secret="not-the-secret")) == "InvalidSignatureException"
    assert _code(botocore_signed("GET", URL, key="nobody")) == "UnrecognizedClientException"
    unsigned = SignedRequest("GET", "/FeatureGroup/customers", "RecordIdentifierValueAsString=c1",
                             [("Host", "127.0.0.1:8080")], b"")
    assert _code(unsigned) == "MissingAuthenticationTokenException"


def test_expired_and_future_dates_are_refused_with_the_aws_message():
    old = botocore_signed("GET", URL, when=NOW - timedelta(minutes=16))
    with pytest.raises(AuthError, match="Signature expired") as info:
        verify(old, KEYS, NOW)
    assert info.value.code == "InvalidSignatureException"
    assert _code(botocore_signed("GET", URL, when=NOW + timedelta(minutes=16))) == "InvalidSignatureException"
    verify(botocore_signed("GET", URL, when=NOW - timedelta(minutes=14)), KEYS, NOW)


def _tampered(req: SignedRequest, **changes) -> SignedRequest:
    from dataclasses import replace

    return replace(req, **changes)


def test_any_change_after_signing_is_detected():
    body = b'{"Record": []}'
    req = botocore_signed("PUT", "http://127.0.0.1:8080/FeatureGroup/customers", body)
    assert _code(_tampered(req, body=b'{"Record": [1]}')) == "InvalidSignatureException"
    assert _code(_tampered(req, path="/FeatureGroup/other")) == "InvalidSignatureException"
    assert _code(_tampered(req, method="DELETE")) == "InvalidSignatureException"
    get = botocore_signed("GET", URL)
    assert _code(_tampered(get, query="RecordIdentifierValueAsString=c2")) == "InvalidSignatureException"
    headers = [(k, "evil.example" if k.lower() == "host" else v) for k, v in get.headers]
    assert _code(_tampered(get, headers=headers)) == "InvalidSignatureException"


@pytest.mark.parametrize("auth", [
    "garbage",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20310504/us-east-1/sagemaker/aws4_request",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20310504/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20310504/us-east-1/sagemaker/aws4_request, "
    "SignedHeaders=x-amz-date;host, Signature=abcd",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20310504/us-east-1/sagemaker/aws4_request, "
    "SignedHeaders=host;x-amz-date;x-missing, Signature=abcd",
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20310504/us-east-1/sagemaker/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=not-hex",
    "AWS AKIDEXAMPLE:c2lnbmF0dXJl",
])
def test_malformed_authorization_headers_are_incomplete_signatures(auth):
    req = SignedRequest("GET", "/", "", [("Host", "h"), ("X-Amz-Date", "20310504T120000Z"),
                                          ("Authorization", auth)], b"")
    assert _code(req) == "IncompleteSignatureException"


def test_bad_dates_and_scopes():
    base = [("Host", "h"), ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20310504/us-east-1/"
                                             "sagemaker/aws4_request, SignedHeaders=host, Signature=ab")]
    assert _code(SignedRequest("GET", "/", "", base, b"")) == "IncompleteSignatureException"  # no X-Amz-Date
    assert _code(SignedRequest("GET", "/", "", [*base, ("X-Amz-Date", "yesterday")], b"")) == \
        "IncompleteSignatureException"
    assert _code(SignedRequest("GET", "/", "", [*base, ("X-Amz-Date", "20310505T120000Z")], b"")) == \
        "InvalidSignatureException"  # scope date differs
    s3 = botocore_signed("GET", URL, service="s3")
    with pytest.raises(AuthError, match="correct service"):
        verify(s3, KEYS, NOW)


def test_presigned_query_requests_are_refused_clearly():
    req = SignedRequest("GET", "/", "X-Amz-Credential=a&X-Amz-Signature=b", [("Host", "h")], b"")
    with pytest.raises(AuthError, match="Presigned"):
        verify(req, KEYS, NOW)


def test_content_sha256_header_must_match_the_body():
    req = botocore_signed("PUT", "http://h/FeatureGroup/g", b"{}", headers={"X-Amz-Content-SHA256": "0" * 64})
    assert _code(req) == "InvalidSignatureException"


def test_the_header_checks_need_no_body_and_the_signature_check_needs_it():
    body = b'{"Record": []}'
    req = botocore_signed("PUT", "http://h/FeatureGroup/g", body)
    credential = check_header(req.headers, req.query, KEYS, NOW)  # no body given: none needed
    assert (credential.access_key, credential.region) == ("AKIDEXAMPLE", "us-east-1")
    assert verify_signature(req, credential).access_key == "AKIDEXAMPLE"
    tampered = SignedRequest(req.method, req.path, req.query, req.headers, b'{"Record": [1]}')
    with pytest.raises(AuthError, match="signature we calculated does not match"):
        verify_signature(tampered, credential)


def test_accepted_regions_and_unsigned_payloads():
    req = botocore_signed("GET", URL, region="eu-west-1")
    assert verify(req, KEYS, NOW, regions=None).region == "eu-west-1"  # default: any region
    assert verify(req, KEYS, NOW, regions=frozenset({"eu-west-1", "us-east-1"})).region == "eu-west-1"
    with pytest.raises(AuthError, match="scoped to a valid region, not 'eu-west-1'.*accepts us-east-1") as info:
        check_header(req.headers, req.query, KEYS, NOW, regions=frozenset({"us-east-1"}))
    assert info.value.code == "InvalidSignatureException"
    # A request whose signature covers no byte of its body is refused, however well it is signed.
    headers = sign("PUT", "/FeatureGroup/g", "", {"Host": "h"}, b"{}", access_key="AKIDEXAMPLE",
                   secret=KEYS["AKIDEXAMPLE"], region="us-east-1", now=NOW, unsigned_payload=True)
    with pytest.raises(AuthError, match="x-amz-content-sha256: UNSIGNED-PAYLOAD is not accepted") as info:
        check_header(list(headers.items()), "", KEYS, NOW)
    assert (info.value.code, info.value.status) == ("IncompleteSignatureException", 400)


def test_canonical_forms():
    assert canonical_path("") == "/"
    assert canonical_path("/a/./b/../c") == "/a/c"
    assert canonical_path("/a%2Fb") == "/a%252Fb"  # non-S3 services double-encode
    assert canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"
    assert canonical_query("x=a+b&y=%7e") == "x=a%2Bb&y=~"
    assert canonical_query("") == ""


@pytest.mark.parametrize("amz_date", ["20310504T12000Z", "2031054T120000Z", "20310504t120000Z", "20310504T120000z",
                                      "20310504T120000Z ", "2031O504T120000Z", "20310504T1200００Z", "20311304T120000Z",
                                      "20310230T120000Z", "20310504T240000Z", "20310504T120060Z", "+0310504T120000Z"])
def test_an_x_amz_date_not_exactly_yyyymmddThhmmssZ_is_an_incomplete_signature(amz_date):
    # Parsed by hand (not strptime): digits only, ASCII only, a real calendar date and time of day.
    base = [("Host", "h"), ("X-Amz-Date", amz_date),
            ("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20310504/us-east-1/"
                              "sagemaker/aws4_request, SignedHeaders=host;x-amz-date, Signature=ab")]
    assert _code(SignedRequest("GET", "/", "", base, b"")) == "IncompleteSignatureException"


def test_the_parsed_x_amz_date_is_the_instant_it_names():
    from featurestream.http.sigv4 import parse_amz_date

    assert parse_amz_date("20240229T235959Z") == datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    assert parse_amz_date("19700101T000000Z") == datetime(1970, 1, 1, tzinfo=UTC)
