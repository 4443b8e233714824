"""Tests for thinghub.faces.itwin.entities: node, device and sensor objects, against the seed.

Each expected object is the seed's example, copied literally; the input dataclasses are
filled with the values it shows.
"""

from __future__ import annotations

import json

from thinghub.faces.itwin.entities import (
    DeviceInfo,
    LastObservation,
    Location,
    NodeInfo,
    SensorInfo,
    TimeStyle,
    device_json,
    entity_json,
    integration_json,
    node_json,
    sensor_json,
)
from thinghub.faces.itwin.timestamps import parse_time


def t(text: str) -> float:
    return parse_time(text, "test")


SEED_NODE = """{
    "id": "/fn/6C4F6D/node",
    "type": "THREAD",
    "props": {
        "ACCESSIBLE": true,
        "DEVICE_GROUP": "/fn/6C4F6D/node",
        "GATEWAY": "/fn/6B652F/node",
        "LAST_COMM": "2016-10-18T22:26:24.818Z",
        "LOCATION": {
            "coordinates": [
                -53.900861,
                30.602073
            ]
        },
        "NAME": "North Sector THREAD #1",
        "OBSERVATION_COUNT": 16521,
        "POWER_MODE": "HIGH_POWER",
        "PROJECT_ID": "60F8B30928A37A575ECEE061"
    }
}"""


def test_seed_node_object() -> None:
    node = NodeInfo(
        id="/fn/6C4F6D/node",
        type="THREAD",
        name="North Sector THREAD #1",
        project_id="60F8B30928A37A575ECEE061",
        is_accessible=True,
        last_comm=t("2016-10-18T22:26:24.818Z"),
        observation_count=16521,
        location=Location((-53.900861, 30.602073), type=None),
        props={
            "DEVICE_GROUP": "/fn/6C4F6D/node",
            "GATEWAY": "/fn/6B652F/node",
            "POWER_MODE": "HIGH_POWER",
        },
    )
    assert node_json(node) == json.loads(SEED_NODE)


SEED_DEVICE = """{
    "id": "/fn/6C4F6D/node/dgsimlogger/032432/device",
    "type": "DGSI_M_LOGGER",
    "props": {
        "ACCESSIBLE": true,
        "EXTERNAL_PORT": 1,
        "LAST_OBSERVATION": {
            "timestamp": "2016-06-24T18:01:00.000Z"
        },
        "LOCATION": {
            "coordinates": [
                -53.900861,
                30.602073,
                -17.24
            ]
        },
        "MODE": "IPI_BIAXIAL",
        "NAME": "North Sector Logger 2",
        "NODE_ID": "/fn/6C4F6D/node",
        "OBSERVATION_COUNT": 8832,
        "SAMPLING_RATE_MAX": 0.0011111111111111111,
        "SENSOR_GROUP": "/fn/6C4F6D/node/dgsimlogger/032432/device",
        "SIZE": 4,
        "ZERO_DATE": "2016-03-22T07:00:00.000Z",
        "PROJECT_ID": "60F8B30928A37A575ECEE061"
    }
}"""


def test_seed_device_object() -> None:
    device = DeviceInfo(
        id="/fn/6C4F6D/node/dgsimlogger/032432/device",
        type="DGSI_M_LOGGER",
        name="North Sector Logger 2",
        node_id="/fn/6C4F6D/node",
        project_id="60F8B30928A37A575ECEE061",
        is_accessible=True,
        last_observation=LastObservation(t("2016-06-24T18:01:00.000Z")),
        observation_count=8832,
        location=Location((-53.900861, 30.602073, -17.24), type=None),
        props={
            "EXTERNAL_PORT": 1,
            "MODE": "IPI_BIAXIAL",
            "SAMPLING_RATE_MAX": 0.0011111111111111111,
            "SENSOR_GROUP": "/fn/6C4F6D/node/dgsimlogger/032432/device",
            "SIZE": 4,
            "ZERO_DATE": "2016-03-22T07:00:00.000Z",
        },
    )
    assert device_json(device) == json.loads(SEED_DEVICE)


