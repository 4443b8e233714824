"""QueryService on the memory stores: a query is pinned to the caller's account, and to its
project when its token is limited to one."""

from __future__ import annotations

from typing import Any

import pytest

from thinghub.domain.errors import Forbidden, NotFound
from thinghub.domain.events import Event, EventType
from thinghub.domain.model import Principal, Role
from thinghub.domain.telemetry import Observation, TelemetryMessage
from thinghub.ports import EventQuery, Stores, TelemetryQuery
from thinghub.services.core import Services
from thinghub.services.queries import LATEST_SCAN_MESSAGES

T0 = 1_700_000_000.0
ADMIN = Principal("acc-1", Role.VIEWER, "viewer")
IN_P1 = Principal("acc-1", Role.VIEWER, "limited", project="p1")


async def seed(stores: Stores) -> None:
    for i, (account, project) in enumerate(
        [("acc-1", "p1"), ("acc-1", "p2"), ("acc-1", None), ("acc-2", "p1")]
    ):
        device = f"dev-{i}"
        await stores.telemetry.append(
            [TelemetryMessage(account, device, T0 + i, {"i": i}, b"", project=project)], []
        )
        await stores.events.append(
            Event(account, device, EventType.CHANGE, T0 + i, {"i": i}, project)
        )


async def test_queries_see_the_callers_account_and_project(
    services: Services, stores: Stores
) -> None:
    await seed(stores)

    async def telemetry(principal: Principal, **filters: Any) -> list[str]:
        page = await services.queries.telemetry(principal, TelemetryQuery("acc-2", **filters))
        return [m.device_id for m in page.items]

    async def events(principal: Principal, **filters: Any) -> list[str]:
        page = await services.queries.events(principal, EventQuery("acc-2", **filters))
        return [e.device_id for e in page.items]

    # The account in the query is the caller's, whatever the query said.
    for listing in (telemetry, events):
        assert await listing(ADMIN) == ["dev-2", "dev-1", "dev-0"]
        assert await listing(ADMIN, project="p2") == ["dev-1"]
        assert await listing(IN_P1) == ["dev-0"]
        assert await listing(IN_P1, project="p1") == ["dev-0"]
        assert await listing(IN_P1, project="p2") == []  # another project: nothing
        assert await listing(IN_P1, device_id="dev-1") == []


async def test_latest_values_hold_every_type_newest_first_and_clear(
    services: Services, stores: Stores, clock: Any
) -> None:
    owner = Principal("acc-1", Role.OPERATOR, "op")
    device = await services.registry.create_device(owner, name="d", project="p1")
    did = device.id

    async def ingest(ts: float, body: dict[str, Any]) -> None:
        message = TelemetryMessage("acc-1", did, ts, body, b"", project="p1")
        observations = [
            Observation("acc-1", did, k, ts, float(v))
            for k, v in body.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        await stores.telemetry.append([message], observations)

    await ingest(T0, {"n": 1, "s": "old", "flag": True})
    await ingest(T0 + 1, {"n": 2})
    await ingest(T0 + 2, {"s": "new", "obj": {"a": 1}})
    values = await services.queries.latest_values(owner, device)
    assert values == {
        "n": (2, T0 + 1),  # as sent: an integer stays one
        "s": ("new", T0 + 2),
        "flag": (True, T0),
        "obj": ({"a": 1}, T0 + 2),
    }
    with pytest.raises(NotFound):  # another account's device
        await services.queries.latest_values(Principal("acc-2", Role.ADMIN, "x"), device)
    clock.t = T0 + 5
    await services.queries.clear_latest(owner, device)
    assert await services.queries.latest_values(owner, device) == {}
    await ingest(T0 + 6, {"n": 3})
    assert await services.queries.latest_values(owner, device) == {"n": (3, T0 + 6)}
    with pytest.raises(Forbidden):
        await services.queries.clear_latest(Principal("acc-1", Role.VIEWER, "v"), device)


async def test_wanted_keys_are_looked_for_beyond_the_newest_messages(
    services: Services, stores: Stores, clock: Any
) -> None:
    owner = Principal("acc-1", Role.OPERATOR, "op")
    device = await services.registry.create_device(owner, name="d", project="p1")
    old = TelemetryMessage("acc-1", device.id, T0, {"s": "on", "b": True}, b"", project="p1")
    await stores.telemetry.append([old], [])
    for i in range(1, LATEST_SCAN_MESSAGES + 50):
        newer = TelemetryMessage("acc-1", device.id, T0 + i, {"x": "y"}, b"", project="p1")
        await stores.telemetry.append([newer], [])
    assert "s" not in await services.queries.latest_values(owner, device)
    wanted = await services.queries.latest_values(owner, device, frozenset({"s", "never"}))
    assert wanted == {"x": ("y", T0 + LATEST_SCAN_MESSAGES + 49), "s": ("on", T0)}
    clock.t = T0 + 1_000
    await services.queries.clear_latest(owner, device)
    assert await services.queries.latest_values(owner, device, frozenset({"s"})) == {}
