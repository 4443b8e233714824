"""Tests for thinghub.faces.ioto.aws_chunked with bodies botocore itself encodes."""

from __future__ import annotations

import pytest

from tests.unit.botocore_s3 import Captured, freeze_botocore_clock, s3_client
from thinghub.faces.ioto.aws_chunked import AwsChunkedDecoder, AwsChunkedError

NOW = 1_760_000_000.0
DATA = bytes(range(256)) * 40 + b"tail"


def botocore_body(
    monkeypatch: pytest.MonkeyPatch, data: bytes = DATA
) -> tuple[bytes, dict[str, str]]:
    freeze_botocore_clock(monkeypatch, NOW)
    captured: list[Captured] = []
    client = s3_client(
        access_key="ASIAX",
        secret_key="s",
        token="t",
        captured=captured,
        endpoint="https://files.example/ioto/s3",
    )
    client.put_object(Bucket="bucket-1", Key="dev-1/f", Body=data)
    headers = {k.lower(): v for k, v in captured[0].headers}
    return captured[0].body, headers


def decoder(headers: dict[str, str], max_bytes: int = 1 << 20) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(
        trailer=headers.get("x-amz-trailer"),
        decoded_length=int(headers["x-amz-decoded-content-length"]),
        max_bytes=max_bytes,
    )


def test_botocore_streams_aws_chunked_with_a_crc32_trailer(monkeypatch: pytest.MonkeyPatch) -> None:
    body, headers = botocore_body(monkeypatch)
    assert headers["content-encoding"] == "aws-chunked"
    assert headers["x-amz-trailer"] == "x-amz-checksum-crc32"
    d = decoder(headers)
    assert d.feed(body) == DATA
    d.finish()
    assert d.is_done and d.received == len(DATA)
    assert "x-amz-checksum-crc32" in d.trailers


@pytest.mark.parametrize("step", [1, 2, 3, 7, 100])
def test_any_split_of_the_input_decodes_the_same(
    monkeypatch: pytest.MonkeyPatch, step: int
) -> None:
    body, headers = botocore_body(monkeypatch)
    d = decoder(headers)
    out = b"".join(d.feed(body[i : i + step]) for i in range(0, len(body), step))
    d.finish()
    assert out == DATA


def test_a_changed_byte_is_a_bad_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    body, headers = botocore_body(monkeypatch)
    at = body.index(b"tail")
    d = decoder(headers)
    d.feed(body[:at] + b"TAIL" + body[at + 4 :])
    with pytest.raises(AwsChunkedError) as info:
        d.finish()
    assert info.value.code == "BadDigest"


def test_truncated_body_is_incomplete(monkeypatch: pytest.MonkeyPatch) -> None:
    body, headers = botocore_body(monkeypatch)
    d = decoder(headers)
    d.feed(body[:-5])
    with pytest.raises(AwsChunkedError) as info:
        d.finish()
    assert info.value.code == "IncompleteBody"


def test_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    body, headers = botocore_body(monkeypatch)
    with pytest.raises(AwsChunkedError) as info:
        decoder(headers, max_bytes=100).feed(body)
    assert info.value.code == "EntityTooLarge"
    with pytest.raises(AwsChunkedError) as info:
        AwsChunkedDecoder(trailer="x-amz-checksum-crc64nvme", decoded_length=None, max_bytes=9)
    assert info.value.code == "NotImplemented"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"zz\r\n", "IncompleteBody"),
        (b"3\r\nabcd\r\n", "IncompleteBody"),
        (b"f" * 5000, "IncompleteBody"),
        (b"0\r\nbroken-trailer\r\n\r\n", "IncompleteBody"),
        (b"0\r\n\r\nextra", "IncompleteBody"),
    ],
)
def test_malformed_bodies(body: bytes, code: str) -> None:
    d = AwsChunkedDecoder(trailer=None, decoded_length=None, max_bytes=1000)
    with pytest.raises(AwsChunkedError) as info:
        d.feed(body)
    assert info.value.code == code


def test_missing_announced_trailer_and_wrong_length() -> None:
    d = AwsChunkedDecoder(trailer="x-amz-checksum-sha256", decoded_length=3, max_bytes=10)
    d.feed(b"3\r\nabc\r\n0\r\n\r\n")
    with pytest.raises(AwsChunkedError) as info:
        d.finish()
    assert info.value.code == "InvalidRequest"
    d = AwsChunkedDecoder(trailer=None, decoded_length=4, max_bytes=10)
    d.feed(b"3\r\nabc\r\n0\r\n\r\n")
    with pytest.raises(AwsChunkedError) as info:
        d.finish()
    assert info.value.code == "IncompleteBody"
    d = AwsChunkedDecoder(trailer=None, decoded_length=3, max_bytes=10)
    assert d.feed(b"3;chunk-ext=1\r\nabc\r\n0\r\n\r\n") == b"abc"
    d.finish()
