"""The Ioto claims and files services over memory stores, with a clock the test moves:
the provisioning window, expiry of signed URLs and credentials, what a release voids, the
`accessed` bookkeeping and project-limited callers."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import Node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.claims import PROVISION_WINDOW_S
from thinghub.domain.device_files import FileAction
from thinghub.domain.errors import NotFound, Unauthorized
from thinghub.domain.model import Principal, Role
from thinghub.ports import Stores
from thinghub.security import sigv4
from thinghub.security.aws_credentials import CredentialError
from thinghub.security.ca import CertificateAuthority
from thinghub.services.claims import ProvisionBlocked, Provisioned
from thinghub.services.core import Services

ACCOUNT = "acc-ioto"
ADMIN = Principal(ACCOUNT, Role.ADMIN, "admin")
OPERATOR = Principal(ACCOUNT, Role.OPERATOR, "operator")
IN_P1 = Principal(ACCOUNT, Role.ADMIN, "limited", project="p1")


@pytest.fixture
async def ioto(clock: TestClock, stores: Stores, live: Node, tmp_path: Path) -> Services:
    """Every service, with a real CA (provisioning issues certificates)."""
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", hostnames=["localhost"])
    built = build_services(
        Settings.defaults(),
        stores,
        bus=live.bus,
        clock=clock,
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=ca,
    )
    await built.start()
    built.claims.bind(base_url="http://localhost:8080", mqtt_port=8883)
    built.files.bind(base_url="http://localhost:8080")
    return built


async def claimed(services: Services, device_id: str, product_name: str = "line") -> str:
    """Register `device_id` with a new product of ACCOUNT, claim it; answer its token."""
    product, _ = await services.products.create_in(ACCOUNT, product_name)
    first = await services.claims.register(product, device_id)
    assert first.token is None
    await services.claims.claim(ADMIN, device_id)
    again = await services.claims.register(product, device_id)
    assert again.token is not None
    return again.token


def signed(url: str, method: str) -> sigv4.SignedRequest:
    parts = urlsplit(url)
    return sigv4.parse(method, parts.path, parts.query, [("host", parts.netloc)])


async def test_the_provisioning_window_blocks_the_third_until_the_first_leaves_it(
    ioto: Services, clock: TestClock
) -> None:
    token = await claimed(ioto, "DEV-W")
    device = await ioto.claims.authenticate_device(token)
    assert isinstance(await ioto.claims.provision(device, "DEV-W"), Provisioned)
    clock.t += 10
    assert isinstance(await ioto.claims.provision(device, "DEV-W"), Provisioned)
    clock.t += 5
    blocked = await ioto.claims.provision(device, "DEV-W")
    assert isinstance(blocked, ProvisionBlocked)
    assert blocked.delay_s == pytest.approx(PROVISION_WINDOW_S - 15, abs=1)
    clock.t += blocked.delay_s - 2
    assert isinstance(await ioto.claims.provision(device, "DEV-W"), ProvisionBlocked)
    clock.t += 3
    assert isinstance(await ioto.claims.provision(device, "DEV-W"), Provisioned)


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


async def test_a_release_voids_the_token_url_and_certificate_and_a_new_claim_gets_new_ones(
    ioto: Services,
) -> None:
    token = await claimed(ioto, "DEV-R")
    device = await ioto.claims.authenticate_device(token)
    url = ioto.files.signed_url(device, action=FileAction.GET, filename="a.txt")
    provisioned = await ioto.claims.provision(device, "DEV-R")
    assert isinstance(provisioned, Provisioned)
    await ioto.claims.release(OPERATOR, "DEV-R")
    with pytest.raises(Unauthorized):
        await ioto.claims.authenticate_device(token)
    with pytest.raises(CredentialError):
        await ioto.files.authenticate(signed(url, "GET"))
    with pytest.raises(NotFound):
        await ioto.registry.get_device(ADMIN, "DEV-R")
    # claimed again: a new token; the old one stays dead
    await ioto.claims.claim(ADMIN, "DEV-R")
    product_id = (await ioto.claims.registration("DEV-R")).product_id  # type: ignore[union-attr]
    product = await ioto.products.get(product_id)
    assert product is not None
    again = await ioto.claims.register(product, "DEV-R")
    assert again.token is not None and again.token != token
    with pytest.raises(Unauthorized):
        await ioto.claims.authenticate_device(token)
    assert (await ioto.claims.authenticate_device(again.token)).id == "DEV-R"


async def test_accessed_is_written_at_most_once_a_minute(ioto: Services, clock: TestClock) -> None:
    token = await claimed(ioto, "DEV-A")
    device = await ioto.claims.authenticate_device(token)
    first = (await ioto.claims.get(ADMIN, "DEV-A")).accessed_at
    clock.t += 5
    await ioto.claims.touch(device)
    assert (await ioto.claims.get(ADMIN, "DEV-A")).accessed_at == first
    clock.t += 120
    await ioto.claims.touch(device)
    assert (await ioto.claims.get(ADMIN, "DEV-A")).accessed_at == clock.t


async def test_a_project_limited_caller_reaches_only_its_projects_devices(
    ioto: Services,
) -> None:
    await claimed(ioto, "DEV-P2", product_name="p2")  # its project is "p2"
    p1_product, _ = await ioto.products.create_in(ACCOUNT, "p1")
    await ioto.claims.register(p1_product, "DEV-P1")
    for call in (ioto.claims.get, ioto.claims.release):
        with pytest.raises(NotFound):
            await call(IN_P1, "DEV-P2")
    page = await ioto.claims.find(IN_P1, limit=100)
    assert [d.registration.id for d in page.devices] == []
    claimed_p1 = await ioto.claims.claim(IN_P1, "DEV-P1")  # its own project: fine
    assert claimed_p1.registration.account_id == ACCOUNT
    page = await ioto.claims.find(IN_P1, limit=100)
    assert [d.registration.id for d in page.devices] == ["DEV-P1"]
