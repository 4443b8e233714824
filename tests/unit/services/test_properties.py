"""PropertyService on the memory stores: one property read (the newer of reported and
desired, with its time) and written (a desired patch, checked against the template, a
component's marked `"__t": "c"`), and who may do either."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import FakeLink, Node
from thinghub.domain.errors import Forbidden, Invalid, NotFound, TooLarge
from thinghub.domain.model import Device, Principal, Role
from thinghub.services.core import Services

ADMIN = Principal("acc-1", Role.ADMIN, "admin")
VIEWER = Principal("acc-1", Role.VIEWER, "viewer")
IN_P1 = Principal("acc-1", Role.ADMIN, "limited", project="p1")
OTHER = Principal("acc-2", Role.ADMIN, "other")
TID = "dtmi:test:props;1"
TEMPLATE = {
    "@id": TID,
    "capabilityModel": {
        "@id": "dtmi:test:props:cm;1",
        "@type": "Interface",
        "contents": [
            {"@type": "Property", "name": "target", "schema": "double", "writable": True},
            {"@type": "Property", "name": "firmware", "schema": "string"},
            {
                "@type": "Component",
                "name": "thermostat1",
                "schema": {
                    "@id": "dtmi:test:props:thermostat;1",
                    "@type": "Interface",
                    "contents": [
                        {"@type": "Property", "name": "limit", "schema": "integer",
                         "writable": True},
                    ],
                },
            },
        ],
    },
}  # fmt: skip


async def templated(services: Services) -> Device:
    await services.templates.put(ADMIN, TID, TEMPLATE)
    return await services.registry.create_device(ADMIN, name="t", device_id="t", template=TID)


async def test_a_written_property_reads_back_until_the_device_reports(
    services: Services, clock: TestClock
) -> None:
    device = await templated(services)
    with pytest.raises(NotFound) as nothing_yet:
        await services.properties.read(ADMIN, "t", "target")
    assert nothing_yet.value.field == "propertyName"
    written = await services.properties.write(ADMIN, "t", "target", 21.5)
    assert (written.value, written.last_updated) == (21.5, clock.t)
    assert await services.properties.read(VIEWER, "t", "target") == written
    # The device acknowledges later, the Plug and Play way: its value is what it holds.
    clock.t += 10
    await services.twins.patch_reported(device, {"target": {"value": 22.0, "ac": 200, "av": 2}})
    read = await services.properties.read(ADMIN, device, "target")
    assert (read.value, read.last_updated) == (22.0, clock.t)
    # A newer write wins again.
    clock.t += 10
    await services.properties.write(ADMIN, device, "target", 23.0)
    assert (await services.properties.read(ADMIN, "t", "target")).value == 23.0


async def test_a_read_only_property_is_what_the_device_reported(
    services: Services, clock: TestClock
) -> None:
    device = await templated(services)
    await services.twins.patch_reported(device, {"firmware": "1.2"})
    assert (await services.properties.read(ADMIN, "t", "firmware")).value == "1.2"
    with pytest.raises(Invalid):  # read-only: not writable
        await services.properties.write(ADMIN, "t", "firmware", "2.0")


async def test_a_component_property_is_patched_with_the_component_marker(
    services: Services, live: Node
) -> None:
    device = await templated(services)
    link = FakeLink("t")
    await live.links.attach(link)  # connected: the patch reaches it at once
    await services.properties.write(ADMIN, "t", "thermostat1*limit", 30)
    twin = await services.twins.get(device)
    assert twin.desired.properties == {"thermostat1": {"__t": "c", "limit": 30}}
    assert link.desired == [({"thermostat1": {"__t": "c", "limit": 30}}, twin.desired.version)]
    assert (await services.properties.read(ADMIN, "t", "thermostat1*limit")).value == 30


@pytest.mark.parametrize(
    ("name", "value", "error", "field"),
    [
        ("target", "warm", Invalid, "target"),  # wrong schema
        ("target", None, Invalid, "value"),  # never null
        ("nope", 1, NotFound, "propertyName"),  # not in the template
        ("thermostat1*limit", 1.5, Invalid, "limit"),
    ],
)
async def test_the_template_checks_names_and_values(
    services: Services, name: str, value: Any, error: type[Exception], field: str
) -> None:
    device = await templated(services)
    with pytest.raises(error) as refused:
        await services.properties.write(ADMIN, "t", name, value)
    assert getattr(refused.value, "field", None) == field
    assert (await services.twins.get(device)).desired.version == 1  # nothing written


async def test_without_a_template_any_name_but_the_twins_bookkeeping(
    services: Services,
) -> None:
    device = await services.registry.create_device(ADMIN, name="d", device_id="d")
    await services.properties.write(ADMIN, "d", "anything", {"deep": [1, 2]})
    await services.properties.write(ADMIN, "d", "c1*x", "y")
    assert (await services.twins.get(device)).desired.properties == {
        "anything": {"deep": [1, 2]},
        "c1": {"__t": "c", "x": "y"},
    }
    for bad in ("$version", "c1*$metadata", "$c*x", "*x", "c1*"):
        with pytest.raises(Invalid) as refused:
            await services.properties.read(ADMIN, "d", bad)
        assert refused.value.field == "propertyName"
    with pytest.raises(TooLarge) as large:
        await services.properties.write(ADMIN, "d", "big", "x" * 40_000)
    assert large.value.field == "value"
    with pytest.raises(Invalid) as unstorable:
        await services.properties.write(ADMIN, "d", "n", 2**70)
    assert unstorable.value.field == "value"


async def test_who_may_read_and_write(services: Services) -> None:
    await services.registry.create_device(ADMIN, name="d", device_id="d", project="p2")
    await services.properties.write(ADMIN, "d", "x", 1)
    with pytest.raises(Forbidden):
        await services.properties.write(VIEWER, "d", "x", 2)
    with pytest.raises(Forbidden):  # the role first, whether or not the device exists
        await services.properties.write(VIEWER, "missing", "x", 2)
    for outsider in (IN_P1, OTHER):
        with pytest.raises(NotFound):
            await services.properties.read(outsider, "d", "x")
        with pytest.raises(NotFound):
            await services.properties.write(outsider, "d", "x", 2)
    assert (await services.properties.read(VIEWER, "d", "x")).value == 1
