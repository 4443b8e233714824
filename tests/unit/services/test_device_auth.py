"""Device authentication and DPS: an id cannot be probed by timing (issue 11), and an
enrollment group never takes over a device it did not create (issue 12).

Timing is checked as work, not wall-clock time: every refusal must compute the same HMACs
(count and message lengths), whether the id names a device or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from tests.unit.services.node import node
from thinghub.domain.errors import Unauthorized
from thinghub.domain.model import Account, Device, DeviceKind
from thinghub.domain.twin import Twin
from thinghub.ports import Stores
from thinghub.security import sas
from thinghub.services.device_auth import DeviceAuth, hub_resource
from thinghub.services.events import EventService
from thinghub.services.provisioning import GROUPS, ProvisioningService, dps_resource
from thinghub.services.registry import Registry
from thinghub.services.templates import TemplateService
from thinghub.storage.memory import memory_stores

NOW = 1_700_000_000.0
HOST = "hub.example"
SCOPE = "0ne000AAAA1"
ACCOUNT = Account("acc-1", "Contoso", SCOPE, NOW)
OTHER = Account("acc-2", "Fabrikam", "0ne000BBBB2", NOW)


class Clock:
    def now(self) -> float:
        return NOW


def device(device_id: str, account: str = "acc-1", **fields: Any) -> Device:
    return Device(
        device_id, account, fields.pop("kind", DeviceKind.DEVICE), device_id,
        sas.generate_key(), sas.generate_key(), NOW, NOW, **fields,
    )  # fmt: skip


async def seeded(*devices: Device, groups: Sequence[dict[str, Any]] = ()) -> Stores:
    """Memory stores holding both accounts, `devices` and the first account's `groups`."""
    stores = memory_stores()
    for account in (ACCOUNT, OTHER):
        await stores.accounts.insert(account)
    for d in devices:
        await stores.devices.insert(d, Twin(d.id))
    for group in groups:
        await stores.documents.put("acc-1", GROUPS, group["enrollmentGroupId"], group, NOW)
    return stores


def registry(stores: Stores) -> Registry:
    n = node(Clock())
    events = EventService(stores, n.bus, Clock(), n.counter)
    return Registry(
        stores, Clock(), events, n.bus, presence=n.presence, channel=n.links, locks=n.locks
    )


