"""uploadData's one-pass check (_Preparer.check): every entry ends exactly as the full
checker (check_upload_entries, then accept) leaves it: the same points (times, values, JSON
text), the same entries kept, the same rejections with the same paths and messages."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from thinghub.domain.model import Device, DeviceKind
from thinghub.faces.itwin.data import Observations, _Preparer
from thinghub.faces.itwin.network import Sensor
from thinghub.faces.itwin.params import RejectedEntry, check_upload_entries
from thinghub.faces.itwin.scope import Scope

DEVICE = Device("d.1", "acc-1", DeviceKind.DEVICE, "d", "k1", "k2", 0.0, 0.0)
GOOD = "/s/good/sensor"
COMPONENT = "/s/component/sensor"
DECLARED = "/s/declared/sensor"
MISSING = "/s/missing/sensor"
STAMP = "2024-02-20T04:35:23.653Z"


def _preparer() -> _Preparer:
    owner = SimpleNamespace(services=SimpleNamespace(ingest=SimpleNamespace(max_payload_bytes=300)))
    prepare = _Preparer(cast(Observations, owner), cast(Scope, None), "itwin", [])
    for sensor_id, component, declared in (
        (GOOD, None, None),
        (COMPONENT, "thermostat1", None),
        (DECLARED, None, {"T"}),
    ):
        prepare.sensors[sensor_id] = Sensor(sensor_id, DEVICE, component, "d.1", "n")
        prepare.component_bytes[sensor_id] = len(component or "")
        prepare.declared[sensor_id] = declared
    prepare.sensors[MISSING] = None
    prepare.sensors[""] = None  # (an id no lookup finds)
    return prepare


def _entries() -> list[Any]:
    def entry(sensor: Any = GOOD, stamp: Any = STAMP, values: Any = None) -> dict[str, Any]:
        return {
            "sensorId": sensor,
            "timestamp": stamp,
            "values": {"T": 21.5} if values is None else values,
        }

    return [
        entry(),
        entry(values={"T": 1.0, "P": 2.5}),
        entry(stamp="2024-02-20T04:35:23Z"),
        entry(stamp="2024-02-20T04:35:23.653+00:00"),
        entry(stamp="2024-02-30T04:35:23.653Z"),  # no such day
        entry(stamp="0001-01-01T00:00:00.000Z"),  # the earliest time
        entry(stamp="June"),
        entry(stamp=12),
        entry(values={"T": 21}),  # an int becomes a float
        entry(values={"T": True}),
        entry(values={"T": "hot"}),
        entry(values={"T": float("inf")}),
        entry(values={"": 1.0}),
        entry(values={"x" * 129: 1.0}),
        entry(values={"\ud800": 1.0}),  # no UTF-8 text for orjson
        entry(values={f"m{i}": 1.0 for i in range(20)}),  # under the 300-byte limit
        entry(values={f"m{i}": 1.0 for i in range(40)}),  # over it
        entry(values={}),
        {"sensorId": GOOD, "timestamp": STAMP},
        entry(sensor=COMPONENT),
        entry(values={f"m{i}": 1.0 for i in range(30)}),  # 291 bytes: under
        entry(sensor=COMPONENT, values={f"m{i}": 1.0 for i in range(30)}),  # over with its name
        entry(),
        entry(sensor=DECLARED),
        entry(sensor=DECLARED, values={"P": 1.0}),
        entry(sensor=MISSING),
        entry(sensor=""),
        entry(sensor=["a list"]),
        {"timestamp": STAMP, "values": {"T": 1.0}},
        "not an object",
        entry(),
    ]


def by_index(rejected: RejectedEntry) -> int:
    return rejected.index


def test_one_pass_check_matches_the_full_checker() -> None:
    entries = _entries()
    fast = _preparer()
    assert fast.check(entries, 7) is None
    full = _preparer()
    full.rejected.extend(check_upload_entries(entries, 7, full.accept))

    # (upload sorts the rejections by index before answering)
    assert sorted(fast.rejected, key=by_index) == sorted(full.rejected, key=by_index)
    items, kept = fast.take()
    assert (items, kept) == full.take()
    assert kept == [
        (GOOD, [7, 8, 9, 10, 12, 15, 22, 27, 29, 37]),
        (COMPONENT, [26]),
        (DECLARED, [30]),
    ]
    assert [r.index for r in sorted(fast.rejected, key=by_index)] == [
        *(11, 13, 14, 16, 17, 18, 19, 20, 21, 23, 24, 25, 28),
        *(31, 32, 33, 34, 35, 36),
    ]
    assert [p[1:] for _, s in items for p in s.points][:2] == [
        ({"T": 21.5}, '{"T":21.5}'),
        ({"T": 1.0, "P": 2.5}, '{"T":1.0,"P":2.5}'),
    ]


def test_one_pass_check_stops_at_a_sensor_not_looked_up() -> None:
    prepare = _preparer()
    entries = [{"sensorId": GOOD, "timestamp": STAMP, "values": {"T": 1.0}}] * 2
    entries.insert(1, {"sensorId": "/s/new/sensor", "timestamp": STAMP, "values": {"T": 1.0}})
    assert prepare.check(entries, 0) == 1
    prepare.sensors["/s/new/sensor"] = None
    assert prepare.check(entries, 0, 1) is None
    items, kept = prepare.take()
    assert kept == [(GOOD, [0, 2])]
    assert [r.path for r in prepare.rejected] == ["data[1].sensorId"]
