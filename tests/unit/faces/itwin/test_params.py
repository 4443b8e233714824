"""Tests for thinghub.faces.itwin.params: the socket methods' params as the seed sends them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from thinghub.faces.itwin.jsonrpc import INVALID_PARAMS, RpcError
from thinghub.faces.itwin.methods import bind
from thinghub.faces.itwin.params import (
    MAX_IDS_PER_REQUEST,
    AuthenticateParams,
    CreateDeviceParams,
    CreateNodeParams,
    CreateSensorParams,
    DataParams,
    GetNodesParams,
    GetRawMetricsParams,
    Limit,
    RejectedEntry,
    SubscribeDataParams,
    SummaryParams,
    UnsubscribeParams,
    UpdateSensorParams,
    read_upload_entries,
)

SENSOR = "/fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor"


def param_of(model: type[BaseModel], params: dict[str, Any]) -> str:
    with pytest.raises(RpcError) as caught:
        bind(model, params)
    assert caught.value.code == INVALID_PARAMS
    param: str = caught.value.data["param"]
    return param


def test_seed_get_data_params() -> None:
    params = bind(
        DataParams,
        {
            "sensor": SENSOR,
            "metric": "dx",
            "unit": "m",
            "params": {"ZERO_DATE": {"value": "2017-03-01T22:00:00.000Z"}},
            "startDate": "2017-01-01T23:17:10.305Z",
            "endDate": "2017-01-20T23:17:10.305Z",
        },
    )
    assert params.sensor == SENSOR and params.metric == "dx" and params.unit == "m"
    assert params.startDate == pytest.approx(1_483_312_630.305)
    assert params.endDate == pytest.approx(1_484_954_230.305)
    assert params.params == {"ZERO_DATE": {"value": "2017-03-01T22:00:00.000Z"}}
    assert params.limit is None and params.project_id is None


def test_walkthrough_get_data_with_empty_params_and_project() -> None:
    params = bind(
        DataParams,
        {
            "sensor": "/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor",
            "metric": "P_raw",
            "unit": "Pa",
            "params": {},
            "startDate": "2021-06-24T10:56:11.832Z",
            "endDate": "2021-07-22T00:38:05.477Z",
            "projectIds": ["60F8B30928A37A575ECEE061"],
        },
    )
    assert params.project_id == "60F8B30928A37A575ECEE061"


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ({"function": "last", "params": {"size": 1}}, Limit(function="last", size=1)),
        ({"function": "first", "params": {"size": 1}}, Limit(function="first", size=1)),
        ({"function": "first"}, Limit(function="first", size=1)),
        ("last", Limit(function="last", size=1)),  # Bentley's client sends the bare string
    ],
)
def test_limit_shapes(limit: Any, expected: Limit) -> None:
    params = bind(DataParams, {"sensor": SENSOR, "metric": "T", "unit": "C", "limit": limit})
    assert params.limit == expected


@pytest.mark.parametrize(
    "limit",
    [
        "middle",
        {"function": "last", "params": {"size": 0}},
        {"function": "last", "params": {"size": True}},
        5,
    ],
)
def test_bad_limits(limit: Any) -> None:
    assert param_of(
        DataParams, {"sensor": SENSOR, "metric": "T", "unit": "C", "limit": limit}
    ).startswith("limit")


def test_end_before_start_is_refused() -> None:
    base = {"sensor": SENSOR, "metric": "T", "unit": "C"}
    dates = {"startDate": "2021-07-22T00:00:00.000Z", "endDate": "2021-06-24T00:00:00.000Z"}
    with pytest.raises(RpcError) as caught:
        bind(DataParams, base | dates)
    assert "endDate is before startDate" in caught.value.message


def test_project_ids() -> None:
    assert bind(GetNodesParams, {"projectIds": "p"}).project_id == "p"  # a lone string
    assert bind(GetNodesParams, {"projectIds": []}).project_id is None
    assert param_of(GetNodesParams, {"projectIds": ["a", "b"]}) == "projectIds"
    assert param_of(GetNodesParams, {"projectIds": [5]}) == "projectIds[0]"


def test_id_lists_are_bounded() -> None:
    assert param_of(GetNodesParams, {"nodes": ["/a/node"] * (MAX_IDS_PER_REQUEST + 1)}) == "nodes"
    assert param_of(GetNodesParams, {"nodes": [""]}) == "nodes[0]"


def test_seed_create_requests() -> None:
    node = bind(
        CreateNodeParams,
        {
            "node": "/fn/02DDXX/node",
            "type": "THREAD",
            "props": {"NAME": "Sample thread", "SERIAL_NO": "02DDXX", "VERSION": "v4_6"},
        },
    )
    assert node.props["VERSION"] == "v4_6"
    device = bind(
        CreateDeviceParams,
        {
            "device": "/fn/02DDC5/node/demo/032432/device",
            "type": "DEMO",
            "props": {"NAME": "Demo device", "NODE_ID": "/fn/02DDC5/node"},
        },
    )
    assert device.props["NODE_ID"] == "/fn/02DDC5/node"
    sensor = bind(
        CreateSensorParams,
        {
            "sensor": "/instantel/3E216E/node/demo_sensor/UM9169/device/demo-1/sensor",
            "observationType": "DEMO_SENSOR",
            "type": "DEMO_SENSOR",
            "props": {"NAME": "Demo Sensor"},
        },
    )
    assert sensor.observationType == "DEMO_SENSOR"


def test_create_node_needs_version_and_device_needs_node_id() -> None:
    node = {"node": "/fn/02DDXX/node", "type": "THREAD", "props": {"NAME": "x"}}
    with pytest.raises(RpcError) as caught:
        bind(CreateNodeParams, node)
    assert caught.value.data["param"] == "props" and "VERSION" in caught.value.message
    device = {"device": "/fn/1/node/d/2/device", "type": "DEMO", "props": {"NAME": "x"}}
    with pytest.raises(RpcError) as caught:
        bind(CreateDeviceParams, device)
    assert caught.value.data["param"] == "props" and "NODE_ID" in caught.value.message


def test_update_mirrors_create() -> None:
    params = bind(UpdateSensorParams, {"sensor": SENSOR, "props": {"NAME": "renamed"}})
    assert params.props == {"NAME": "renamed"}
    assert param_of(UpdateSensorParams, {"sensor": SENSOR}) == "props"


def test_get_raw_metrics_needs_sensors_or_types() -> None:
    assert bind(GetRawMetricsParams, {"types": ["GENERIC_SENSOR_SDE"]}).types == [
        "GENERIC_SENSOR_SDE"
    ]
    assert param_of(GetRawMetricsParams, {}) == "params"


def test_summary_takes_sensor_or_sensors() -> None:
    assert bind(SummaryParams, {"sensors": ["/a/sensor", "/b/sensor"]}).sensor_ids == [
        "/a/sensor",
        "/b/sensor",
    ]
    assert bind(SummaryParams, {"sensor": "/a/sensor"}).sensor_ids == ["/a/sensor"]
    assert param_of(SummaryParams, {}) == "params"


def test_subscribe_data_needs_sensors() -> None:
    params = bind(
        SubscribeDataParams,
        {
            "sensors": [SENSOR],
            "metric": "dx",
            "unit": "m",
            "params": {"START_DATE": {"value": "2017-03-01T22:00:00.000Z"}},
        },
    )
    assert params.sensors == [SENSOR]
    assert param_of(SubscribeDataParams, {"sensors": [], "metric": "dx", "unit": "m"}) == "sensors"


@pytest.mark.parametrize(("given", "answered"), [("7", 7), (7, 7), ("abc", "abc"), ("07", "07")])
def test_unsubscribe_id_is_read_like_a_request_id(given: Any, answered: Any) -> None:
    assert bind(UnsubscribeParams, {"id": given}).id == answered


@pytest.mark.parametrize("given", [True, None, [1]])
def test_unsubscribe_needs_an_id(given: Any) -> None:
    assert param_of(UnsubscribeParams, {"id": given}) == "id"


def test_authenticate_code_is_bounded() -> None:
    assert bind(AuthenticateParams, {"code": "A8345HJBWW45939KUIYB"}).code == "A8345HJBWW45939KUIYB"
    assert param_of(AuthenticateParams, {"code": ""}) == "code"
    assert param_of(AuthenticateParams, {"code": "x" * 10_000}) == "code"
    assert param_of(AuthenticateParams, {}) == "code"


def test_upload_entries_one_by_one() -> None:
    seed_entry = {
        "sensorId": "/trimble4d/nodeId/node/deviceId/device/sensorId/sensor",
        "timestamp": "2018-06-04T19:35:35.400Z",
        "values": {
            "e": 100.0,
            "e_adjusted": 101.0,
            "n": 100.0,
            "n_adjusted": 101.0,
            "h": 100.0,
            "h_adjusted": 101.0,
            "ha": 45.0,
            "za": 60.0,
            "sd": 100.0,
            "sd_corrected": 101.0,
            "T": 23.0,
            "P": 101325,
        },
    }
    data = [
        seed_entry,
        "not an object",
        {"timestamp": "2018-06-04T19:35:35.400Z", "values": {"T": 1}},
        {"sensorId": "/s/sensor", "timestamp": "June", "values": {"T": 1}},
        {"sensorId": "/s/sensor", "timestamp": "2018-06-04T19:35:35.400Z", "values": {}},
        {"sensorId": "/s/sensor", "timestamp": "2018-06-04T19:35:35.400Z", "values": {"T": "hot"}},
        {"sensorId": "/s/sensor", "timestamp": "2018-06-04T19:35:35.400Z", "values": {"T": True}},
        {
            "sensorId": "/s/sensor",
            "timestamp": "2018-06-04T19:35:35.400Z",
            "values": {"T": 10**400},
        },
        {"sensorId": "/s/sensor", "timestamp": "2018-06-04T19:35:36Z", "values": {"T": -4}},
    ]
    good, bad = read_upload_entries(data)
    assert [(e.index, e.sensor_id, e.ts) for e in good] == [
        (0, seed_entry["sensorId"], pytest.approx(1_528_140_935.4)),
        (8, "/s/sensor", 1_528_140_936.0),
    ]
    assert good[0].values["P"] == 101325.0 and isinstance(good[0].values["P"], float)
    assert good[1].values == {"T": -4.0}
    assert [(b.index, b.path) for b in bad] == [
        (1, "data[1]"),
        (2, "data[2].sensorId"),
        (3, "data[3].timestamp"),
        (4, "data[4].values"),
        (5, "data[5].values"),
        (6, "data[6].values"),
        (7, "data[7].values"),
    ]
    assert bad[4] == RejectedEntry(
        5, "data[5].values", "T must be a number, got 'hot'", "/s/sensor"
    )
