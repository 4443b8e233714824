"""What the console's pages show (faces/console/views.py): series for a plot, iTwin ids, the
ux4iot endpoint, times."""

from __future__ import annotations

from thinghub.domain.model import Device, DeviceKind
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.faces.console.views import (
    MAX_SERIES_METRICS,
    itwin_ids,
    series_of,
    show_time,
    ux4iot_endpoint,
)


def message(ts: float, body: object, component: str | None = None) -> TelemetryMessage:
    return TelemetryMessage("acct", "dev", ts, body, b"", component=component)


def test_series_are_sorted_aligned_and_skip_messages_without_numbers() -> None:
    series = series_of(
        [
            message(3.0, {"t": 22.0}),
            message(1.0, {"t": 20.0, "h": 40}),
            message(2.0, {"status": "ok"}),  # no numbers: no point
            message(4.0, {"h": 41, "p": 1000}),
        ]
    )
    assert series.times == [1.0, 3.0, 4.0]
    assert series.columns == {"t": [20.0, 22.0, None], "h": [40, None, 41], "p": [None, None, 1000]}
    assert series.as_json() == {
        "metrics": ["t", "h", "p"],
        "data": [[1.0, 3.0, 4.0], [20.0, 22.0, None], [40, None, 41], [None, None, 1000]],
    }
    assert series_of([]).as_json() == {"metrics": [], "data": [[]]}


def test_a_series_keeps_at_most_its_metric_limit() -> None:
    body = {f"m{i:02d}": i for i in range(MAX_SERIES_METRICS + 5)}
    series = series_of([message(1.0, body)])
    assert len(series.columns) == MAX_SERIES_METRICS
    assert len(series.times) == 1


def test_itwin_ids_name_the_node_device_and_a_sensor_per_component() -> None:
    device = Device("hall-1", "acct", DeviceKind.DEVICE, "Hall", "k1", "k2", 0.0, 0.0)
    ids = itwin_ids(device, [None, "thermostat 1", None])
    assert ids["node"] == "/thinghub/hall-1/node"
    assert ids["device"] == "/thinghub/hall-1/node/device/hall-1/device"
    assert ids["sensors"] == [
        ("default", "/thinghub/hall-1/node/device/hall-1/device/default/sensor"),
        ("thermostat 1", "/thinghub/hall-1/node/device/hall-1/device/thermostat%201/sensor"),
    ]


def test_the_ux4iot_endpoint_has_no_trailing_slash() -> None:
    assert ux4iot_endpoint("http://h:8080") == "http://h:8080/ux4iot"
    assert ux4iot_endpoint("https://iot.example.com/") == "https://iot.example.com/ux4iot"


def test_times_are_shown_in_utc() -> None:
    assert show_time(0.0) == "1970-01-01 00:00:00 UTC"
    assert show_time(None) == "—"
