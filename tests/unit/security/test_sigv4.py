"""Tests for thinghub.security.sigv4 against botocore's own signer and AWS's examples."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
from botocore.config import Config

from tests.unit.botocore_s3 import ENDPOINT, REGION, Captured, freeze_botocore_clock, s3_client
from thinghub.security import sigv4
from thinghub.security.sigv4 import SigV4Error

NOW = 1_760_000_000.0  # 2025-10-09T08:53:20Z
ACCESS = "ASIAEXAMPLEEXAMPLE01"
SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEy"
TOKEN = "thst1.eyJhIjoiQVNJQSJ9.c2lnbmF0dXJl"
BUCKET = "4f1c2d3e-0000-4000-8000-00000000abcd"

ODD_KEYS = [
    "dev-1/plain.txt",
    "dev-1/with space.txt",
    "dev-1/ünïcödé/ñandú.bin",
    "dev-1/a+b=c&d.txt",
    "dev-1/tilde~name",
    "dev-1/nested/deep/path/x.json",
    "dev-1/sp!*'()$@,;:.txt",
    "dev-1/percent%20literal",
    "dev-1/a//double",
    "dev-1/日本語 ファイル.png",
]


@pytest.fixture(autouse=True)
def _frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    freeze_botocore_clock(monkeypatch, NOW)


def client(captured: list[Captured], **kwargs: Any) -> Any:
    return s3_client(access_key=ACCESS, secret_key=SECRET, token=TOKEN, captured=captured, **kwargs)


def parsed(seen: Captured) -> sigv4.SignedRequest:
    return sigv4.parse(seen.method, seen.path, seen.query, seen.wire_headers())


def check(seen: Captured, *, now: float = NOW, secret: str = SECRET) -> sigv4.SignedRequest:
    request = parsed(seen)
    sigv4.verify(request, secret, now=now, region=REGION)
    return request


def code_of(seen: Captured, **kwargs: Any) -> str:
    with pytest.raises(SigV4Error) as info:
        check(seen, **kwargs)
    return info.value.code


def one(operation: str, **params: Any) -> Captured:
    captured: list[Captured] = []
    getattr(client(captured), operation)(**params)
    assert len(captured) == 1
    return captured[0]


# --- botocore's header-signed requests verify ---------------------------------------------------


@pytest.mark.parametrize("key", ODD_KEYS)
@pytest.mark.parametrize("operation", ["get_object", "delete_object", "head_object"])
def test_botocore_object_requests_verify(operation: str, key: str) -> None:
    seen = one(operation, Bucket=BUCKET, Key=key)
    request = check(seen)
    assert request.access_key_id == ACCESS
    assert request.session_token == TOKEN
    assert request.region == REGION and request.service == "s3"
    assert not request.is_presigned
    assert request.payload_sha256 == sigv4.EMPTY_SHA256


@pytest.mark.parametrize("key", ODD_KEYS)
def test_botocore_put_object_verifies_and_names_the_body_hash(key: str) -> None:
    body = ("payload for " + key).encode()
    seen = one("put_object", Bucket=BUCKET, Key=key, Body=body, ContentType="image/jpeg")
    request = check(seen)
    assert request.payload_sha256 == hashlib.sha256(body).hexdigest()
    assert "content-type" in request.signed_headers


@pytest.mark.parametrize(
    "params",
    [
        {"Prefix": "dev-1/"},
        {"Prefix": "dev-1/with space/ü+~", "Delimiter": "/", "MaxKeys": 7},
        {"Prefix": "dev-1/", "ContinuationToken": "ZGV2LTEvbmV4dA==/+x", "StartAfter": "dev-1/a b"},
        {"Prefix": "dev-1/", "EncodingType": "url", "FetchOwner": True},
    ],
)
def test_botocore_list_objects_v2_verifies(params: dict[str, Any]) -> None:
    seen = one("list_objects_v2", Bucket=BUCKET, **params)
    assert "list-type=2" in seen.query
    check(seen)


def test_canonical_uri_equals_botocore_wire_path() -> None:
    for key in ODD_KEYS:
        seen = one("get_object", Bucket=BUCKET, Key=key)
        assert sigv4.canonical_uri(seen.path) == seen.path
        assert seen.path == f"/ioto/s3/{BUCKET}/{sigv4.uri_encode(key, keep_slash=True)}"


def test_unsigned_payload_when_payload_signing_is_off() -> None:
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        retries={"max_attempts": 1},
    )
    captured: list[Captured] = []
    client(captured, config=config).put_object(Bucket=BUCKET, Key="dev-1/u", Body=b"x")
    request = check(captured[0])
    assert request.payload_hash == sigv4.UNSIGNED_PAYLOAD
    assert request.payload_sha256 is None


def test_botocore_over_https_streams_with_an_unsigned_trailer() -> None:
    captured: list[Captured] = []
    client(captured, endpoint="https://files.example:8443/ioto/s3").put_object(
        Bucket=BUCKET, Key="dev-1/stream.bin", Body=b"0123456789" * 100
    )
    request = check(captured[0])
    assert request.is_streaming
    assert request.payload_hash == sigv4.STREAMING_UNSIGNED_PAYLOAD_TRAILER


def test_clock_skew_bound_is_fifteen_minutes() -> None:
    seen = one("get_object", Bucket=BUCKET, Key="dev-1/a")
    check(seen, now=NOW + sigv4.MAX_SKEW_S)
    check(seen, now=NOW - sigv4.MAX_SKEW_S)
    assert code_of(seen, now=NOW + sigv4.MAX_SKEW_S + 1) == "RequestTimeTooSkewed"
    assert code_of(seen, now=NOW - sigv4.MAX_SKEW_S - 1) == "RequestTimeTooSkewed"


# --- tampering ------------------------------------------------------------------------------


def _with_header(seen: Captured, name: str, value: str) -> Captured:
    headers = [(k, value if k.lower() == name else v) for k, v in seen.headers]
    if not any(k.lower() == name for k, _ in seen.headers):
        headers.append((name, value))
    return Captured(seen.method, seen.url, headers, seen.body)


def _with_url(seen: Captured, url: str) -> Captured:
    return Captured(seen.method, url, seen.headers, seen.body)


def test_wrong_secret_is_a_signature_mismatch() -> None:
    seen = one("get_object", Bucket=BUCKET, Key="dev-1/a")
    assert code_of(seen, secret=SECRET + "x") == "SignatureDoesNotMatch"


def test_tampered_parts_do_not_verify() -> None:
    seen = one("put_object", Bucket=BUCKET, Key="dev-1/a b", Body=b"abc", ContentType="text/plain")
    base = seen.url
    tampered = [
        Captured("POST", seen.url, seen.headers, seen.body),
        _with_url(seen, base.replace("a%20b", "a%20c")),
        _with_url(seen, base.replace(BUCKET, "other-bucket-0000")),
        _with_url(seen, base + "?acl="),
        _with_header(seen, "content-type", "application/json"),
        _with_header(seen, "x-amz-content-sha256", hashlib.sha256(b"abd").hexdigest()),
        _with_header(seen, "x-amz-checksum-crc32", "AAAAAA=="),
    ]
    for variant in tampered:
        assert code_of(variant) == "SignatureDoesNotMatch", variant
    host = [("Host", "evil.example:8080"), *seen.headers]
    assert code_of(Captured(seen.method, seen.url, host, seen.body)) == "SignatureDoesNotMatch"


def test_tampered_query_parameter_does_not_verify() -> None:
    seen = one("list_objects_v2", Bucket=BUCKET, Prefix="dev-1/")
    assert code_of(_with_url(seen, seen.url.replace("prefix=dev-1", "prefix=dev-2"))) == (
        "SignatureDoesNotMatch"
    )


def test_whitespace_in_signed_header_values_is_collapsed_like_botocore() -> None:
    seen = one("put_object", Bucket=BUCKET, Key="dev-1/w", Body=b"w", ContentType="text/plain")
    check(_with_header(seen, "content-type", "  text/plain  "))


def test_wrong_region_or_service_is_refused_before_the_signature() -> None:
    seen = one("get_object", Bucket=BUCKET, Key="dev-1/a")
    request = parsed(seen)
    with pytest.raises(SigV4Error) as info:
        sigv4.verify(request, SECRET, now=NOW, region="us-east-1")
    assert info.value.code == "AuthorizationHeaderMalformed"
    assert "thinghub-1" in info.value.reason
    with pytest.raises(SigV4Error) as info:
        sigv4.verify(request, SECRET, now=NOW, region=REGION, service="iot")
    assert info.value.code == "AuthorizationHeaderMalformed"


# --- presigned URLs -------------------------------------------------------------------------


def presigned(method: str, key: str, expires: int = 900) -> str:
    captured: list[Captured] = []
    return str(
        client(captured).generate_presigned_url(
            method, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=expires
        )
    )


def check_url(
    url: str, method: str, *, now: float = NOW, extra: tuple[tuple[str, str], ...] = ()
) -> sigv4.SignedRequest:
    parts = urlsplit(url)
    request = sigv4.parse(method, parts.path, parts.query, [("Host", parts.netloc), *extra])
    sigv4.verify(request, SECRET, now=now, region=REGION)
    return request


@pytest.mark.parametrize("key", ODD_KEYS)
@pytest.mark.parametrize(
    ("operation", "method"),
    [("get_object", "GET"), ("put_object", "PUT"), ("delete_object", "DELETE")],
)
def test_botocore_presigned_urls_verify(operation: str, method: str, key: str) -> None:
    url = presigned(operation, key)
    request = check_url(url, method, extra=(("Content-Type", "image/jpeg"), ("User-Agent", "curl")))
    assert request.is_presigned and request.session_token == TOKEN
    assert request.payload_hash == sigv4.UNSIGNED_PAYLOAD
    assert request.expires_at == NOW + 900


def test_presigned_url_expiry_and_not_before() -> None:
    url = presigned("get_object", "dev-1/a", expires=60)
    check_url(url, "GET", now=NOW + 60)
    with pytest.raises(SigV4Error) as info:
        check_url(url, "GET", now=NOW + 61)
    assert (info.value.code, info.value.reason) == ("AccessDenied", "request has expired")
    check_url(url, "GET", now=NOW - sigv4.MAX_SKEW_S)
    with pytest.raises(SigV4Error) as info:
        check_url(url, "GET", now=NOW - sigv4.MAX_SKEW_S - 1)
    assert info.value.code == "AccessDenied"


def _replace_param(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    pairs = [(k, value if k == name else v) for k, v in parse_qsl(parts.query)]
    return parts._replace(query=urlencode(pairs)).geturl()


def test_presigned_url_tampering_is_refused() -> None:
    url = presigned("put_object", "dev-1/photo.jpg")
    check_url(url, "PUT")
    with pytest.raises(SigV4Error) as info:
        check_url(url, "GET")  # a PUT URL does not download
    assert info.value.code == "SignatureDoesNotMatch"
    for variant in (
        url.replace("photo.jpg", "other.jpg"),
        _replace_param(url, "X-Amz-Expires", "604800"),
        _replace_param(url, "X-Amz-Security-Token", TOKEN + "x"),
        _replace_param(url, "X-Amz-Signature", "0" * 64),
        url + "&extra=1",
    ):
        with pytest.raises(SigV4Error) as info:
            check_url(variant, "PUT")
        assert info.value.code == "SignatureDoesNotMatch", variant


@pytest.mark.parametrize("key", ODD_KEYS)
@pytest.mark.parametrize("operation", ["get_object", "put_object", "delete_object"])
def test_our_presigned_url_is_botocores_url(operation: str, key: str) -> None:
    method = {"get_object": "GET", "put_object": "PUT", "delete_object": "DELETE"}[operation]
    ours = sigv4.presign_url(
        method=method,
        url=f"{ENDPOINT}/{BUCKET}/{sigv4.uri_encode(key, keep_slash=True)}",
        access_key_id=ACCESS,
        secret_access_key=SECRET,
        region=REGION,
        now=NOW,
        expires_s=900,
        session_token=TOKEN,
    )
    assert ours == presigned(operation, key)
    check_url(ours, method)


def test_presign_drops_a_default_port_like_an_http_client() -> None:
    url = sigv4.presign_url(
        method="GET",
        url="http://files.example:80/b/k",
        access_key_id=ACCESS,
        secret_access_key=SECRET,
        region=REGION,
        now=NOW,
        expires_s=60,
    )
    assert url.startswith("http://files.example/b/k?")
    check_url(url, "GET")


def test_presign_rejects_out_of_range_expiry() -> None:
    for expires in (0, sigv4.MAX_PRESIGN_EXPIRES_S + 1):
        with pytest.raises(ValueError):
            sigv4.presign_url(
                method="GET",
                url="http://h/b/k",
                access_key_id=ACCESS,
                secret_access_key=SECRET,
                region=REGION,
                now=NOW,
                expires_s=expires,
            )


# --- AWS's published examples (S3 API reference, "Signature Calculations") ----------------------

AWS_ACCESS = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_NOW = 1_369_353_600.0  # 20130524T000000Z


def test_aws_example_get_object_with_range() -> None:
    headers = [
        ("Host", "examplebucket.s3.amazonaws.com"),
        (
            "Authorization",
            f"AWS4-HMAC-SHA256 Credential={AWS_ACCESS}/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
        ),
        ("Range", "bytes=0-9"),
        ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
        ("x-amz-date", "20130524T000000Z"),
    ]
    request = sigv4.parse("GET", "/test.txt", "", headers)
    sigv4.verify(request, AWS_SECRET, now=AWS_NOW, region="us-east-1")


def test_aws_example_presigned_get() -> None:
    query = (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={AWS_ACCESS}%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    request = sigv4.parse("GET", "/test.txt", query, [("Host", "examplebucket.s3.amazonaws.com")])
    sigv4.verify(request, AWS_SECRET, now=AWS_NOW + 3600, region="us-east-1")


# --- malformed input ------------------------------------------------------------------------


def _auth(**overrides: str) -> str:
    parts = {
        "Credential": f"{ACCESS}/20251009/{REGION}/s3/aws4_request",
        "SignedHeaders": "host;x-amz-content-sha256;x-amz-date",
        "Signature": "a" * 64,
    }
    parts.update(overrides)
    return "AWS4-HMAC-SHA256 " + ", ".join(f"{k}={v}" for k, v in parts.items() if v != "-")


GOOD_HEADERS = [
    ("Host", "h"),
    ("x-amz-date", "20251009T085320Z"),
    ("x-amz-content-sha256", sigv4.EMPTY_SHA256),
]


@pytest.mark.parametrize(
    ("headers", "query", "code", "words"),
    [
        (GOOD_HEADERS, "", "AccessDenied", "not signed"),
        (
            [*GOOD_HEADERS, ("Authorization", "AWS4-HMAC-SHA1 Credential=x")],
            "",
            "AuthorizationHeaderMalformed",
            "mechanism",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth(SignedHeaders="-"))],
            "",
            "AuthorizationHeaderMalformed",
            "SignedHeaders",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth(SignedHeaders="x-amz-date"))],
            "",
            "AuthorizationHeaderMalformed",
            "host",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth(SignedHeaders="host"))],
            "",
            "AuthorizationHeaderMalformed",
            "x-amz-date",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth(SignedHeaders="host;Host;x-amz-date"))],
            "",
            "AuthorizationHeaderMalformed",
            "lower-case",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth(SignedHeaders="host;x-amz-date;x-missing"))],
            "",
            "AuthorizationHeaderMalformed",
            "x-missing",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth(Signature="ABC"))],
            "",
            "AuthorizationHeaderMalformed",
            "hex",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth(Credential="AK/20251009/r/s3"))],
            "",
            "AuthorizationHeaderMalformed",
            "Credential",
        ),
        (
            [
                *GOOD_HEADERS,
                ("Authorization", _auth(Credential=f"{ACCESS}/20251010/{REGION}/s3/aws4_request")),
            ],
            "",
            "AuthorizationHeaderMalformed",
            "date",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth() + ", Foo=bar")],
            "",
            "AuthorizationHeaderMalformed",
            "Foo",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth()), ("Authorization", _auth())],
            "",
            "AuthorizationHeaderMalformed",
            "more than once",
        ),
        (
            [GOOD_HEADERS[0], GOOD_HEADERS[2], ("Authorization", _auth())],
            "",
            "AccessDenied",
            "x-amz-date",
        ),
        (
            [*GOOD_HEADERS[:2], ("x-amz-date", "20251009T085320Z"), ("Authorization", _auth())],
            "",
            "AuthorizationHeaderMalformed",
            "more than once",
        ),
        (
            [
                GOOD_HEADERS[0],
                ("x-amz-date", "2025-10-09T08:53:20Z"),
                GOOD_HEADERS[2],
                ("Authorization", _auth()),
            ],
            "",
            "AuthorizationHeaderMalformed",
            "X-Amz-Date",
        ),
        (
            [*GOOD_HEADERS[:2], ("Authorization", _auth())],
            "",
            "InvalidRequest",
            "x-amz-content-sha256",
        ),
        (
            [
                *GOOD_HEADERS[:2],
                ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
                ("Authorization", _auth()),
            ],
            "",
            "NotImplemented",
            "signed chunks",
        ),
        (
            [*GOOD_HEADERS[:2], ("x-amz-content-sha256", "ABCDEF"), ("Authorization", _auth())],
            "",
            "InvalidArgument",
            "x-amz-content-sha256",
        ),
        (
            [*GOOD_HEADERS, ("Authorization", _auth())],
            "X-Amz-Signature=" + "a" * 64,
            "InvalidArgument",
            "only one",
        ),
        (
            [("Host", "h")],
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "AuthorizationQueryParametersError",
            "X-Amz-Credential",
        ),
        (
            [("Host", "h")],
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=A%2F20251009%2Fr%2Fs3%2Faws4_request&X-Amz-Date=20251009T085320Z&X-Amz-Expires=0&X-Amz-SignedHeaders=host&X-Amz-Signature="
            + "a" * 64,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires",
        ),
        (
            [("Host", "h")],
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=A%2F20251009%2Fr%2Fs3%2Faws4_request&X-Amz-Date=20251009T085320Z&X-Amz-Expires=604801&X-Amz-SignedHeaders=host&X-Amz-Signature="
            + "a" * 64,
            "AuthorizationQueryParametersError",
            "X-Amz-Expires",
        ),
        (
            [("Host", "h")],
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "AuthorizationQueryParametersError",
            "twice",
        ),
        (
            [("Host", "h")],
            "X-Amz-Algorithm=AWS4&X-Amz-Credential=A%2F20251009%2Fr%2Fs3%2Faws4_request&X-Amz-Date=20251009T085320Z&X-Amz-Expires=5&X-Amz-SignedHeaders=host&X-Amz-Signature="
            + "a" * 64,
            "AuthorizationQueryParametersError",
            "X-Amz-Algorithm",
        ),
    ],
)
def test_malformed_signatures_name_the_fault(
    headers: list[tuple[str, str]], query: str, code: str, words: str
) -> None:
    with pytest.raises(SigV4Error) as info:
        sigv4.parse("GET", "/b/k", query, headers)
    assert info.value.code == code
    assert words in info.value.reason


def test_bounds_are_checked_before_parsing() -> None:
    with pytest.raises(SigV4Error) as info:
        sigv4.parse(
            "GET", "/" + "a" * sigv4.MAX_PATH_CHARS, "", [*GOOD_HEADERS, ("Authorization", _auth())]
        )
    assert info.value.code == "InvalidRequest"
    with pytest.raises(SigV4Error):
        sigv4.parse("GET", "/b", "&".join(f"p{i}=1" for i in range(200)), GOOD_HEADERS)
    with pytest.raises(SigV4Error) as info:
        sigv4.parse("GET", "/b", "", [*GOOD_HEADERS, ("Authorization", _auth() + " " * 5000)])
    assert "longer" in info.value.reason


def test_canonical_query_sorts_and_encodes() -> None:
    assert sigv4.canonical_query("b=2&a=1&a=0&c&d=x+y&e=%7e%2f") == (
        "a=0&a=1&b=2&c=&d=x%2By&e=~%2F"
    )
    assert sigv4.canonical_query("X-Amz-Signature=1&z=1", exclude=("X-Amz-Signature",)) == "z=1"


def test_canonical_uri_reencodes_and_keeps_encoded_slashes() -> None:
    assert sigv4.canonical_uri("/b/a%7Eb%21/c%2Fd") == "/b/a~b%21/c%2Fd"
    assert sigv4.canonical_uri("/b/a!b") == "/b/a%21b"
    assert sigv4.canonical_uri("") == "/"
    assert sigv4.canonical_uri("/b/./../x") == "/b/./../x"  # S3: no normalisation


def test_secrets_stay_out_of_repr() -> None:
    seen = one("get_object", Bucket=BUCKET, Key="dev-1/a")
    text = repr(parsed(seen))
    assert TOKEN not in text
    assert parsed(seen).signature not in text
