"""TemplateService: storing templates per account, lookups and their cache, the ingest policy."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import pytest

from tests.unit.domain.dtdl._models import TID, template_body
from tests.unit.services.node import node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.model import Device, DeviceKind, Principal, Role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.domain.twin import Twin
from thinghub.ports import Stores
from thinghub.services import templates as templates_module
from thinghub.services.events import EventService
from thinghub.services.registry import Registry
from thinghub.services.templates import DOCUMENT_KIND, TEMPLATE_CACHE_S, TemplateService
from thinghub.storage.memory import MemoryDocumentStore, Tables, memory_stores


class CountingDocuments(MemoryDocumentStore):
    """The memory documents area, counting reads of one document."""

    def __init__(self, tables: Tables) -> None:
        super().__init__(tables)
        self.reads = 0

    async def get(self, account_id: str, kind: str, key: str) -> Any | None:
        self.reads += 1
        return await super().get(account_id, kind, key)


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


def service() -> tuple[TemplateService, Stores, FakeClock]:
    """The service on memory stores whose documents area counts reads."""
    tables, clock = Tables(), FakeClock()
    stores = dataclasses.replace(memory_stores(tables), documents=CountingDocuments(tables))
    n = node(clock)
    events = EventService(stores, n.bus, clock, n.counter)
    registry = Registry(
        stores, clock, events, n.bus, presence=n.presence, channel=n.links, locks=n.locks
    )
    return TemplateService(stores, clock, registry), stores, clock


async def stored_template(stores: Stores) -> Any:
    return await stores.documents.get("acc-1", DOCUMENT_KIND, TID)


async def test_service_crud_is_per_account() -> None:
    templates, stores, clock = service()
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
    assert (await stored_template(stores))["document"]["displayName"] == "Renamed"
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
    templates, stores, _ = service()
    await templates.put(ADMIN, TID, template_body())
    await stores.devices.insert(device(TID), Twin("d1"))
    with pytest.raises(Conflict, match="used by 1 device"):
        await templates.delete(ADMIN, TID)


async def test_policy_checks_templated_devices_only() -> None:
    templates, _, clock = service()
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
    templates, stores, clock = service()
    documents = cast(CountingDocuments, stores.documents)
    await templates.put(ADMIN, TID, template_body())
    await templates.find("acc-1", TID)
    reads = documents.reads
    for _ in range(5):
        assert await templates.find("acc-1", TID) is not None
    assert documents.reads == reads
    body = template_body()
    body["displayName"] = "v2"
    await templates.put(ADMIN, TID, body)
    assert (await templates.find("acc-1", TID)).display_name == "v2"  # type: ignore[union-attr]
    # A write elsewhere (another node) is seen once the cache entry ages out.
    changed = await stored_template(stores)
    changed["document"]["displayName"] = "v3"
    await stores.documents.put("acc-1", DOCUMENT_KIND, TID, changed, clock.t)
    assert (await templates.find("acc-1", TID)).display_name == "v2"  # type: ignore[union-attr]
    clock.t += 60
    assert (await templates.find("acc-1", TID)).display_name == "v3"  # type: ignore[union-attr]


async def test_a_missing_template_is_cached_until_one_is_saved() -> None:
    templates, stores, clock = service()
    documents = cast(CountingDocuments, stores.documents)
    assert await templates.find("acc-1", TID) is None
    reads = documents.reads
    assert await templates.find("acc-1", TID) is None  # "not found" is remembered too
    assert documents.reads == reads
    await templates.put(ADMIN, TID, template_body())
    assert await templates.find("acc-1", TID) is not None  # the save dropped the cached None
    await templates.delete(ADMIN, TID)
    assert await templates.find("acc-1", TID) is None  # and the delete the cached template
    clock.t += TEMPLATE_CACHE_S
    assert await templates.find("acc-1", TID) is None


async def test_a_full_cache_drops_its_oldest_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates_module, "TEMPLATE_CACHE_MAX", 2)
    templates, stores, _ = service()
    documents = cast(CountingDocuments, stores.documents)
    for name in ("a", "b", "c"):
        assert await templates.find("acc-1", f"dtmi:x:{name};1") is None
    reads = documents.reads
    await templates.find("acc-1", "dtmi:x:b;1")
    await templates.find("acc-1", "dtmi:x:c;1")
    assert documents.reads == reads  # the two newest stay cached
    await templates.find("acc-1", "dtmi:x:a;1")
    assert documents.reads == reads + 1  # the oldest was dropped, not the whole cache


def test_the_composition_root_wires_the_policy_into_ingest() -> None:
    clock = FakeClock()
    n = node(clock)
    services = build_services(
        Settings.defaults(),
        memory_stores(),
        bus=n.bus,
        clock=clock,
        presence=n.presence,
        channel=n.links,
        locks=n.locks,
        counter=n.counter,
        issuer=None,
    )
    assert services.templates.policy in services.ingest.policies
