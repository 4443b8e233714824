"""Tests for thinghub.faces.itwin.catalog: metric, unit and template objects, against the seed."""

from __future__ import annotations

import json

import pytest

from thinghub.domain.errors import Invalid
from thinghub.domain.metrics import METRICS, UNITS, generic_sensor_metrics, metrics_with_deltas
from thinghub.faces.itwin.catalog import (
    device_types_body,
    metric_json,
    metric_type_json,
    metrics_by_sensor_body,
    metrics_types_body,
    sensor_types_body,
    unit_json,
    units_by_metric,
)

SEED_GET_METRICS = """{
      "/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor":[
         {
            "id":"dT",
            "name":"delta temperature",
            "displayName":"∆ Temperature",
            "defaultUnit":"C",
            "notation":"∆T",
            "hidden":false,
            "params":[
               {
                  "id":"dt",
                  "mandatory":false
               },
               {
                  "id":"START_DATE",
                  "mandatory":false
               },
               {
                  "id":"ZERO_DATE",
                  "mandatory":false
               }
            ]
         },
         {
            "id":"T",
            "name":"temperature",
            "displayName":"Temperature",
            "defaultUnit":"C",
            "notation":"T",
            "hidden":false,
            "params":[

            ]
         },
         {
            "id":"P_raw",
            "name":"raw pressure",
            "displayName":"Raw Pressure",
            "defaultUnit":"Pa",
            "notation":"P_raw",
            "hidden":false,
            "params":[

            ]
         }
      ]
   }"""


def test_seed_get_metrics_of_a_rugged_troll() -> None:
    sensor = "/fn/xxxxx/node/dynamic/xxxxx/device/rugged_troll_insitu_sde/sensor"
    metrics = metrics_with_deltas([METRICS["T"], METRICS["P_raw"]])
    assert {sensor: [metric_json(m) for m in metrics]} == json.loads(SEED_GET_METRICS)


SEED_METRIC_OBJECT = """{
    "defaultUnit": "m",
    "displayName": "∆ X",
    "id": "dx",
    "name": "displacement X",
    "notation": "∆x",
    "params": [
        {
            "id": "dt",
            "mandatory": false
        }, {
            "id": "START_DATE",
            "mandatory": false
        }, {
            "id": "END",
            "mandatory": false
        }, {
            "id": "ZERO_DATE",
            "mandatory": false
        }
    ]
}"""


def test_seed_metric_object() -> None:
    # The seed's example object has no "hidden"; getMetrics' answers carry it.
    assert metric_json(METRICS["dx"]) == json.loads(SEED_METRIC_OBJECT) | {"hidden": False}


def test_seed_unit_object() -> None:
    assert unit_json(UNITS["m"]) == {"id": "m", "name": "meter", "notation": "m"}


def test_get_units() -> None:
    answer = units_by_metric(["T", "dx"])
    assert [u["id"] for u in answer["T"]] == ["C", "K", "F"]
    assert answer["dx"][0] == {"id": "m", "name": "meter", "notation": "m"}
    with pytest.raises(Invalid) as caught:
        units_by_metric(["T", "nope"])
    assert caught.value.field == "metrics[1]"


SEED_METRICS_TYPES_T = """{
            "metric": "T",
            "id": "T",
            "displayName": "Temperature",
            "defaultUnit": "C",
            "units": [
                {
                    "unit": "C",
                    "id": "C",
                    "displayName": "celsius",
                    "notation": "°C"
                },
                {
                    "unit": "K",
                    "id": "K",
                    "displayName": "kelvin",
                    "notation": "°K"
                },
                {
                    "unit": "F",
                    "id": "F",
                    "displayName": "fahrenheit",
                    "notation": "°F"
                }
            ]
        }"""


def test_seed_metrics_types() -> None:
    assert metric_type_json(METRICS["T"]) == json.loads(SEED_METRICS_TYPES_T)
    body = metrics_types_body()
    assert body["standard"] is True
    ids = [m["id"] for m in body["metrics"]]
    assert body["metrics"][0] == json.loads(SEED_METRICS_TYPES_T)
    assert {"T", "P_raw", "f", "cum_distance", "x"} <= set(ids)
    assert "dT" not in ids  # deltas are derived, not declared


SEED_SENSORS_METRICS = """{
    "metricsBySensor": {
        "/api/13DC2F/node/dynamic/AB10E2/device/D76619/sensor": [
            {
                "defaultUnit": "millimeter",
                "hidden": false,
                "displayName": "Alignment_Left_SD",
                "notation": "Alignment_Left_SD",
                "name": "Alignment_Left_SD",
                "id": "Alignment_Left_SD",
                "units": [
                    {
                        "notation": "millimeter",
                        "name": "millimeter",
                        "id": "millimeter"
                    }
                ]
            },
            {
                "defaultUnit": "millimeter",
                "hidden": false,
                "displayName": "Alignment_Right_SD",
                "notation": "Alignment_Right_SD",
                "name": "Alignment_Right_SD",
                "id": "Alignment_Right_SD",
                "units": [
                    {
                        "notation": "millimeter",
                        "name": "millimeter",
                        "id": "millimeter"
                    }
                ]
            }
        ]
    }
}"""


def test_seed_sensors_metrics_of_a_generic_sensor() -> None:
    metrics = generic_sensor_metrics(
        {
            "UNKNOWN_UNITS": {"0": "millimeter", "1": "millimeter"},
            "UNKNOWN_METRICS": {"0": "Alignment_Left_SD", "1": "Alignment_Right_SD"},
        }
    )
    sensor = "/api/13DC2F/node/dynamic/AB10E2/device/D76619/sensor"
    assert metrics_by_sensor_body({sensor: metrics}) == json.loads(SEED_SENSORS_METRICS)


def test_seed_device_and_sensor_types() -> None:
    devices = device_types_body()["deviceTypes"]
    assert devices[0] == {
        "id": "IMPORT_DEVICE_SDE",
        "name": "Import Device",
        "icon": "smicon-device-import",
        "iconUnicode": "",
        "manufacturer": "sensemetrics",
        "minThreadVersion": "1.0",
        "editOnly": False,
        "isDynamic": True,
    }
    sensors = sensor_types_body()["sensorTypes"]
    assert sensors[0] == {
        "id": "GENERIC_SENSOR_SDE",
        "name": "GENERIC_SENSOR_SDE",
        "icon": "smicon-circle",
        "iconUnicode": "",
        "metricsAndUnits": [
            {
                "metric": "GENERIC",
                "id": "GENERIC",
                "displayName": "generic",
                "defaultUnit": "GENERIC",
                "units": [{"unit": "GENERIC", "id": "GENERIC"}],
            }
        ],
        "isDynamic": True,
    }
    assert {t["id"] for t in devices} == {"IMPORT_DEVICE_SDE", "THINGHUB_DEVICE"}
    assert {t["id"] for t in sensors} == {"GENERIC_SENSOR_SDE", "THINGHUB_SENSOR"}
