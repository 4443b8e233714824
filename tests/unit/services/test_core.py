"""Services, the bundle the composition root (app.py `build_services`) hands every adapter:
it holds services and nothing else, the settings reach the services that enforce them, the
wiring between services works (a deleted device's twin is forgotten, templates check
telemetry), and `start` keeps one JWT secret across restarts.

Also: every module of thinghub.services has its unit test module here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import FakeLink, Node, node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.errors import Invalid, TooLarge, Unauthorized
from thinghub.domain.events import EventType
from thinghub.domain.model import Principal, Role
from thinghub.ports import EventQuery, Stores
from thinghub.services.core import Services
from thinghub.storage.memory import memory_stores

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
SERVICES_DIR = Path(__file__).resolve().parents[3] / "src" / "thinghub" / "services"


async def built(settings: Settings, stores: Stores, clock: TestClock, live: Node) -> Services:
    services = build_services(
        settings,
        stores,
        bus=live.bus,
        clock=clock,
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=None,
    )
    await services.start()
    return services


def test_every_service_module_has_its_unit_tests() -> None:
    modules = {p.stem for p in SERVICES_DIR.glob("*.py")} - {"__init__"}
    assert {"registry", "twins", "authz", "core"} <= modules  # the listing found them
    here = Path(__file__).parent
    missing = sorted(m for m in modules if not (here / f"test_{m}.py").is_file())
    assert missing == [], f"services without a unit test module here: {missing}"


def test_the_bundle_holds_services_and_nothing_else(services: Services) -> None:
    names = [f.name for f in dataclasses.fields(Services)]
    assert not {"store", "stores", "links", "clock", "bus", "presence"} & set(names)
    for name in names:
        value = getattr(services, name)
        assert type(value).__module__.startswith("thinghub.services."), (name, type(value))
    with pytest.raises(dataclasses.FrozenInstanceError):
        services.auth = services.auth  # type: ignore[misc]


async def test_the_settings_reach_the_services_that_enforce_them(
    clock: TestClock, stores: Stores, live: Node
) -> None:
    tight = dataclasses.replace(
        Settings.defaults(), method_timeout_max_s=10.0, command_ttl_s=120.0, max_payload_bytes=100
    )
    services = await built(tight, stores, clock, live)
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    link = FakeLink("d")
    await live.links.attach(link)
    await services.registry.set_connected(device, True)
    with pytest.raises(Invalid, match="from 5 to 10, got 11"):
        await services.commands.invoke(ADMIN, "d", "m", None, 11)
    assert await services.commands.invoke(ADMIN, "d", "m", None, 10)
    with pytest.raises(Invalid):
        await services.commands.submit(ADMIN, "d", "m", None, None, 121)
    assert (await services.commands.submit(ADMIN, "d", "m", None)).expires_at == clock.t + 120
    with pytest.raises(TooLarge):
        services.ingest.build(device, b"x" * 101)
    # The defaults allow all of it (so the limits above are the settings', not fixed ones).
    roomy = await built(Settings.defaults(), memory_stores(), clock, node(clock))
    assert roomy.ingest.build(device, b"x" * 101).raw == b"x" * 101
    assert roomy.commands.ttl_s == Settings.defaults().command_ttl_s > 120


async def test_a_deleted_device_leaves_no_twin_behind(services: Services) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    await services.registry.edit_device(ADMIN, "d", desired={"target": 1})
    assert (await services.twins.get(device)).desired.properties == {"target": 1}  # cached
    await services.registry.delete_device(ADMIN, "d")
    again = await services.registry.create_device(ADMIN, name="d", device_id="d")
    assert (await services.twins.get(again)).desired.properties == {}


async def test_a_templated_devices_telemetry_is_checked_on_ingest(
    services: Services, stores: Stores
) -> None:
    template = {
        "@id": "dtmi:test:core;1",
        "capabilityModel": {
            "@type": "Interface",
            "contents": [{"@type": "Telemetry", "name": "x", "schema": "double"}],
        },
    }
    await services.templates.put(ADMIN, "dtmi:test:core;1", template)
    await services.registry.create_device(
        ADMIN, name="d", device_id="d", template="dtmi:test:core;1"
    )
    assert await services.ingest.send(ADMIN, "d", {"x": 1.5}, source="api")
    with pytest.raises(Invalid):
        await services.ingest.send(ADMIN, "d", {"x": "warm"}, source="api")
    rejected = await stores.events.query(
        EventQuery("acc-1", event_types=frozenset({EventType.TELEMETRY_REJECTED}))
    )
    assert len(rejected.items) == 1


async def test_start_keeps_one_jwt_secret_across_restarts(
    clock: TestClock, stores: Stores, live: Node
) -> None:
    first = await built(Settings.defaults(), stores, clock, live)
    account = await first.auth.ensure_account()
    issued = await first.auth.create_token(account.id, Role.VIEWER, label="app")
    access, _ttl = await first.auth.client_credentials_grant(issued.token.id, issued.secret)
    # A restart over the same storage verifies access tokens issued before it.
    restarted = await built(Settings.defaults(), stores, clock, node(clock))
    caller = await restarted.auth.authenticate_bearer(access)
    assert (caller.account_id, caller.role) == (account.id, Role.VIEWER)
    # Other storage has another secret.
    elsewhere = await built(Settings.defaults(), memory_stores(), clock, node(clock))
    with pytest.raises(Unauthorized):
        await elsewhere.auth.authenticate_bearer(access)
    unstarted = build_services(
        Settings.defaults(),
        stores,
        bus=live.bus,
        clock=clock,
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=None,
    )
    with pytest.raises(RuntimeError, match="start"):
        _ = unstarted.auth.jwt