SEED_SENSOR = """{
    "id": "/fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor",
    "device": "/fn/6C4F6D/node/dgsimlogger/032432/device",
    "type": "TILT_BIAXIAL_DGSI",
    "props": {
        "ACCESSIBLE": true,
        "LAST_OBSERVATION": {
            "sensorId": "/fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor",
            "timestamp": "2016-06-24T18:01:00.000Z",
            "values": [
                -0.20226,
                0.17345,
                0.70659
            ]
        },
        "LOCATION": {
            "coordinates": [
                -53.900861,
                30.602073,
                -17.24
            ]
        },
        "MUX_INDEX": 4,
        "NAME": "North Sector Tilt 2-2",
        "NODE_ID": "/fn/6C4F6D/node",
        "OBSERVATION_COUNT": 2208,
        "SAMPLING_RATE_MAX": 0.0011111111111111111,
        "SIZE": 4,
        "ZERO_DATE": "2016-03-22T07:00:00.000Z",
        "PROJECT_ID": "60F8B30928A37A575ECEE061"
    }
}"""


def test_seed_sensor_object() -> None:
    sensor_id = "/fn/6C4F6D/node/dgsimlogger/032432/device/tilt4/sensor"
    sensor = SensorInfo(
        id=sensor_id,
        device="/fn/6C4F6D/node/dgsimlogger/032432/device",
        type="TILT_BIAXIAL_DGSI",
        name="North Sector Tilt 2-2",
        node_id="/fn/6C4F6D/node",
        project_id="60F8B30928A37A575ECEE061",
        is_accessible=True,
        last_observation=LastObservation(
            t("2016-06-24T18:01:00.000Z"), sensor_id, (-0.20226, 0.17345, 0.70659)
        ),
        observation_count=2208,
        location=Location((-53.900861, 30.602073, -17.24), type=None),
        props={
            "MUX_INDEX": 4,
            "SAMPLING_RATE_MAX": 0.0011111111111111111,
            "SIZE": 4,
            "ZERO_DATE": "2016-03-22T07:00:00.000Z",
        },
    )
    assert sensor_json(sensor) == json.loads(SEED_SENSOR)
    assert entity_json(sensor) == json.loads(SEED_SENSOR)


def test_seed_create_answers() -> None:
    node = NodeInfo(
        id="/fn/02DDXX/node",
        type="THREAD",
        name="Sample thread",
        node_id="/fn/02DDXX/node",
        is_accessible=True,
    )
    assert node_json(node) == {
        "id": "/fn/02DDXX/node",
        "type": "THREAD",
        "props": {"NAME": "Sample thread", "NODE_ID": "/fn/02DDXX/node", "ACCESSIBLE": True},
    }
    device = DeviceInfo(
        id="/fn/02DDC5/node/demo/032432/device",
        type="DEMO",
        name="Demo device",
        node_id="/fn/02DDC5/node",
        is_accessible=True,
    )
    assert entity_json(device) == {
        "id": "/fn/02DDC5/node/demo/032432/device",
        "type": "DEMO",
        "props": {"NAME": "Demo device", "NODE_ID": "/fn/02DDC5/node", "ACCESSIBLE": True},
    }
    sensor = SensorInfo(
        id="/instantel/3E216E/node/demo_sensor/UM9169/device/demo-1/sensor",
        device="/instantel/3E216E/node/demo_sensor/UM9169/device",
        type="DEMO_SENSOR",
        name="Demo Sensor",
        node_id="/instantel/3E216E/node",
        is_accessible=True,
        serial_no="UM9169",
    )
    assert sensor_json(sensor) == json.loads(
        """{
      "type": "DEMO_SENSOR",
      "device": "/instantel/3E216E/node/demo_sensor/UM9169/device",
      "id": "/instantel/3E216E/node/demo_sensor/UM9169/device/demo-1/sensor",
      "props": {
         "ACCESSIBLE": true,
         "SERIAL_NO": "UM9169",
         "NODE_ID": "/instantel/3E216E/node",
         "NAME": "Demo Sensor"
      }
   }"""
    )


