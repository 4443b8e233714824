"""Tests for thinghub.faces.itwin.ids: the fixed id mapping, both ways, and its refusals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.errors import Invalid
from thinghub.domain.ids import parse_id
from thinghub.faces.itwin.ids import (
    MAX_COMPONENT_CHARS,
    MAX_ITWIN_ID_CHARS,
    DeviceRef,
    EntityKind,
    EntityRef,
    NodeRef,
    SensorRef,
    check_itwin_id,
    derived_core_id,
    format_ref,
    kind_of,
    parse_ref,
)

TABLE: list[tuple[EntityRef, str]] = [
    (NodeRef("thermo-1"), "/thinghub/thermo-1/node"),
    (DeviceRef("thermo-1"), "/thinghub/thermo-1/node/device/thermo-1/device"),
    (SensorRef("thermo-1"), "/thinghub/thermo-1/node/device/thermo-1/device/default/sensor"),
    (
        SensorRef("thermo-1", "thermostat1"),
        "/thinghub/thermo-1/node/device/thermo-1/device/thermostat1/sensor",
    ),
    (DeviceRef("gw.7", "mod:a"), "/thinghub/gw.7/node/module/mod:a/device"),
    (
        SensorRef("gw.7", "env", "mod:a"),
        "/thinghub/gw.7/node/module/mod:a/device/env/sensor",
    ),
    (
        SensorRef("d", "a/b c%é"),
        "/thinghub/d/node/device/d/device/a%2Fb%20c%25%C3%A9/sensor",
    ),
]


@pytest.mark.parametrize(("ref", "text"), TABLE)
def test_format_and_parse_both_ways(ref: EntityRef, text: str) -> None:
    assert format_ref(ref) == text
    assert parse_ref(text) == ref
    assert kind_of(text) is ref.kind


def test_related_refs() -> None:
    sensor = SensorRef("gw", "env", "m1")
    assert sensor.device == DeviceRef("gw", "m1")
    assert sensor.device.node == NodeRef("gw")
    assert format_ref(sensor.device.node) == "/thinghub/gw/node"


def test_kind_is_checked_when_asked() -> None:
    text = format_ref(DeviceRef("d"))
    assert parse_ref(text, "device", EntityKind.DEVICE) == DeviceRef("d")
    with pytest.raises(Invalid) as caught:
        parse_ref(text, "sensors[0]", EntityKind.SENSOR)
    assert caught.value.field == "sensors[0]"
    assert "must be a sensor id, got a device id" in caught.value.message


@pytest.mark.parametrize(
    "text",
    [
        "/fn/6C4F6D/node",
        "/fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor",
        "/api/B6627B/node/dynamic/BED858/device",
        "/instantel/3E216E/node/demo_sensor/UM9169/device/demo-1/sensor",
        "/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor",
        "/node",
    ],
)
def test_ids_outside_the_scheme_are_well_formed_and_not_ours(text: str) -> None:
    assert check_itwin_id(text) == text
    assert parse_ref(text) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        "fn/6C4F6D/node",  # no leading /
        "/fn/6C4F6D/node/",  # trailing /
        "/fn//node",  # empty segment
        "/fn/6C4F6D/nodes",
        "/fn/6C4F6D/thing",
        "/fn/6C 4F/node",  # whitespace
        "/fn/6C\x00/node",  # control character
        "/fn/6C4F6D/node\n",
        "/api/13DC2F/node-test-device",  # a refId, not an entity id
        "/" + "a" * MAX_ITWIN_ID_CHARS + "/node",
    ],
)
def test_not_an_itwin_id(value: Any) -> None:
    with pytest.raises(Invalid) as caught:
        parse_ref(value, "nodes[1]")
    assert caught.value.field == "nodes[1]"


@pytest.mark.parametrize(
    "text",
    [
        "/thinghub/node",  # no device id
        "/thinghub/a/b/node",
        "/thinghub/a/device",
        "/thinghub/bad$id/node",  # not a core device id
        "/thinghub/" + "a" * 129 + "/node",
        "/thinghub/a/node/device/b/device",  # the device must repeat the node's id
        "/thinghub/a/node/gadget/a/device",
        "/thinghub/a/node/device/a",
        "/thinghub/a/node/device/a/device/sensor",
        "/thinghub/a/node/device/a/device/x/y/sensor",
        "/thinghub/a/node/device/a/device/x/node",
        "/thinghub/a/node/module/bad$m/device",
        "/thinghub/a/node/device/a/device/a%2fb/sensor",  # lower-case hex
        "/thinghub/a/node/device/a/device/%41/sensor",  # escaped safe character
        "/thinghub/a/node/device/a/device/a%2/sensor",  # truncated escape
        "/thinghub/a/node/device/a/device/%FF/sensor",  # not UTF-8
        "/thinghub/a/node/device/a/device/é/sensor",  # unescaped non-ASCII
        "/thinghub/a/node/device/a/device/" + "x" * (MAX_COMPONENT_CHARS + 1) + "/sensor",
    ],
)
def test_malformed_thinghub_ids_are_refused(text: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_ref(text, "sensor")
    assert caught.value.field == "sensor"


def test_component_named_default_is_the_default_sensor() -> None:
    assert format_ref(SensorRef("d", "default")) == format_ref(SensorRef("d"))
    assert parse_ref(format_ref(SensorRef("d", "default"))) == SensorRef("d")


def test_format_refuses_ids_the_core_would_not_have() -> None:
    with pytest.raises(ValueError):
        format_ref(NodeRef("bad/id"))
    with pytest.raises(ValueError):
        format_ref(DeviceRef("gw", "bad module"))
    with pytest.raises(ValueError):
        format_ref(SensorRef("d", ""))


CORE_IDS = st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)
COMPONENTS = st.text(min_size=1, max_size=MAX_COMPONENT_CHARS).filter(lambda c: c != "default")


@settings(max_examples=300, deadline=None)
@given(CORE_IDS, st.none() | CORE_IDS, st.none() | COMPONENTS)
def test_any_sensor_roundtrips(device: str, module: str | None, component: str | None) -> None:
    ref = SensorRef(device, component, module)
    text = format_ref(ref)
    assert len(text) <= MAX_ITWIN_ID_CHARS
    assert parse_ref(text, kind=EntityKind.SENSOR) == ref


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_text_parses_or_is_invalid(text: str) -> None:
    try:
        ref = parse_ref("/thinghub/" + text)
    except Invalid:
        return
    assert ref is not None and format_ref(ref) == "/thinghub/" + text


def test_derived_core_id_is_a_core_id_per_account() -> None:
    one = derived_core_id("acct-1", "/fn/02DDXX/node")
    assert one.startswith("fn.02DDXX.node.") and parse_id(one) == one
    assert derived_core_id("acct-1", "/fn/02DDXX/node") == one  # deterministic
    assert derived_core_id("acct-2", "/fn/02DDXX/node") != one  # core ids are global
    # Characters the core does not allow become _, and the hash keeps look-alikes apart.
    a = derived_core_id("acct-1", "/fn/a$b/node")
    b = derived_core_id("acct-1", "/fn/a_b/node")
    assert a.startswith("fn.a_b.node.") and b.startswith("fn.a_b.node.")
    assert a != b and parse_id(a) == a
    long = derived_core_id("acct-1", "/" + "x" * 400 + "/sensor")
    assert parse_id(long) == long
    with pytest.raises(Invalid):
        derived_core_id("acct-1", "not an id")
