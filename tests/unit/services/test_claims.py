"""The Ioto claims service over memory stores, with a clock the test moves: the provisioning
window, what a release voids, the `accessed` bookkeeping and project-limited callers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.ioto import ACCOUNT, ADMIN, IN_P1, OPERATOR, claimed, ioto_services, signed
from tests.unit.services.node import Node
from thinghub.domain.claims import PROVISION_WINDOW_S
from thinghub.domain.device_files import FileAction
from thinghub.domain.errors import Conflict, Forbidden, NotFound, Unauthorized
from thinghub.domain.model import Principal, Role
from thinghub.ports import Stores
from thinghub.security.aws_credentials import CredentialError
from thinghub.services.claims import ProvisionBlocked, Provisioned
from thinghub.services.core import Services


@pytest.fixture
async def ioto(clock: TestClock, stores: Stores, live: Node, tmp_path: Path) -> Services:
    return await ioto_services(clock, stores, live, tmp_path)


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


async def test_a_device_provisions_only_itself(ioto: Services) -> None:
    token = await claimed(ioto, "DEV-S")
    device = await ioto.claims.authenticate_device(token)
    with pytest.raises(Forbidden):
        await ioto.claims.provision(device, "SOMEONE-ELSE")


async def test_a_release_voids_the_token_url_and_device_and_a_new_claim_gets_new_ones(
    ioto: Services,
) -> None:
    token = await claimed(ioto, "DEV-R")
    device = await ioto.claims.authenticate_device(token)
    url = ioto.files.signed_url(device, action=FileAction.GET, filename="a.txt")
    assert isinstance(await ioto.claims.provision(device, "DEV-R"), Provisioned)
    await ioto.claims.release(OPERATOR, "DEV-R")
    with pytest.raises(Unauthorized):
        await ioto.claims.authenticate_device(token)
    with pytest.raises(CredentialError):
        await ioto.files.authenticate(signed(url, "GET"))
    with pytest.raises(NotFound):
        await ioto.registry.get_device(ADMIN, "DEV-R")
    # claimed again: a new token; the old one stays dead
    await ioto.claims.claim(ADMIN, "DEV-R")
    registration = await ioto.claims.registration("DEV-R")
    assert registration is not None
    product = await ioto.products.get(registration.product_id)
    assert product is not None
    again = await ioto.claims.register(product, "DEV-R")
    assert again.token is not None and again.token != token
    with pytest.raises(Unauthorized):
        await ioto.claims.authenticate_device(token)
    assert (await ioto.claims.authenticate_device(again.token)).id == "DEV-R"


async def test_roles_a_viewer_reads_only(ioto: Services) -> None:
    product, _ = await ioto.products.create_in(ACCOUNT, "roles")
    await ioto.claims.register(product, "DEV-V")
    viewer = Principal(ACCOUNT, Role.VIEWER, "viewer")
    with pytest.raises(Forbidden):
        await ioto.claims.claim(viewer, "DEV-V")
    await ioto.claims.claim(OPERATOR, "DEV-V")
    assert (await ioto.claims.get(viewer, "DEV-V")).registration.id == "DEV-V"
    with pytest.raises(Forbidden):
        await ioto.claims.release(viewer, "DEV-V")
    with pytest.raises(Forbidden):  # accountId of another account is an owner option
        await ioto.claims.get(OPERATOR, "DEV-V", account_id="another")
    with pytest.raises(NotFound):  # and an owner finds nothing there
        await ioto.claims.get(ADMIN, "DEV-V", account_id="another")


async def test_another_account_and_another_product_cannot_take_a_claim_id(
    ioto: Services,
) -> None:
    product, _ = await ioto.products.create_in(ACCOUNT, "mine")
    await ioto.claims.register(product, "DEV-X")
    other = Principal("acc-other", Role.ADMIN, "other")
    with pytest.raises(NotFound):
        await ioto.claims.claim(other, "DEV-X")
    theirs, _ = await ioto.products.create_in("acc-other", "theirs")
    with pytest.raises(Conflict):
        await ioto.claims.register(theirs, "DEV-X")


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