SEED_GET_NODES_RESULT = """[{
      "type": "DYNAMIC",
      "id": "/fn/6C954F/node",
      "props": {
        "PROJECT_ID": "60D90DF0B2BD096E970C2824",
        "ACCESSIBLE": false,
        "MODEL": "v11",
        "NODE_ID": "/fn/6C954F/node",
        "PORT_PROXY": 28957,
        "POWER_MODE": "HIGH_POWER",
        "LAST_MODIFIED_BY": "support",
        "LAST_MODIFIED_DATE": "2021-09-01T17:37:14.582Z",
        "LOCATION": {"type":"Point","coordinates":[null,null,null]},
        "SERIAL_NO": "6C954F",
        "NAME": "Thread 6C954F",
        "LAST_COMM": "2021-09-16T18:00:58.460Z",
        "INTEGRATION_ID": "THREAD_SDE",
        "CREATION_DATE": "2021-09-01T17:32:57.556Z",
        "VERSION": "v8_1-SNAPSHOT",
        "DEVICE_GROUP": "/fn/6C954F/node",
        "OBSERVATION_COUNT": 2519,
        "TYPE": "XC"
      },
      "customProps": {}
    }]"""


def test_seed_get_nodes_result() -> None:
    node = NodeInfo(
        id="/fn/6C954F/node",
        type="DYNAMIC",
        name="Thread 6C954F",
        node_id="/fn/6C954F/node",
        project_id="60D90DF0B2BD096E970C2824",
        is_accessible=False,
        last_comm=t("2021-09-16T18:00:58.460Z"),
        observation_count=2519,
        creation_date=t("2021-09-01T17:32:57.556Z"),
        location=Location(),
        serial_no="6C954F",
        integration_id="THREAD_SDE",
        props={
            "MODEL": "v11",
            "PORT_PROXY": 28957,
            "POWER_MODE": "HIGH_POWER",
            "LAST_MODIFIED_BY": "support",
            "LAST_MODIFIED_DATE": "2021-09-01T17:37:14.582Z",
            "VERSION": "v8_1-SNAPSHOT",
            "DEVICE_GROUP": "/fn/6C954F/node",
            "TYPE": "XC",
        },
        custom_props={},
    )
    assert [node_json(node)] == json.loads(SEED_GET_NODES_RESULT)


def test_seed_walkthrough_sensor_without_accessible() -> None:
    sensor = SensorInfo(
        id="/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor",
        device="/fn/xxxxx/node/dynamic/xxxxx/device",
        type="DYNAMIC",
        name="My Cool Rugged troll",
        node_id="/fn/xxxxx/node",
        project_id="60F8B30928A37A575ECEE061",
        props={"MODEL": "RUGGED_TROLL_200"},
    )
    assert sensor_json(sensor) == {
        "type": "DYNAMIC",
        "device": "/fn/xxxxx/node/dynamic/xxxxx/device",
        "id": "/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor",
        "props": {
            "MODEL": "RUGGED_TROLL_200",
            "NAME": "My Cool Rugged troll",
            "NODE_ID": "/fn/xxxxx/node",
            "PROJECT_ID": "60F8B30928A37A575ECEE061",
        },
    }


SEED_INTEGRATION = """{
    "integration": {
        "node": {
            "props": {
                "SERIAL_NO": "B6627B",
                "CREATION_DATE": "2024-03-05T10:27:22.553+00:00",
                "INTEGRATION_ID": "NODE_API_SDE",
                "PROJECT_ID": "65CB51CE8E199448BB4D4BDA",
                "NAME": "Data Source API Import B6627B"
            },
            "id": "/api/B6627B/node",
            "type": "DYNAMIC"
        },
        "devices": [
            {
                "device": {
                    "props": {
                        "SIZE": 2,
                        "CREATION_DATE": "2024-03-05T10:27:22.585+00:00",
                        "NODE_ID": "/api/B6627B/node",
                        "INTEGRATION_ID": "IMPORT_DEVICE_SDE",
                        "PROJECT_ID": "65CB51CE8E199448BB4D4BDA",
                        "NAME": "Device-1"
                    },
                    "id": "/api/B6627B/node/dynamic/BED858/device",
                    "type": "DYNAMIC"
                },
                "sensors": [
                    {
                        "props": {
                            "UNKNOWN_UNITS": {
                                "0": "millimeter",
                                "1": "millimeter"
                            },
                            "CREATION_DATE": "2024-03-05T10:27:22.615+00:00",
                            "UNKNOWN_METRICS": {
                                "0": "Alignment_Left_SD",
                                "1": "Alignment_Right_SD"
                            },
                            "NODE_ID": "/api/B6627B/node",
                            "INTEGRATION_ID": "GENERIC_SENSOR_SDE",
                            "PROJECT_ID": "65CB51CE8E199448BB4D4BDA",
                            "NAME": "Sensor-1"
                        },
                        "id": "/api/B6627B/node/dynamic/BED858/device/B2D116/sensor",
                        "observationType": "DYNAMIC",
                        "type": "DYNAMIC",
                        "device": "/api/B6627B/node/dynamic/BED858/device"
                    },
                    {
                        "props": {
                            "UNKNOWN_UNITS": {
                                "0": "millimeter",
                                "1": "millimeter"
                            },
                            "CREATION_DATE": "2024-03-05T10:27:22.626+00:00",
                            "UNKNOWN_METRICS": {
                                "0": "Alignment_Left_SD",
                                "1": "Alignment_Right_SD"
                            },
                            "NODE_ID": "/api/B6627B/node",
                            "INTEGRATION_ID": "GENERIC_SENSOR_SDE",
                            "PROJECT_ID": "65CB51CE8E199448BB4D4BDA",
                            "NAME": "Sensor-2"
                        },
                        "id": "/api/B6627B/node/dynamic/BED858/device/5AD71D/sensor",
                        "observationType": "DYNAMIC",
                        "type": "DYNAMIC",
                        "device": "/api/B6627B/node/dynamic/BED858/device"
                    }
                ]
            }
        ]
    }
}"""