@pytest.fixture
def hmacs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every HMAC the SAS module computes, as (key bytes, message bytes)."""
    seen: list[tuple[int, int]] = []
    real = sas._signature

    def counted(key: bytes, encoded_uri: str, expiry: str) -> bytes:
        seen.append((len(key), len(f"{encoded_uri}\n{expiry}".encode())))
        return real(key, encoded_uri, expiry)

    monkeypatch.setattr(sas, "_signature", counted)
    return seen


def token_for(resource: str, key: str | None = None) -> str:
    return sas.sign(key or sas.generate_key(), resource, int(NOW) + 3600)


# -- the hub ---------------------------------------------------------------------------------


async def refusal_work(
    auth: DeviceAuth, hmacs: list[tuple[int, int]], device_id: str, module: str | None = None
) -> list[tuple[int, int]]:
    token = token_for(hub_resource(HOST, device_id, module))
    hmacs.clear()
    with pytest.raises(Unauthorized):
        await auth.with_sas(device_id, module, token, HOST)
    return list(hmacs)


async def test_an_unknown_id_costs_the_same_checks_as_a_wrong_key(
    hmacs: list[tuple[int, int]],
) -> None:
    # Ids of one length, so the signed strings are alike too.
    stores = await seeded(
        device("known-01"),
        device("disable1", enabled=False),
        device("gw-00001", kind=DeviceKind.GATEWAY),
        device("gw-00001/m1", kind=DeviceKind.MODULE, parent_id="gw-00001", module_id="m1"),
    )
    auth = DeviceAuth(registry(stores), Clock())
    wrong_key = await refusal_work(auth, hmacs, "known-01")
    assert len(wrong_key) == 2  # both of the device's keys were tried
    assert await refusal_work(auth, hmacs, "unknown1") == wrong_key
    assert await refusal_work(auth, hmacs, "disable1") == wrong_key
    # A module: one that exists, one that does not, and a device's id taken as a gateway's.
    module_wrong_key = await refusal_work(auth, hmacs, "gw-00001", "m1")
    assert len(module_wrong_key) == 2
    assert await refusal_work(auth, hmacs, "gw-00001", "m9") == module_wrong_key
    assert await refusal_work(auth, hmacs, "known-01", "m1") == module_wrong_key


async def test_the_real_key_still_signs_in_and_a_disabled_device_is_still_refused() -> None:
    good, off = device("dev-1"), device("dev-2", enabled=False)
    auth = DeviceAuth(registry(await seeded(good, off)), Clock())
    token = token_for(hub_resource(HOST, "dev-1"), good.secondary_key)
    assert await auth.with_sas("dev-1", None, token, HOST) == good
    assert await auth.with_sas("dev-1", None, token, HOST) == good  # from the cache
    with pytest.raises(Unauthorized, match="disabled"):
        await auth.with_sas(
            "dev-2", None, token_for(hub_resource(HOST, "dev-2"), off.primary_key), HOST
        )
    with pytest.raises(Unauthorized, match="unknown device"):
        await auth.with_sas("dev-3", None, token, HOST)


async def test_a_token_checked_without_remembering_is_verified_each_time(
    hmacs: list[tuple[int, int]],
) -> None:
    """MQTT connects check their token once per connection and keep nothing; HTTP ingest
    (the default) verifies a token once and then takes it from the cache."""
    good = device("dev-1")
    auth = DeviceAuth(registry(await seeded(good)), Clock())
    token = token_for(hub_resource(HOST, "dev-1"), good.primary_key)
    hmacs.clear()  # signing it was one
    for _ in range(2):
        assert await auth.with_sas("dev-1", None, token, HOST, remember=False) == good
    assert len(hmacs) == 2  # verified both times: nothing was kept
    hmacs.clear()
    for _ in range(2):
        assert await auth.with_sas("dev-1", None, token, HOST) == good
    assert len(hmacs) == 1  # the second came from the cache


# -- DPS -------------------------------------------------------------------------------------


def group_document(group_id: str) -> dict[str, Any]:
    return {
        "enrollmentGroupId": group_id,
        "project": "p",
        "deployment": "d",
        "attestation": {
            "type": "symmetricKey",
            "symmetricKey": {"primaryKey": sas.generate_key(), "secondaryKey": sas.generate_key()},
        },
        "provisioningStatus": "enabled",
    }


def provisioning(stores: Stores) -> ProvisioningService:
    reg = registry(stores)
    return ProvisioningService(stores, Clock(), reg, TemplateService(stores, Clock(), reg))


def group_token(group: dict[str, Any], registration_id: str) -> str:
    key = sas.derive_group_key(group["attestation"]["symmetricKey"]["primaryKey"], registration_id)
    return token_for(dps_resource(SCOPE, registration_id), key)


async def test_dps_refusals_cost_the_same_checks(hmacs: list[tuple[int, int]]) -> None:
    stores = await seeded(
        device("dev-0001"), device("far-0001", account="acc-2"), groups=[group_document("g1")]
    )
    service = provisioning(stores)

    async def work(registration_id: str) -> list[tuple[int, int]]:
        token = token_for(dps_resource(SCOPE, registration_id))
        hmacs.clear()
        with pytest.raises(Unauthorized):
            await service.authenticate(SCOPE, registration_id, token)
        return list(hmacs)

    known = await work("dev-0001")
    assert len(known) == 4  # the device's two keys, then the group's two derived keys
    assert await work("new-0001") == known
    assert await work("far-0001") == known  # another account's device


async def test_a_group_never_takes_over_an_individual_device() -> None:
    individual = device("dev-1", model_id="dtmi:own;1")
    made = device("dev-2", created_by="enrollmentGroup:g1")
    other_group = device("dev-3", created_by="enrollmentGroup:g2")
    elsewhere = device("dev-4", account="acc-2")
    g1 = group_document("g1")
    stores = await seeded(
        individual, made, other_group, elsewhere, groups=[g1, group_document("g2")]
    )
    service = provisioning(stores)

    for refused in ("dev-1", "dev-3", "dev-4"):
        with pytest.raises(Unauthorized):
            await service.authenticate(SCOPE, refused, group_token(g1, refused))
    # The group's own device, and an id nobody holds yet, are the group's to assign.
    own = await service.authenticate(SCOPE, "dev-2", group_token(g1, "dev-2"))
    assert own.device == made and own.group == g1
    fresh = await service.authenticate(SCOPE, "dev-5", group_token(g1, "dev-5"))
    assert fresh.device is None and fresh.group == g1
    # The individual device still signs in with its own key.
    by_key = await service.authenticate(
        SCOPE, "dev-1", token_for(dps_resource(SCOPE, "dev-1"), individual.primary_key)
    )
    assert by_key.device == individual and by_key.group is None


def test_dummy_keys_are_real_sized_keys() -> None:
    from thinghub.services.device_auth import DUMMY_KEYS

    assert len(DUMMY_KEYS) == 2 and len(set(DUMMY_KEYS)) == 2
    assert all(len(k) == len(sas.generate_key()) for k in DUMMY_KEYS)
