"""TemplateService: storing templates per account, lookups and their cache, the ingest policy."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from tests.unit.domain.dtdl._models import TID, template_body
from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.model import Device, DeviceKind, Principal, Role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import Bus, Store
from thinghub.services.bus import MemoryBus
from thinghub.services.core import Core, CoreOptions
from thinghub.services.events import EventService
from thinghub.services.registry import Registry
from thinghub.services.templates import DOCUMENT_KIND, TemplateService


class FakeStore:
    """The documents and devices parts of the Store port, in memory."""

    def __init__(self) -> None:
        self.documents: dict[tuple[str, str, str], Any] = {}
        self.devices: list[Device] = []
        self.reads = 0

    async def put_document(
        self, account_id: str, kind: str, key: str, body: Any, now: float
    ) -> None:
        self.documents[(account_id, kind, key)] = copy.deepcopy(body)

    async def get_document(self, account_id: str, kind: str, key: str) -> Any | None:
        self.reads += 1
        return copy.deepcopy(self.documents.get((account_id, kind, key)))

    async def list_documents(self, account_id: str, kind: str) -> list[tuple[str, Any]]:
        return sorted(
            (k[2], copy.deepcopy(v))
            for k, v in self.documents.items()
            if k[:2] == (account_id, kind)
        )

    async def delete_document(self, account_id: str, kind: str, key: str) -> bool:
        return self.documents.pop((account_id, kind, key), None) is not None

    async def list_devices(self, account_id: str, **_: Any) -> list[Device]:
        return [d for d in self.devices if d.account_id == account_id]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t


ADMIN = Principal("acc-1", Role.ADMIN, "admin")
OTHER = Principal("acc-2", Role.ADMIN, "other")
VIEWER = Principal("acc-1", Role.VIEWER, "viewer")


def device(template_id: str | None, account: str = "acc-1") -> Device:
    return Device(
        "d1", account, DeviceKind.DEVICE, "d1", "k1", "k2", 0.0, 0.0, template=template_id
    )


def service() -> tuple[TemplateService, FakeStore, FakeClock]:
    store, clock = FakeStore(), FakeClock()
    store_port = cast(Store, store)
    registry = Registry(store_port, clock, EventService(store_port, cast(Bus, MemoryBus()), clock))
    return TemplateService(store_port, clock, registry), store, clock


async def test_service_crud_is_per_account() -> None:
    templates, store, clock = service()
    created = await templates.put(ADMIN, TID, template_body())
    assert created.created_at == created.updated_at == clock.t
    assert (await templates.get(ADMIN, TID)).document == created.document
    with pytest.raises(NotFound):
        await templates.get(OTHER, TID)
    assert [t.id for t in await templates.list(ADMIN)] == [TID]
    assert await templates.list(OTHER) == []
    clock.t += 10
    patched = await templates.patch(ADMIN, TID, {"displayName": "Renamed"})
    assert patched.display_name == "Renamed"
    assert patched.created_at == created.created_at
    assert patched.updated_at == clock.t
    assert store.documents[("acc-1", DOCUMENT_KIND, TID)]["document"]["displayName"] == "Renamed"
    with pytest.raises(Invalid, match="differs from the template id"):
        await templates.patch(ADMIN, TID, {"@id": "dtmi:other;1"})
    with pytest.raises(Invalid, match="merge patch"):
        await templates.patch(ADMIN, TID, [1])
    await templates.delete(ADMIN, TID)
    with pytest.raises(NotFound):
        await templates.get(ADMIN, TID)
    with pytest.raises(NotFound):
        await templates.delete(ADMIN, TID)


async def test_viewers_cannot_write() -> None:
    from thinghub.domain.errors import Forbidden

    templates, _, _ = service()
    with pytest.raises(Forbidden):
        await templates.put(VIEWER, TID, template_body())


async def test_templates_in_use_cannot_be_deleted() -> None:
    templates, store, _ = service()
    await templates.put(ADMIN, TID, template_body())
    store.devices.append(device(TID))
    with pytest.raises(Conflict, match="used by 1 device"):
        await templates.delete(ADMIN, TID)


async def test_policy_checks_templated_devices_only() -> None:
    templates, store, clock = service()
    await templates.put(ADMIN, TID, template_body())

    def message(body: Any, component: str | None = None) -> TelemetryMessage:
        return TelemetryMessage("acc-1", "d1", clock.t, body, b"", component=component)

    policy = templates.policy
    assert await policy.check(device(None), message({"anything": "goes"})) is None
    assert await policy.check(device("dtmi:gone;1"), message({"anything": "goes"})) is None
    assert await policy.check(device(TID), message({"temperature": 1.5})) is None
    assert await policy.check(device(TID), message({"temperature": 3}, "thermostat1")) is None
    reason = await policy.check(device(TID), message({"temperature": "hot"}))
    assert reason is not None
    assert "temperature must be a double" in reason
    reason = await policy.check(device(TID), message({"pressure": 1}))
    assert reason is not None
    assert "'pressure' is not in device template" in reason
    reason = await policy.check(device(TID), message(None))
    assert reason == "telemetry must be a JSON object"


async def test_lookups_are_cached_and_writes_invalidate() -> None:
    templates, store, clock = service()
    await templates.put(ADMIN, TID, template_body())
    await templates.find("acc-1", TID)
    reads = store.reads
    for _ in range(5):
        assert await templates.find("acc-1", TID) is not None
    assert store.reads == reads
    body = template_body()
    body["displayName"] = "v2"
    await templates.put(ADMIN, TID, body)
    assert (await templates.find("acc-1", TID)).display_name == "v2"  # type: ignore[union-attr]
    # A write elsewhere (another node) is seen once the cache entry ages out.
    store.documents[("acc-1", DOCUMENT_KIND, TID)]["document"]["displayName"] = "v3"
    assert (await templates.find("acc-1", TID)).display_name == "v2"  # type: ignore[union-attr]
    clock.t += 60
    assert (await templates.find("acc-1", TID)).display_name == "v3"  # type: ignore[union-attr]


def test_core_wires_the_policy_into_ingest() -> None:
    core = Core(cast(Store, FakeStore()), MemoryBus(), FakeClock(), CoreOptions())
    assert core.templates.policy in core.ingest.policies
