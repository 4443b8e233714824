"""Tests for thinghub.domain.device_files: file names, grants and upload rules."""

from __future__ import annotations

import pytest

from thinghub.domain.device_files import (
    MAX_KEY_BYTES,
    FileAction,
    FileGrant,
    parse_content_length,
    parse_filename,
    parse_mime_type,
    parse_size,
)
from thinghub.domain.errors import Forbidden, Invalid, TooLarge

NOW = 1_760_000_000.0
ACCOUNT = "4f1c2d3e-0000-4000-8000-00000000abcd"
ALL = frozenset(FileAction)


def folder(**kwargs: object) -> FileGrant:
    base: dict[str, object] = {
        "account_id": ACCOUNT,
        "device_id": "dev-1",
        "actions": ALL,
        "expires_at": NOW + 3600,
    }
    base.update(kwargs)
    return FileGrant(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["a.txt", "logs/2025/x.log", "with space ü+~!.bin", "a..b", ".hidden", "日本"]
)
def test_good_filenames(name: str) -> None:
    assert parse_filename(name, device_id="dev-1") == name


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("", "non-empty"),
        (None, "non-empty"),
        (42, "non-empty"),
        ("/abs", "segment"),
        ("a//b", "segment"),
        ("a/", "segment"),
        ("../etc/passwd", "segment"),
        ("a/./b", "segment"),
        ("a\nb", "control"),
        ("nul\x00", "control"),
        ("x" * (MAX_KEY_BYTES - len("dev-1/") + 1), "too long"),
        ("é" * 600, "too long"),
    ],
)
def test_bad_filenames_name_the_rule(name: object, words: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_filename(name, device_id="dev-1")
    assert info.value.field == "filename"
    assert words in info.value.message


def test_longest_filename_fits_the_s3_key_limit() -> None:
    name = "x" * (MAX_KEY_BYTES - len("dev-1/"))
    assert len(folder().key_for(parse_filename(name, device_id="dev-1")).encode()) == MAX_KEY_BYTES


def test_mime_types() -> None:
    assert parse_mime_type("image/JPEG") == "image/jpeg"
    assert parse_mime_type("application/vnd.api+json") == "application/vnd.api+json"
    for bad in ("image", "image/jpeg; charset=x", "/x", "a/b/c", "", 5, "x" * 200 + "/y"):
        with pytest.raises(Invalid) as info:
            parse_mime_type(bad)
        assert info.value.field == "mimeType"


def test_sizes_as_numbers_or_strings() -> None:
    assert parse_size(12, limit=100) == 12
    assert parse_size("12", limit=100) == 12
    assert parse_size(" 0 ", limit=100) == 0
    assert parse_size(12.0, limit=100) == 12
    for bad in (-1, "-1", "1e3", "12.5", 12.5, True, None, "", "0x10", [1]):
        with pytest.raises(Invalid) as info:
            parse_size(bad, limit=100)
        assert info.value.field == "size"
    with pytest.raises(TooLarge) as too:
        parse_size("101", limit=100)
    assert "101" in too.value.message and "100" in too.value.message
    assert parse_content_length(None, limit=5) is None
    with pytest.raises(TooLarge):
        parse_content_length("6", limit=5)


def test_folder_grant_allows_only_the_device_folder() -> None:
    grant = folder()
    assert (grant.bucket, grant.prefix) == (ACCOUNT, "dev-1/")
    for action in (FileAction.GET, FileAction.PUT, FileAction.DELETE):
        grant.check(action, bucket=ACCOUNT, key="dev-1/a/b.txt", now=NOW)
    grant.check(FileAction.LIST, bucket=ACCOUNT, key="dev-1/", now=NOW)
    grant.check(FileAction.LIST, bucket=ACCOUNT, key="dev-1/logs", now=NOW)
    refused = [
        (FileAction.GET, ACCOUNT, "dev-10/a", "key"),
        (FileAction.GET, ACCOUNT, "dev-1", "key"),
        (FileAction.PUT, ACCOUNT, "dev-2/a", "key"),
        (FileAction.LIST, ACCOUNT, "", "prefix"),
        (FileAction.LIST, ACCOUNT, "dev", "prefix"),
        (FileAction.GET, "other-bucket", "dev-1/a", "bucket"),
    ]
    for action, bucket, key, field in refused:
        with pytest.raises(Forbidden) as info:
            grant.check(action, bucket=bucket, key=key, now=NOW)
        assert info.value.field == field, (action, bucket, key)


def test_grant_expiry_and_actions() -> None:
    grant = folder(actions=frozenset({FileAction.GET}))
    grant.check(FileAction.GET, bucket=ACCOUNT, key="dev-1/a", now=NOW + 3600)
    with pytest.raises(Forbidden) as info:
        grant.check(FileAction.GET, bucket=ACCOUNT, key="dev-1/a", now=NOW + 3601)
    assert info.value.field == "expires"
    with pytest.raises(Forbidden) as info:
        grant.check(FileAction.PUT, bucket=ACCOUNT, key="dev-1/a", now=NOW)
    assert info.value.field == "action"


def test_one_key_grant_allows_that_key_only() -> None:
    grant = folder(actions=frozenset({FileAction.PUT}), key="dev-1/photo.jpg", size=3)
    grant.check(FileAction.PUT, bucket=ACCOUNT, key="dev-1/photo.jpg", now=NOW)
    for key in ("dev-1/photo.jpgx", "dev-1/other.jpg"):
        with pytest.raises(Forbidden):
            grant.check(FileAction.PUT, bucket=ACCOUNT, key=key, now=NOW)
    with pytest.raises(Forbidden):
        folder(actions=ALL, key="dev-1/p").check(
            FileAction.LIST, bucket=ACCOUNT, key="dev-1/p", now=NOW
        )


def test_upload_size_and_type_are_enforced() -> None:
    grant = folder(key="dev-1/p.jpg", size=3, content_type="image/jpeg")
    assert grant.check_upload(content_length=3, content_type=None) == "image/jpeg"
    assert grant.check_upload(content_length=3, content_type="IMAGE/jpeg; q=1") == "image/jpeg"
    assert grant.check_upload(content_length=None, content_type=None) == "image/jpeg"
    with pytest.raises(TooLarge):
        grant.check_upload(content_length=4, content_type=None)
    with pytest.raises(Invalid) as info:
        grant.check_upload(content_length=2, content_type=None)
    assert info.value.field == "Content-Length"
    with pytest.raises(Invalid) as info:
        grant.check_upload(content_length=3, content_type="text/plain")
    assert info.value.field == "Content-Type"
    with pytest.raises(TooLarge):
        grant.check_received(4)
    grant.check_received(3)
    assert folder().check_upload(content_length=10, content_type="Text/Plain") == "text/plain"
    assert folder().check_upload(content_length=10, content_type=None) is None
