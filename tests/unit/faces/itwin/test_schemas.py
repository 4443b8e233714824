"""Tests for thinghub.faces.itwin.schemas: the REST and Sensor Data Service bodies, as the seed
sends them, and the seed's error shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from tests.itwin_bodies import ADVANCED_INTEGRATION, SIMPLE_INTEGRATION
from tests.unit.faces.itwin.seed import SEED_UPLOAD_CURL
from thinghub.faces.itwin.body import read_json_body
from thinghub.faces.itwin.schemas import (
    INVALID_NODE_ID,
    MISSING_INTEGRATION_ID,
    IntegrateRequest,
    IntegrationError,
    SensorMetricsRequest,
    UploadRequest,
    check_integration,
    errors_body,
    integration_error_body,
    validation_errors_body,
)

SEED_INTEGRATE_NEW = SIMPLE_INTEGRATION.encode()

SEED_INTEGRATE_EXISTING = ADVANCED_INTEGRATION.encode()

# The same request in the seed's fetch sample (one line, refIds filled in).
SEED_INTEGRATE_EXISTING_FETCH = (
    b'{"integration":{"nodeId":"/api/B08851/node","devices":[{"changeState":"new","refId":'
    b'"/api/13DC2F/node-test-device","props":{"INTEGRATION_ID":"IMPORT_DEVICE_SDE","NAME":'
    b'"TestDevice","LOCATION":{"type":"Point","coordinates":[174.7805678,-41.27834066,20]},'
    b'"NOTES":"Demodevice"},"sensors":[{"changeState":"new","refId":'
    b'"/api/13DC2F/node-test-sensor","props":{"NAME":"TestSensor","SERIAL_NO":"1234",'
    b'"INTEGRATION_ID":"GENERIC_SENSOR_SDE","LOCATION":{"type":"Point","coordinates":'
    b'[174.7805678,-41.25834066,65]},"UNKNOWN_UNITS":{"0":"millimeter","1":"millimeter"},'
    b'"UNKNOWN_METRICS":{"0":"Alignment_Left_SD","1":"Alignment_Right_SD"},"NOTES":'
    b'"Genericsensor"}}]}]}}'
)


def integrate(body: bytes | dict[str, Any]) -> IntegrateRequest:
    raw = read_json_body(body) if isinstance(body, bytes) else body
    return IntegrateRequest.model_validate(raw)


def test_seed_new_connection_form() -> None:
    request = integrate(SEED_INTEGRATE_NEW)
    check_integration(request)
    integration = request.integration
    assert integration.changeState == "new" and integration.nodeId is None
    [device] = integration.devices
    assert device.state == "new" and device.props.INTEGRATION_ID == "IMPORT_DEVICE_SDE"
    assert [s.props.NAME for s in device.sensors] == ["Sensor-1", "Sensor-2"]
    assert device.sensors[0].props.UNKNOWN_METRICS == {
        "0": "Alignment_Left_SD",
        "1": "Alignment_Right_SD",
    }


@pytest.mark.parametrize("body", [SEED_INTEGRATE_EXISTING, SEED_INTEGRATE_EXISTING_FETCH])
def test_seed_existing_connection_form(body: bytes) -> None:
    request = integrate(body)
    check_integration(request)
    integration = request.integration
    assert integration.nodeId == "/api/B08851/node" and integration.changeState is None
    [device] = integration.devices
    [sensor] = device.sensors
    assert device.refId is not None and sensor.refId is not None
    assert device.props.LOCATION is not None
    assert device.props.LOCATION.coordinates == [174.7805678, -41.27834066, 20]
    assert sensor.props.SERIAL_NO == "1234"
    # Props the schema does not name are kept.
    assert sensor.props.all_props()["NOTES"] in ("Generic sensor", "Genericsensor")


def test_extra_props_are_kept() -> None:
    request = integrate(
        {
            "integration": {
                "nodeId": "/api/B08851/node",
                "devices": [{"props": {"INTEGRATION_ID": "IMPORT_DEVICE_SDE", "MODEL": "X1"}}],
            }
        }
    )
    assert request.integration.devices[0].props.all_props() == {
        "INTEGRATION_ID": "IMPORT_DEVICE_SDE",
        "MODEL": "X1",
    }
    assert request.integration.devices[0].state == "new"  # a missing changeState means new


def change(**over: Any) -> dict[str, Any]:
    return {"changeState": "new", "props": {"INTEGRATION_ID": "IMPORT_DEVICE_SDE"}} | over


@pytest.mark.parametrize(
    ("integration", "status", "message", "path"),
    [
        ({"devices": [change()]}, 422, "changeState", "integration.changeState"),
        ({"changeState": "update", "devices": []}, 422, "changeState", "integration.changeState"),
        ({"nodeId": "/api/13DC2F/node-test-device"}, 422, INVALID_NODE_ID, "integration.nodeId"),
        ({"nodeId": "/api/B08851/node/x/1/device"}, 422, INVALID_NODE_ID, "integration.nodeId"),
        (
            {"changeState": "new", "devices": [change(props={"NAME": "no template"})]},
            400,
            MISSING_INTEGRATION_ID,
            "integration.devices[0].props.INTEGRATION_ID",
        ),
        (
            {"changeState": "new", "devices": [change(props={"INTEGRATION_ID": "MADE_UP"})]},
            400,
            MISSING_INTEGRATION_ID,
            "integration.devices[0].props.INTEGRATION_ID",
        ),
        (
            {
                "changeState": "new",
                "devices": [change(sensors=[{"changeState": "new", "props": {}}])],
            },
            400,
            MISSING_INTEGRATION_ID,
            "integration.devices[0].sensors[0].props.INTEGRATION_ID",
        ),
        (
            {
                "changeState": "new",
                "devices": [
                    change(
                        sensors=[{"props": {"INTEGRATION_ID": "GENERIC_SENSOR_SDE", "NAME": "x"}}]
                    )
                ],
            },
            400,
            "must define its metrics",
            "integration.devices[0].sensors[0].props.KNOWN_METRICS",
        ),
        (
            {
                "changeState": "new",
                "devices": [
                    change(
                        sensors=[
                            {
                                "props": {
                                    "INTEGRATION_ID": "GENERIC_SENSOR_SDE",
                                    "KNOWN_METRICS": {"0": "f"},
                                    "KNOWN_UNITS": {"0": "mm"},
                                }
                            }
                        ]
                    )
                ],
            },
            400,
            "metric 'f' is a frequency, unit 'mm' is a length",
            "integration.devices[0].sensors[0].props.KNOWN_UNITS.0",
        ),
        (
            {"nodeId": "/api/B08851/node", "devices": [{"changeState": "remove"}]},
            400,
            "needs a refId or an id",
            "integration.devices[0]",
        ),
        (
            {"nodeId": "/api/B08851/node", "devices": [{"changeState": "update", "id": "nope"}]},
            400,
            "entity id",
            "integration.devices[0].id",
        ),
    ],
)
def test_integration_refusals(
    integration: dict[str, Any], status: int, message: str, path: str
) -> None:
    with pytest.raises(IntegrationError) as caught:
        check_integration(integrate({"integration": integration}))
    assert caught.value.status == status
    assert message in caught.value.message
    assert caught.value.path == path


def test_update_and_remove_by_ref_or_id() -> None:
    check_integration(
        integrate(
            {
                "integration": {
                    "nodeId": "/api/B08851/node",
                    "devices": [
                        {"changeState": "update", "refId": "r1", "props": {"NAME": "renamed"}},
                        {"changeState": "remove", "id": "/api/B08851/node/dynamic/6B7514/device"},
                    ],
                }
            }
        )
    )


def test_seed_integration_error_bodies() -> None:
    assert integration_error_body(MISSING_INTEGRATION_ID) == {
        "error": {
            "code": "InvalidProcessIntegrationRequest",
            "message": "Minimum request parameters not provided, new Devices and Sensors must "
            "have a valid `props.INTEGRATION_ID` set.",
        }
    }
    assert integration_error_body(INVALID_NODE_ID) == {
        "error": {
            "code": "InvalidProcessIntegrationRequest",
            "message": "Cannot process integration ensure the provided nodeId is valid.",
        }
    }


def test_schema_errors_of_integrate() -> None:
    with pytest.raises(ValidationError) as caught:
        IntegrateRequest.model_validate({"integration": {"changeState": "create"}})
    body = validation_errors_body(caught.value)
    assert body["errors"][0]["path"] == "integration.changeState"


# -- /data/upload -----------------------------------------------------------------------------


def test_seed_upload_curl_as_printed() -> None:
    request = UploadRequest.model_validate(read_json_body(SEED_UPLOAD_CURL))
    [observation] = request.observations
    assert observation.sensorId == "/api/B08851/node/dynamic/AB10E2/device/D76619/sensor"
    assert observation.timestamp == pytest.approx(1_708_403_723.653)
    assert observation.values == {"Alignment_Left_SD": 0.23, "Alignment_Right_SD": 0.84}


@pytest.mark.parametrize("body", [{"observations": []}, {}])
def test_seed_upload_error_body(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as caught:
        UploadRequest.model_validate(body)
    assert validation_errors_body(caught.value) == json.loads(
        """{
        "errors": [
            {
                "message": "must not be empty",
                "path": "observations"
            }
        ]
    }"""
    )


@pytest.mark.parametrize(
    ("observation", "path"),
    [
        ({"timestamp": "2024-02-20T04:35:23.653Z", "values": {"a": 1}}, "observations[0].sensorId"),
        (
            {"sensorId": "/s/sensor", "timestamp": "Feb", "values": {"a": 1}},
            "observations[0].timestamp",
        ),
        (
            {"sensorId": "/s/sensor", "timestamp": "2024-02-20T04:35:23.653Z", "values": {}},
            "observations[0].values",
        ),
        (
            {
                "sensorId": "/s/sensor",
                "timestamp": "2024-02-20T04:35:23.653Z",
                "values": {"a": "1"},
            },
            "observations[0].values.a",
        ),
        (
            {
                "sensorId": "/s/sensor",
                "timestamp": "2024-02-20T04:35:23.653Z",
                "values": {"a": True},
            },
            "observations[0].values.a",
        ),
    ],
)
def test_upload_errors_name_the_field(observation: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        UploadRequest.model_validate({"observations": [observation]})
    [error] = validation_errors_body(caught.value)["errors"]
    assert error["path"] == path
    assert "/s/sensor" not in error["message"]  # inputs are not echoed


def test_seed_sensor_metrics_request() -> None:
    body = {"ids": ["/api/B08851/node/dynamic/AB10E2/device/D76619/sensor"]}
    assert SensorMetricsRequest.model_validate(body).ids == body["ids"]
    with pytest.raises(ValidationError):
        SensorMetricsRequest.model_validate({"ids": []})


def test_seed_unauthorized_body() -> None:
    assert errors_body(
        [("Token has expired on Tue Feb 20 04:12:01 PST 2024", "Authorization")]
    ) == {
        "errors": [
            {
                "message": "Token has expired on Tue Feb 20 04:12:01 PST 2024",
                "path": "Authorization",
            }
        ]
    }
