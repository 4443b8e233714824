"""ProvisioningService on the memory stores: enrollment groups (who may make and see them),
individual enrollment (a registered device signs with its own key or certificate), group
enrollment (the group creates the device on first registration, with the derived key), and
the rule that a group never takes over a device it did not create.
(tests/unit/services/test_device_auth.py checks that refusals cost the same work.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.services.conftest import TestClock
from thinghub.domain.errors import Conflict, Forbidden, NotFound, Unauthorized
from thinghub.domain.model import Account, DeviceKind, Principal, Role
from thinghub.ports import Stores
from thinghub.security import sas
from thinghub.services.core import Services
from thinghub.services.provisioning import dps_resource


@pytest.fixture
async def account(services: Services) -> Account:
    return await services.auth.ensure_account()


def admin(account: Account, project: str | None = None, role: Role = Role.ADMIN) -> Principal:
    return Principal(account.id, role, "admin", project=project)


def token(clock: TestClock, account: Account, registration_id: str, key: str) -> str:
    return sas.sign(key, dps_resource(account.id_scope, registration_id), int(clock.t) + 3600)


def group_key(group: dict[str, Any], registration_id: str) -> str:
    return sas.derive_group_key(group["attestation"]["symmetricKey"]["primaryKey"], registration_id)


async def test_who_may_make_and_see_enrollment_groups(services: Services, account: Account) -> None:
    prov = services.provisioning
    group = await prov.create_group(admin(account), "g1", project="p1", deployment="d")
    assert (group["project"], group["deployment"], group["provisioningStatus"]) == (
        "p1", "d", "enabled",
    )  # fmt: skip
    assert group["attestation"]["symmetricKey"]["primaryKey"]
    await prov.create_group(admin(account, "p2"), "g2", project="p2", deployment="d")
    with pytest.raises(Conflict):
        await prov.create_group(admin(account), "g1", project="p1", deployment="d")
    with pytest.raises(Forbidden) as other_project:
        await prov.create_group(admin(account, "p2"), "g3", project="p1", deployment="d")
    assert other_project.value.field == "project"
    for role in (Role.BUILDER, Role.OPERATOR, Role.VIEWER):
        with pytest.raises(Forbidden) as refused:
            await prov.list_groups(admin(account, role=role))
        assert refused.value.field == "role"
        with pytest.raises(Forbidden):
            await prov.create_group(admin(account, role=role), "g4", project="p1", deployment="d")
    assert [g["enrollmentGroupId"] for g in await prov.list_groups(admin(account))] == ["g1", "g2"]
    assert [g["enrollmentGroupId"] for g in await prov.list_groups(admin(account, "p2"))] == ["g2"]
    with pytest.raises(NotFound):  # another project's group looks absent
        await prov.get_group(admin(account, "p2"), "g1")
    with pytest.raises(NotFound):
        await prov.delete_group(admin(account, "p2"), "g1")
    with pytest.raises(NotFound):  # another account's
        await prov.get_group(Principal("acc-2", Role.ADMIN, "x"), "g1")
    await prov.delete_group(admin(account), "g1")
    with pytest.raises(NotFound):
        await prov.get_group(admin(account), "g1")


async def test_a_registered_device_enrolls_with_its_own_key(
    services: Services, account: Account, clock: TestClock
) -> None:
    device = await services.registry.create_device(admin(account), name="d", device_id="dev-1")
    prov = services.provisioning
    enrollment = await prov.authenticate(
        account.id_scope, "dev-1", token(clock, account, "dev-1", device.secondary_key)
    )
    assert (enrollment.device, enrollment.group) == (device, None)
    assigned = await prov.register(enrollment, {"modelId": "dtmi:test:thermostat;1"})
    assert (assigned.id, assigned.provisioned, assigned.model_id) == (
        "dev-1", True, "dtmi:test:thermostat;1",
    )  # fmt: skip
    # Its certificate (CN the id, OU the account) works as well as its key.
    by_cert = await prov.authenticate(account.id_scope, "dev-1", None, "dev-1", account.id)
    assert by_cert.device is not None and by_cert.device.id == "dev-1"
    for refused in (
        lambda: prov.authenticate(account.id_scope, "dev-1", None, "dev-1", "acc-2"),
        lambda: prov.authenticate(
            account.id_scope, "dev-1", token(clock, account, "dev-1", sas.generate_key())
        ),
        lambda: prov.authenticate(
            "0ne00000000", "dev-1", token(clock, account, "dev-1", device.primary_key)
        ),
    ):
        with pytest.raises(Unauthorized):
            await refused()
    await services.registry.edit_device(admin(account), "dev-1", enabled=False)
    with pytest.raises(Unauthorized, match="disabled"):
        await prov.authenticate(
            account.id_scope, "dev-1", token(clock, account, "dev-1", device.primary_key)
        )


async def test_a_group_creates_its_device_on_first_registration(
    services: Services, account: Account, clock: TestClock, stores: Stores
) -> None:
    prov = services.provisioning
    group = await prov.create_group(admin(account), "g1", project="farm", deployment="north")
    edge = await prov.create_group(
        admin(account), "g2", project="farm", deployment="south", is_edge=True
    )
    key = group_key(group, "therm-1")
    first = await prov.authenticate(
        account.id_scope, "therm-1", token(clock, account, "therm-1", key)
    )
    assert (first.device, first.group) == (None, group)
    device = await prov.register(first, None)
    assert (device.id, device.project, device.deployment, device.kind) == (
        "therm-1", "farm", "north", DeviceKind.DEVICE,
    )  # fmt: skip
    assert (device.primary_key, device.provisioned) == (key, True)
    assert device.created_by == "enrollmentGroup:g1"
    # Registering again assigns the same device, the group's own.
    again = await prov.authenticate(
        account.id_scope, "therm-1", token(clock, account, "therm-1", key)
    )
    assert again.device == device
    assert (await prov.register(again, {"modelId": "dtmi:x;1"})).model_id == "dtmi:x;1"
    gateway = await prov.register(
        await prov.authenticate(
            account.id_scope, "gw-1", token(clock, account, "gw-1", group_key(edge, "gw-1"))
        ),
        None,
    )
    assert gateway.kind is DeviceKind.GATEWAY
    assert await stores.devices.get("gw-1") is not None


async def test_a_group_never_takes_over_a_device_it_did_not_create(
    services: Services, account: Account, clock: TestClock
) -> None:
    prov = services.provisioning
    group = await prov.create_group(admin(account), "g1", project="farm", deployment="north")
    other = await prov.create_group(admin(account), "g2", project="farm", deployment="south")
    await services.registry.create_device(admin(account), name="mine", device_id="mine")
    await prov.register(
        await prov.authenticate(
            account.id_scope, "g2-dev", token(clock, account, "g2-dev", group_key(other, "g2-dev"))
        ),
        None,
    )
    for taken in ("mine", "g2-dev"):  # an individual device, another group's device
        with pytest.raises(Unauthorized):
            await prov.authenticate(
                account.id_scope, taken, token(clock, account, taken, group_key(group, taken))
            )
    # A device made meanwhile under the id (by another face) is not the group's to assign.
    pending = await prov.authenticate(
        account.id_scope, "late", token(clock, account, "late", group_key(group, "late"))
    )
    await services.registry.create_device(admin(account), name="late", device_id="late")
    with pytest.raises(Unauthorized, match="taken by another device"):
        await prov.register(pending, None)
    # A group's key for one id signs no other.
    with pytest.raises(Unauthorized):
        await prov.authenticate(
            account.id_scope, "fresh", token(clock, account, "fresh", group_key(group, "late"))
        )
