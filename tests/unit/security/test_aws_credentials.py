"""Tests for thinghub.security.aws_credentials, end to end with botocore's signer."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.unit.botocore_s3 import ENDPOINT, REGION, Captured, freeze_botocore_clock, s3_client
from thinghub.domain.device_files import FileAction, FileGrant
from thinghub.domain.errors import Forbidden
from thinghub.security import sigv4
from thinghub.security.aws_credentials import (
    DEFAULT_TTL_S,
    MAX_TTL_S,
    MIN_TTL_S,
    CredentialError,
    CredentialIssuer,
)

NOW = 1_760_000_000.0
ACCOUNT = "4f1c2d3e-0000-4000-8000-00000000abcd"
MASTER = bytes(range(32))
ISSUER = CredentialIssuer(MASTER)


def folder_grant(ttl: float = DEFAULT_TTL_S, device: str = "dev-1") -> FileGrant:
    return FileGrant(ACCOUNT, device, frozenset(FileAction), NOW + ttl)


def server_check(seen: Captured, action: FileAction, key: str, *, now: float = NOW) -> None:
    """What the S3 face will do: parse, open the token, verify, check the grant."""
    request = sigv4.parse(seen.method, seen.path, seen.query, seen.wire_headers())
    opened = ISSUER.open(request.access_key_id, request.session_token, now=now)
    sigv4.verify(request, opened.secret_access_key, now=now, region=opened.region)
    opened.grant.check(action, bucket=ACCOUNT, key=key, now=now)


def test_issued_credentials_look_like_aws_ones() -> None:
    creds = ISSUER.issue(folder_grant(), region=REGION, now=NOW)
    assert creds.access_key_id.startswith("ASIA") and len(creds.access_key_id) == 20
    assert len(creds.secret_access_key) == 40
    assert creds.expires_at == NOW + DEFAULT_TTL_S
    assert creds.region == REGION
    assert creds.secret_access_key not in repr(creds) and creds.session_token not in repr(creds)
    other = ISSUER.issue(folder_grant(), region=REGION, now=NOW)
    assert other.access_key_id != creds.access_key_id
    assert other.secret_access_key != creds.secret_access_key


def test_open_gives_back_the_grant_and_the_secret() -> None:
    grant = FileGrant(
        ACCOUNT, "dev-1", frozenset({FileAction.PUT}), NOW + 600, "dev-1/p.jpg", 12, "image/jpeg"
    )
    creds = ISSUER.issue(grant, region=REGION, now=NOW)
    opened = ISSUER.open(creds.access_key_id, creds.session_token, now=NOW)
    assert opened.grant == grant
    assert opened.secret_access_key == creds.secret_access_key
    assert (opened.region, opened.issued_at) == (REGION, NOW)


def test_botocore_with_issued_credentials_reaches_its_own_folder_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    freeze_botocore_clock(monkeypatch, NOW)
    creds = ISSUER.issue(folder_grant(), region=REGION, now=NOW)
    captured: list[Captured] = []
    client: Any = s3_client(
        access_key=creds.access_key_id,
        secret_key=creds.secret_access_key,
        token=creds.session_token,
        captured=captured,
    )
    client.put_object(Bucket=ACCOUNT, Key="dev-1/a b.txt", Body=b"hello")
    client.get_object(Bucket=ACCOUNT, Key="dev-1/a b.txt")
    client.delete_object(Bucket=ACCOUNT, Key="dev-1/a b.txt")
    client.list_objects_v2(Bucket=ACCOUNT, Prefix="dev-1/")
    client.put_object(Bucket=ACCOUNT, Key="dev-2/steal.txt", Body=b"x")
    put, get, delete, listing, steal = captured
    server_check(put, FileAction.PUT, "dev-1/a b.txt")
    server_check(get, FileAction.GET, "dev-1/a b.txt")
    server_check(delete, FileAction.DELETE, "dev-1/a b.txt")
    server_check(listing, FileAction.LIST, "dev-1/")
    with pytest.raises(Forbidden):
        server_check(steal, FileAction.PUT, "dev-2/steal.txt")
    # After expiry: ExpiredToken, even though the signature itself is fine.
    with pytest.raises(CredentialError) as info:
        server_check(get, FileAction.GET, "dev-1/a b.txt", now=NOW + DEFAULT_TTL_S + 1)
    assert info.value.code == "ExpiredToken"


def test_a_signed_url_is_a_one_key_grant(monkeypatch: pytest.MonkeyPatch) -> None:
    grant = FileGrant(
        ACCOUNT, "dev-1", frozenset({FileAction.PUT}), NOW + 300, "dev-1/p.jpg", 3, "image/jpeg"
    )
    creds = ISSUER.issue(grant, region=REGION, now=NOW)
    url = sigv4.presign_url(
        method="PUT",
        url=f"{ENDPOINT}/{ACCOUNT}/dev-1/p.jpg",
        access_key_id=creds.access_key_id,
        secret_access_key=creds.secret_access_key,
        region=REGION,
        now=NOW,
        expires_s=300,
        session_token=creds.session_token,
    )
    parts = urlsplit(url)
    request = sigv4.parse("PUT", parts.path, parts.query, [("Host", parts.netloc)])
    opened = ISSUER.open(request.access_key_id, request.session_token, now=NOW)
    sigv4.verify(request, opened.secret_access_key, now=NOW, region=REGION)
    opened.grant.check(FileAction.PUT, bucket=ACCOUNT, key="dev-1/p.jpg", now=NOW)
    assert opened.grant.check_upload(content_length=3, content_type=None) == "image/jpeg"
    with pytest.raises(Forbidden):
        opened.grant.check(FileAction.GET, bucket=ACCOUNT, key="dev-1/p.jpg", now=NOW)


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def test_forged_or_foreign_tokens_are_refused() -> None:
    creds = ISSUER.issue(folder_grant(), region=REGION, now=NOW)
    prefix, payload, mac = creds.session_token.split(".")
    body = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    other_device = base64.urlsafe_b64encode(body.replace(b"dev-1", b"dev-2")).rstrip(b"=")
    forged = [
        f"{prefix}.{other_device.decode()}.{mac}",
        f"{prefix}.{payload}.{_flip(mac, 3)}",
        f"{prefix}.{payload}",
        f"{prefix}.{payload}.{mac}!",
        "thst2." + creds.session_token[6:],
        "x" * 5000,
        CredentialIssuer(bytes(32)).issue(folder_grant(), region=REGION, now=NOW).session_token,
    ]
    for token in forged:
        with pytest.raises(CredentialError) as info:
            ISSUER.open(creds.access_key_id, token, now=NOW)
        assert info.value.code == "InvalidToken", token


def test_token_must_name_the_access_key_and_be_present() -> None:
    creds = ISSUER.issue(folder_grant(), region=REGION, now=NOW)
    with pytest.raises(CredentialError) as info:
        ISSUER.open("ASIAOTHEROTHEROTHER1", creds.session_token, now=NOW)
    assert info.value.code == "InvalidAccessKeyId"
    with pytest.raises(CredentialError) as info:
        ISSUER.open(creds.access_key_id, None, now=NOW)
    assert info.value.code == "InvalidAccessKeyId"


def test_expiry_is_inclusive_then_refused() -> None:
    creds = ISSUER.issue(folder_grant(), region=REGION, now=NOW)
    ISSUER.open(creds.access_key_id, creds.session_token, now=NOW + DEFAULT_TTL_S)
    with pytest.raises(CredentialError) as info:
        ISSUER.open(creds.access_key_id, creds.session_token, now=NOW + DEFAULT_TTL_S + 1)
    assert info.value.code == "ExpiredToken"


def test_lifetime_bounds() -> None:
    for ttl in (0.5, MAX_TTL_S + 1):
        with pytest.raises(ValueError):
            ISSUER.issue(folder_grant(ttl), region=REGION, now=NOW)
    ISSUER.issue(folder_grant(MIN_TTL_S), region=REGION, now=NOW)
    ISSUER.issue(folder_grant(1), region=REGION, now=NOW)  # short, for tests of expiry
    one_key = FileGrant(ACCOUNT, "dev-1", frozenset({FileAction.GET}), NOW + 1, "dev-1/a")
    ISSUER.issue(one_key, region=REGION, now=NOW)
    with pytest.raises(ValueError):
        CredentialIssuer(b"short")