def test_seed_integration_answer() -> None:
    project = "65CB51CE8E199448BB4D4BDA"
    node = NodeInfo(
        id="/api/B6627B/node",
        type="DYNAMIC",
        name="Data Source API Import B6627B",
        project_id=project,
        creation_date=t("2024-03-05T10:27:22.553+00:00"),
        serial_no="B6627B",
        integration_id="NODE_API_SDE",
    )
    device = DeviceInfo(
        id="/api/B6627B/node/dynamic/BED858/device",
        type="DYNAMIC",
        name="Device-1",
        node_id="/api/B6627B/node",
        project_id=project,
        creation_date=t("2024-03-05T10:27:22.585+00:00"),
        integration_id="IMPORT_DEVICE_SDE",
        props={"SIZE": 2},
    )
    generic = {
        "UNKNOWN_UNITS": {"0": "millimeter", "1": "millimeter"},
        "UNKNOWN_METRICS": {"0": "Alignment_Left_SD", "1": "Alignment_Right_SD"},
    }
    sensors = [
        SensorInfo(
            id=f"/api/B6627B/node/dynamic/BED858/device/{sid}/sensor",
            device="/api/B6627B/node/dynamic/BED858/device",
            type="DYNAMIC",
            observation_type="DYNAMIC",
            name=name,
            node_id="/api/B6627B/node",
            project_id=project,
            creation_date=t(created),
            integration_id="GENERIC_SENSOR_SDE",
            props=generic,
        )
        for sid, name, created in [
            ("B2D116", "Sensor-1", "2024-03-05T10:27:22.615+00:00"),
            ("5AD71D", "Sensor-2", "2024-03-05T10:27:22.626+00:00"),
        ]
    ]
    assert integration_json(node, [(device, sensors)]) == json.loads(SEED_INTEGRATION)


def test_known_fields_win_over_stored_props_and_none_is_left_out() -> None:
    node = NodeInfo(
        id="/thinghub/d/node",
        type="DYNAMIC",
        name="real name",
        node_id="/thinghub/d/node",
        props={"NAME": "stale", "ACCESSIBLE": True, "VERSION": "1"},
    )
    assert node_json(node)["props"] == {
        "NAME": "real name",
        "NODE_ID": "/thinghub/d/node",
        "ACCESSIBLE": True,  # a stored prop the info left None stays
        "VERSION": "1",
    }
    assert "customProps" not in node_json(node)


def test_creation_date_styles() -> None:
    node = NodeInfo(id="/a/node", type="T", creation_date=t("2024-02-20T12:50:57.069Z"))
    assert node_json(node)["props"]["CREATION_DATE"] == "2024-02-20T12:50:57.069Z"
    offset = node_json(node, TimeStyle.OFFSET)["props"]["CREATION_DATE"]
    assert offset == "2024-02-20T12:50:57.069+00:00"


def test_rendering_does_not_share_input_mappings() -> None:
    stored = {"SIZE": 1}
    custom = {"x": 1}
    out = device_json(DeviceInfo(id="/a/device", type="T", props=stored, custom_props=custom))
    out["props"]["SIZE"] = 99
    out["customProps"]["x"] = 99
    assert stored == {"SIZE": 1} and custom == {"x": 1}
