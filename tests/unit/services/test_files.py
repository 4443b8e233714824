"""The Ioto files service over memory stores: signed URLs and temporary credentials expire
with the clock, uploads keep to their grant, and a device's files go with its release."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.ioto import ADMIN, OPERATOR, claimed, ioto_services, signed
from tests.unit.services.node import Node
from thinghub.domain.device_files import FileAction
from thinghub.domain.errors import Forbidden, Invalid, NotFound, TooLarge
from thinghub.ports import Stores
from thinghub.security import sigv4
from thinghub.security.aws_credentials import CredentialError
from thinghub.services.core import Services


@pytest.fixture
async def ioto(clock: TestClock, stores: Stores, live: Node, tmp_path: Path) -> Services:
    return await ioto_services(clock, stores, live, tmp_path)


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_a_signed_url_works_until_it_expires(ioto: Services, clock: TestClock) -> None:
    token = await claimed(ioto, "DEV-U")
    device = await ioto.claims.authenticate_device(token)
    url = ioto.files.signed_url(device, action=FileAction.GET, filename="a.txt")
    opened = await ioto.files.authenticate(signed(url, "GET"))
    assert opened.grant.device_id == "DEV-U"
    clock.t += ioto.files.signed_url_ttl_s + 1
    with pytest.raises((CredentialError, sigv4.SigV4Error)):
        await ioto.files.authenticate(signed(url, "GET"))


async def test_credentials_expire_after_their_ttl(ioto: Services, clock: TestClock) -> None:
    token = await claimed(ioto, "DEV-C")
    device = await ioto.claims.authenticate_device(token)
    creds = ioto.files.credentials(device)
    assert creds.expires_at == pytest.approx(clock.t + ioto.files.credentials_ttl_s, abs=1)
    opened = ioto.files.issuer.open(creds.access_key_id, creds.session_token, now=clock.t)
    assert opened.grant.device_id == "DEV-C"
    clock.t = creds.expires_at + 1
    with pytest.raises(CredentialError) as expired:
        ioto.files.issuer.open(creds.access_key_id, creds.session_token, now=clock.t)
    assert expired.value.code == "ExpiredToken"


async def test_signed_url_requests_are_checked_before_signing(ioto: Services) -> None:
    token = await claimed(ioto, "DEV-Q")
    device = await ioto.claims.authenticate_device(token)
    with pytest.raises(Invalid):  # a put needs its size
        ioto.files.signed_url(device, action=FileAction.PUT, filename="a.txt")
    with pytest.raises(TooLarge):
        ioto.files.signed_url(
            device, action=FileAction.PUT, filename="a", size=ioto.files.max_file_bytes + 1
        )
    with pytest.raises(Invalid):
        ioto.files.signed_url(device, action=FileAction.GET, filename="../x")


async def test_files_are_listed_read_and_go_with_a_release(
    ioto: Services, stores: Stores, clock: TestClock
) -> None:
    token = await claimed(ioto, "DEV-F")
    device = await ioto.claims.authenticate_device(token)
    creds = ioto.files.credentials(device)
    grant = ioto.files.issuer.open(creds.access_key_id, creds.session_token, now=clock.t).grant
    bucket = grant.bucket
    await ioto.files.put(
        grant, bucket, "DEV-F/x.txt", body(b"hello"), content_length=5, content_type="text/plain"
    )
    with pytest.raises(Forbidden):  # another device's folder
        await ioto.files.put(
            grant, bucket, "OTHER/x.txt", body(b"hello"), content_length=5, content_type=None
        )
    listed = await ioto.files.list_device_files(ADMIN, "DEV-F", after="", limit=10)
    assert [(f.filename, f.size) for f in listed] == [("x.txt", 5)]
    record, chunks = await ioto.files.read_device_file(ADMIN, "DEV-F", "x.txt")
    assert record.content_type == "text/plain"
    assert b"".join([c async for c in chunks]) == b"hello"
    await ioto.claims.release(OPERATOR, "DEV-F")
    assert await stores.files.get(bucket, "DEV-F/x.txt") is None
    with pytest.raises(NotFound):
        await ioto.files.list_device_files(ADMIN, "DEV-F", after="", limit=10)
