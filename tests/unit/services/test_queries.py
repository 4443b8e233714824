"""QueryService on the memory stores: a query is pinned to the caller's account, and to its
project when its token is limited to one."""

from __future__ import annotations

from typing import Any

from thinghub.domain.events import Event, EventType
from thinghub.domain.model import Principal, Role
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import EventQuery, Stores, TelemetryQuery
from thinghub.services.core import Services

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
