"""Tests for thinghub.faces.ioto.s3: addressing, operations, listings, errors, read by botocore."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import pytest
from botocore.exceptions import ClientError

from tests.unit.botocore_s3 import Canned, Captured, freeze_botocore_clock, s3_client
from thinghub.domain.errors import Forbidden, Invalid, NotFound, TooLarge
from thinghub.faces.ioto import s3
from thinghub.faces.ioto.s3 import ObjectInfo, Operation, S3Address, S3Error
from thinghub.security.aws_credentials import CredentialError
from thinghub.security.sigv4 import SigV4Error

NOW = 1_760_000_000.0
MOUNT = "/ioto/s3"
BUCKET = "4f1c2d3e-0000-4000-8000-00000000abcd"


@pytest.fixture(autouse=True)
def _frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    freeze_botocore_clock(monkeypatch, NOW)


def query_params(query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            out[unquote(name)] = unquote(value)
    return out


def client(captured: list[Captured], answer: Any = None) -> Any:
    kwargs = {"answer": answer} if answer else {}
    return s3_client(access_key="ASIAX", secret_key="s", token="t", captured=captured, **kwargs)


# --- addressing -----------------------------------------------------------------------------


def test_parse_path_style_addresses() -> None:
    assert s3.parse_path(f"{MOUNT}/{BUCKET}", mount=MOUNT) == S3Address(BUCKET, None)
    assert s3.parse_path(f"{MOUNT}/{BUCKET}/", mount=MOUNT) == S3Address(BUCKET, None)
    assert s3.parse_path(f"{MOUNT}/{BUCKET}/dev-1/a%20b/%C3%BC%2B~", mount=MOUNT + "/") == (
        S3Address(BUCKET, "dev-1/a b/ü+~")
    )
    assert s3.parse_path(f"{MOUNT}/{BUCKET}/a%2Fb", mount=MOUNT).key == "a/b"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/other/b/k", "InvalidURI"),
        (f"{MOUNT}", "InvalidURI"),
        (f"{MOUNT}/UPPER/k", "InvalidBucketName"),
        (f"{MOUNT}/ab/k", "InvalidBucketName"),
        (f"{MOUNT}/-abc/k", "InvalidBucketName"),
        (f"{MOUNT}/a..b/k", "InvalidBucketName"),
        (f"{MOUNT}/{BUCKET}/%FF", "InvalidURI"),
        (f"{MOUNT}/{BUCKET}/a%0Ab", "InvalidURI"),
        (f"{MOUNT}/{BUCKET}/" + "k" * 1025, "KeyTooLongError"),
    ],
)
def test_bad_addresses(path: str, code: str) -> None:
    with pytest.raises(S3Error) as info:
        s3.parse_path(path, mount=MOUNT)
    assert info.value.code == code


def test_botocore_requests_map_to_operations() -> None:
    captured: list[Captured] = []
    c = client(captured)
    c.get_object(Bucket=BUCKET, Key="dev-1/a b")
    c.head_object(Bucket=BUCKET, Key="dev-1/a b")
    c.put_object(Bucket=BUCKET, Key="dev-1/a b", Body=b"x")
    c.delete_object(Bucket=BUCKET, Key="dev-1/a b")
    c.list_objects_v2(Bucket=BUCKET, Prefix="dev-1/")
    c.head_bucket(Bucket=BUCKET)
    expected = [
        Operation.GET_OBJECT,
        Operation.HEAD_OBJECT,
        Operation.PUT_OBJECT,
        Operation.DELETE_OBJECT,
        Operation.LIST_OBJECTS_V2,
        Operation.HEAD_BUCKET,
    ]
    for seen, operation in zip(captured, expected, strict=True):
        address = s3.parse_path(seen.path, mount=MOUNT)
        assert s3.operation_of(seen.method, address, query_params(seen.query)) is operation
        assert address.bucket == BUCKET


def test_unimplemented_operations_are_refused_clearly() -> None:
    captured: list[Captured] = []
    c = client(captured)
    c.list_objects(Bucket=BUCKET)  # v1
    c.put_object_acl(Bucket=BUCKET, Key="dev-1/a", ACL="private")
    c.create_multipart_upload(Bucket=BUCKET, Key="dev-1/a")
    c.get_object_tagging(Bucket=BUCKET, Key="dev-1/a")
    c.create_bucket(Bucket=BUCKET)
    for seen in captured:
        address = s3.parse_path(seen.path, mount=MOUNT)
        with pytest.raises(S3Error) as info:
            s3.operation_of(seen.method, address, query_params(seen.query))
        assert info.value.code == "NotImplemented", seen.url
        assert info.value.status == 501
    with pytest.raises(S3Error) as info:
        s3.operation_of("POST", S3Address(BUCKET, "k"), {})
    assert (info.value.code, info.value.status) == ("MethodNotAllowed", 405)
    with pytest.raises(S3Error) as info:
        s3.check_put_headers({"x-amz-copy-source": "/b/k"})
    assert info.value.code == "NotImplemented"


# --- listing --------------------------------------------------------------------------------

KEYS = [
    "dev-1/a b.txt",
    "dev-1/logs/2025/01.log",
    "dev-1/logs/2025/02.log",
    "dev-1/logs/2026/01.log",
    "dev-1/photos/ü+~.jpg",
    "dev-1/photos/日本.png",
    "dev-1/z",
    "dev-10/other",
]


def objects(keys: list[str] = KEYS) -> list[ObjectInfo]:
    return [
        ObjectInfo(k, len(k), hashlib.md5(k.encode()).hexdigest(), NOW - i)
        for i, k in enumerate(sorted(keys))
    ]


def lister(seen: Captured) -> Canned:
    params = query_params(seen.query)
    request = s3.parse_list_request(params)
    page = s3.list_page(objects(), request)
    return Canned(
        200, {"Content-Type": "application/xml"}, s3.list_result_xml(BUCKET, request, page)
    )


def test_botocore_parses_a_listing_with_odd_keys() -> None:
    captured: list[Captured] = []
    result = client(captured, lister).list_objects_v2(Bucket=BUCKET, Prefix="dev-1/")
    assert [o["Key"] for o in result["Contents"]] == sorted(KEYS)[:-1]
    assert result["KeyCount"] == 7 and result["IsTruncated"] is False
    assert result["Prefix"] == "dev-1/" and result["Name"] == BUCKET
    first = result["Contents"][0]
    assert first["ETag"] == '"' + hashlib.md5(b"dev-1/a b.txt").hexdigest() + '"'
    assert first["Size"] == len("dev-1/a b.txt")
    assert first["LastModified"] == datetime.fromtimestamp(NOW, UTC)
    assert first["StorageClass"] == "STANDARD"
    assert "encoding-type=url" in captured[0].query  # botocore asks for it, and decodes


def test_botocore_parses_common_prefixes() -> None:
    captured: list[Captured] = []
    result = client(captured, lister).list_objects_v2(Bucket=BUCKET, Prefix="dev-1/", Delimiter="/")
    assert [o["Key"] for o in result["Contents"]] == ["dev-1/a b.txt", "dev-1/z"]
    assert [p["Prefix"] for p in result["CommonPrefixes"]] == ["dev-1/logs/", "dev-1/photos/"]
    assert result["Delimiter"] == "/" and result["KeyCount"] == 4


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 1000])
def test_botocore_paginator_walks_every_key_once(page_size: int) -> None:
    captured: list[Captured] = []
    paginator = client(captured, lister).get_paginator("list_objects_v2")
    keys = [
        o["Key"]
        for page in paginator.paginate(
            Bucket=BUCKET, Prefix="dev-1/", PaginationConfig={"PageSize": page_size}
        )
        for o in page.get("Contents", [])
    ]
    assert keys == sorted(KEYS)[:-1]
    assert len(captured) == -(-7 // page_size)  # seven keys, ceil(7 / page size) requests


def test_paginating_with_a_delimiter_skips_a_whole_common_prefix() -> None:
    captured: list[Captured] = []
    paginator = client(captured, lister).get_paginator("list_objects_v2")
    seen_keys: list[str] = []
    seen_prefixes: list[str] = []
    for page in paginator.paginate(
        Bucket=BUCKET, Prefix="dev-1/", Delimiter="/", PaginationConfig={"PageSize": 1}
    ):
        seen_keys += [o["Key"] for o in page.get("Contents", [])]
        seen_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert seen_keys == ["dev-1/a b.txt", "dev-1/z"]
    assert seen_prefixes == ["dev-1/logs/", "dev-1/photos/"]
    assert len(captured) == 4


def test_start_after_and_max_keys_zero() -> None:
    request = s3.parse_list_request({"prefix": "dev-1/", "start-after": "dev-1/logs/2025/02.log"})
    page = s3.list_page(objects(), request)
    assert [o.key for o in page.contents][0] == "dev-1/logs/2026/01.log"
    empty = s3.list_page(objects(), s3.parse_list_request({"max-keys": "0"}))
    assert (empty.key_count, empty.is_truncated) == (0, True)
    assert s3.parse_list_request({"max-keys": "5000"}).max_keys == 1000


@pytest.mark.parametrize(
    ("params", "argument"),
    [
        ({"max-keys": "-1"}, "max-keys"),
        ({"max-keys": "ten"}, "max-keys"),
        ({"encoding-type": "base64"}, "encoding-type"),
        ({"continuation-token": "!!"}, "continuation-token"),
        ({"continuation-token": "eDp4"}, "continuation-token"),  # "x:x": not ours
        ({"delimiter": "/" * 65}, "delimiter"),
        ({"prefix": "p" * 1025}, "prefix"),
    ],
)
def test_bad_list_parameters(params: dict[str, str], argument: str) -> None:
    with pytest.raises(S3Error) as info:
        s3.parse_list_request(params)
    assert info.value.code == "InvalidArgument"
    assert info.value.extra["ArgumentName"] == argument


def test_list_xml_escapes_keys_without_url_encoding() -> None:
    request = s3.parse_list_request({"prefix": "dev-1/"})
    page = s3.list_page(objects(["dev-1/<&>'\".txt"]), request)
    xml = s3.list_result_xml(BUCKET, request, page)
    assert b"<Key>dev-1/&lt;&amp;&gt;'\"" in xml
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns=')


# --- objects and errors ---------------------------------------------------------------------


def test_botocore_reads_object_headers() -> None:
    info = ObjectInfo("dev-1/p.jpg", 3, hashlib.md5(b"abc").hexdigest(), NOW, "image/jpeg")

    def answer(_: Captured) -> Canned:
        return Canned(200, s3.object_headers(info), b"abc")

    result = client([], answer).get_object(Bucket=BUCKET, Key="dev-1/p.jpg")
    assert result["Body"].read() == b"abc"
    assert result["ETag"] == '"900150983cd24fb0d6963f7d28e17f72"'
    assert result["ContentLength"] == 3 and result["ContentType"] == "image/jpeg"
    assert result["LastModified"] == datetime.fromtimestamp(NOW, UTC)
    assert s3.object_headers(ObjectInfo("k", 0, "0" * 32, NOW))["Content-Type"] == (
        "binary/octet-stream"
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (S3Error("AccessDenied", "Access Denied"), 403),
        (S3Error("SignatureDoesNotMatch", "nope"), 403),
        (S3Error("NoSuchKey", "The specified key does not exist.", Key="dev-1/x"), 404),
        (S3Error("RequestTimeTooSkewed", "skewed"), 403),
        (S3Error("ExpiredToken", "The provided token has expired."), 400),
        (S3Error("InvalidAccessKeyId", "no such key"), 403),
        (S3Error("EntityTooLarge", "too big"), 400),
        (S3Error("NotImplemented", "no"), 501),
    ],
)
def test_botocore_parses_our_error_xml(error: S3Error, status: int) -> None:
    assert error.status == status
    body = s3.error_xml(error, resource="/ioto/s3/b/k", request_id="req-1")

    def answer(_: Captured) -> Canned:
        headers = {"Content-Type": "application/xml", s3.REQUEST_ID_HEADER: "req-1"}
        return Canned(status, headers, body)

    with pytest.raises(ClientError) as info:
        client([], answer).get_object(Bucket=BUCKET, Key="dev-1/x")
    parsed = info.value.response
    assert parsed["Error"]["Code"] == error.code
    assert parsed["Error"]["Message"] == error.message
    assert parsed["ResponseMetadata"]["HTTPStatusCode"] == status
    assert parsed["ResponseMetadata"]["RequestId"] == "req-1"
    for name, value in error.extra.items():
        assert parsed["Error"][name] == value


def test_unknown_error_code_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        S3Error("NoSuchThing", "x")


def test_translations_to_s3_errors() -> None:
    assert s3.from_sigv4(SigV4Error("SignatureDoesNotMatch", "x")).code == "SignatureDoesNotMatch"
    assert s3.from_credentials(CredentialError("ExpiredToken", "x")).message == (
        "The provided token has expired."
    )
    assert s3.from_domain(Forbidden("outside", field="key")).code == "AccessDenied"
    assert s3.from_domain(TooLarge("big")).code == "EntityTooLarge"
    missing = s3.from_domain(NotFound("gone"), key="dev-1/x")
    assert (missing.code, missing.extra) == ("NoSuchKey", {"Key": "dev-1/x"})
    assert s3.from_domain(NotFound("gone")).code == "NoSuchBucket"
    bad = s3.from_domain(Invalid("bad", field="Content-Type"))
    assert (bad.code, bad.extra["ArgumentName"]) == ("InvalidArgument", "Content-Type")


def test_etag_and_dates() -> None:
    assert s3.etag("900150983CD24FB0D6963F7D28E17F72") == '"900150983cd24fb0d6963f7d28e17f72"'
    with pytest.raises(ValueError):
        s3.etag("abc")
    assert s3.format_last_modified(1_255_369_830.25) == "2009-10-12T17:50:30.250Z"
    assert s3.http_date(1_255_369_830) == "Mon, 12 Oct 2009 17:50:30 GMT"
