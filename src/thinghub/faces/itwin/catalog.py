"""Metric, unit and template wire shapes: getMetrics, getUnits, /metrics/types, /sensors/metrics.

The same catalog (domain/metrics.py) is printed in four shapes, each copied from the seed:

- getMetrics, getRawMetrics: `{id, name, displayName, defaultUnit, notation, hidden,
  params: [{id, mandatory}]}`;
- getUnits: `{id, name, notation}`;
- GET /metrics/types: `{metric, id, displayName, defaultUnit, units: [{unit, id, displayName,
  notation}]}`;
- POST /sensors/metrics: `{defaultUnit, hidden, displayName, notation, name, id, units:
  [{notation, name, id}]}`;

and the device and sensor templates of GET /devices/types and /sensors/types (the seed's
IMPORT_DEVICE_SDE and GENERIC_SENSOR_SDE, plus thinghub's own types).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from thinghub.domain.metrics import METRICS, Metric, Unit, get_metric, units_of
from thinghub.faces.itwin.entities import THINGHUB_TYPES

__all__ = [
    "DEVICE_TYPES",
    "SENSOR_TYPES",
    "device_types_body",
    "metric_json",
    "metric_type_json",
    "metrics_by_sensor_body",
    "metrics_types_body",
    "sensor_metric_json",
    "sensor_types_body",
    "unit_json",
    "units_by_metric",
]


def metric_json(metric: Metric) -> dict[str, Any]:
    """A metric as getMetrics prints it (seed: the Rugged TROLL walk-through)."""
    return {
        "id": metric.id,
        "name": metric.name,
        "displayName": metric.display_name,
        "defaultUnit": metric.default_unit,
        "notation": metric.notation,
        "hidden": metric.is_hidden,
        "params": [{"id": p.id, "mandatory": p.is_mandatory} for p in metric.params],
    }


def unit_json(unit: Unit) -> dict[str, Any]:
    """A unit as getUnits prints it: `{"id": "m", "name": "meter", "notation": "m"}`."""
    return {"id": unit.id, "name": unit.name, "notation": unit.notation}


def units_by_metric(metric_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """getUnits for catalog metrics: `{<metricId>: [unit, ...]}`.

    Raises:
        Invalid: naming `metrics[i]` for an id that is not in the catalog (a sensor's
            free-form metric is the caller's to resolve first).
    """
    return {
        mid: [unit_json(u) for u in units_of(get_metric(mid, f"metrics[{i}]"))]
        for i, mid in enumerate(metric_ids)
    }


def metric_type_json(metric: Metric) -> dict[str, Any]:
    """One entry of GET /metrics/types (seed: T with C, K, F)."""
    return {
        "metric": metric.id,
        "id": metric.id,
        "displayName": metric.display_name,
        "defaultUnit": metric.default_unit,
        "units": [
            {"unit": u.id, "id": u.id, "displayName": u.name, "notation": u.notation}
            for u in units_of(metric)
        ],
    }


def metrics_types_body(metrics: Iterable[Metric] | None = None) -> dict[str, Any]:
    """GET /metrics/types: `{"standard": true, "metrics": [...]}`, the catalog's raw metrics
    (the ones a generic sensor can name in KNOWN_METRICS; deltas are derived, not declared).
    `excludeLegacy` changes nothing: the catalog has no legacy metrics."""
    chosen = metrics if metrics is not None else (m for m in METRICS.values() if not m.is_delta)
    return {"standard": True, "metrics": [metric_type_json(m) for m in chosen]}


def sensor_metric_json(metric: Metric) -> dict[str, Any]:
    """One metric of POST /sensors/metrics (seed: Alignment_Left_SD in millimeter)."""
    return {
        "defaultUnit": metric.default_unit,
        "hidden": metric.is_hidden,
        "displayName": metric.display_name,
        "notation": metric.notation,
        "name": metric.name,
        "id": metric.id,
        "units": [{"notation": u.notation, "name": u.name, "id": u.id} for u in units_of(metric)],
    }


# POST /sensors/metrics?categorized=true: (id, name, holds deltas), in the order shown.
METRIC_CATEGORIES: Final = (("RAW", "Readings", False), ("DELTA", "Changes", True))


def metrics_by_sensor_body(
    by_sensor: Mapping[str, Iterable[Metric]], *, categorized: bool = False
) -> dict[str, Any]:
    """POST /sensors/metrics: `{"metricsBySensor": {<sensorId>: [metric, ...]}}`.

    `categorized` (Bentley's widget asks so): each sensor's metrics in categories,
    `[{"metricCategoryId", "metricCategory", "metrics": [metric, ...]}]`, the raw readings
    first (the widget's default metric is the first category's first), then the deltas;
    a category with no metrics is left out.
    """
    out: dict[str, Any] = {}
    for sensor, metrics in by_sensor.items():
        shown = [(m.delta_of is not None, sensor_metric_json(m)) for m in metrics]
        if not categorized:
            out[sensor] = [body for _, body in shown]
            continue
        out[sensor] = [
            {"metricCategoryId": category_id, "metricCategory": name, "metrics": chosen}
            for category_id, name, is_delta in METRIC_CATEGORIES
            if (chosen := [body for delta, body in shown if delta is is_delta])
        ]
    return {"metricsBySensor": out}


# -- templates --------------------------------------------------------------------------------

# The seed's device template, as printed, then thinghub's own.
DEVICE_TYPES: Final[tuple[Mapping[str, Any], ...]] = (
    {
        "id": "IMPORT_DEVICE_SDE",
        "name": "Import Device",
        "icon": "smicon-device-import",
        "iconUnicode": "",
        "manufacturer": "sensemetrics",
        "minThreadVersion": "1.0",
        "editOnly": False,
        "isDynamic": True,
    },
    {
        "id": THINGHUB_TYPES["device"][1],
        "name": "thinghub device",
        "icon": "smicon-device-import",
        "iconUnicode": "",
        "manufacturer": "thinghub",
        "minThreadVersion": "1.0",
        "editOnly": True,
        "isDynamic": True,
    },
)

# Sensor templates: id -> (name, raw metric ids). GENERIC_SENSOR_SDE's metrics are declared
# per sensor (KNOWN_/UNKNOWN_METRICS); its template lists the GENERIC placeholder, as the seed.
SENSOR_TYPES: Final[Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "GENERIC_SENSOR_SDE": ("GENERIC_SENSOR_SDE", ("GENERIC",)),
    THINGHUB_TYPES["sensor"][1]: ("thinghub telemetry component", ()),
}


def device_types_body() -> dict[str, Any]:
    """GET /devices/types: `{"deviceTypes": [...]}`."""
    return {"deviceTypes": [dict(t) for t in DEVICE_TYPES]}


def sensor_types_body() -> dict[str, Any]:
    """GET /sensors/types: `{"sensorTypes": [...]}` (the seed prints the key with a leading
    space, `" sensorTypes"`, a typo we do not copy)."""
    out = []
    for type_id, (name, metric_ids) in SENSOR_TYPES.items():
        metrics = [get_metric(m) for m in metric_ids]
        out.append(
            {
                "id": type_id,
                "name": name,
                "icon": "smicon-circle",
                "iconUnicode": "",
                "metricsAndUnits": [
                    {
                        "metric": m.id,
                        "id": m.id,
                        "displayName": m.display_name,
                        "defaultUnit": m.default_unit,
                        "units": [{"unit": u.id, "id": u.id} for u in units_of(m)],
                    }
                    for m in metrics
                ],
                "isDynamic": True,
            }
        )
    return {"sensorTypes": out}
