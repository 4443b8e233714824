"""The raw metrics of a sensor, with the unit each is recorded in.

- A sensor of a thinghub device is one telemetry component; its raw metrics are the numeric
  telemetry of that component: first those its capability model declares (in the model's
  order), then any other numeric field its telemetry carried (catalog metrics in the
  catalog's order, then by name). A field's unit is the
  DTDL `unit` of its telemetry in the model (`degreeCelsius` -> `C`, services/units.py);
  without one a field named like a catalog metric is in that metric's default unit (`T` in
  C, `P_raw` in Pa), any other is unitless (GENERIC). The model is the device's template, a
  template named by the model id the device announced, or a well-known public model of that
  id (TemplateService.model_for).
- A created generic sensor (GENERIC_SENSOR_SDE) declares its metrics and units in its props
  (KNOWN_/UNKNOWN_METRICS and _UNITS, domain/metrics.generic_sensor_metrics); any other
  created sensor's raw metrics are the fields its uploads carried, unitless.

A field named like a catalog metric (`T`, `P`, `e`) is that metric (its name, notation and
units); any other is a free-form metric named after itself (domain/metrics.metric_for_key).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from thinghub.domain.dtdl import Interface, Primitive
from thinghub.domain.errors import Invalid
from thinghub.domain.metrics import (
    METRICS,
    Metric,
    free_metric,
    generic_sensor_metrics,
    metric_for_key,
)
from thinghub.domain.model import Device
from thinghub.domain.telemetry import Observation
from thinghub.services.core import Services
from thinghub.services.units import unit_for_dtdl

if TYPE_CHECKING:  # network.py imports this module
    from thinghub.faces.itwin.network import Sensor

__all__ = ["METRIC_PROPS", "NUMERIC_SCHEMAS", "SensorMetrics", "metric_of_field"]

# The props a generic sensor declares its metrics and units in.
METRIC_PROPS: Final = ("KNOWN_METRICS", "UNKNOWN_METRICS", "KNOWN_UNITS", "UNKNOWN_UNITS")
# DTDL schemas whose values are numbers (observations).
NUMERIC_SCHEMAS: Final = frozenset(
    {
        "double",
        "float",
        "decimal",
        "integer",
        "long",
        "short",
        "byte",
        "unsignedByte",
        "unsignedShort",
        "unsignedInteger",
        "unsignedLong",
    }
)


def metric_of_field(name: str, unit: str | None) -> Metric | None:
    """The raw metric of a telemetry field recorded in `unit`; None for a field name that can
    be no metric id (empty, too long, control characters)."""
    try:
        return metric_for_key(name, unit)
    except Invalid:
        pass
    try:  # a catalog id in a unit of another quantity: free-form, named after itself
        return free_metric(name, unit)
    except Invalid:
        return None


class SensorMetrics:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def model(self, device: Device) -> Interface | None:
        return await self.services.templates.model_for(device)

    async def template_components(self, device: Device) -> list[str]:
        """The components a device's capability model declares."""
        model = await self.model(device)
        return [] if model is None else list(model.components)

    async def field_units(self, device: Device, component: str | None) -> dict[str, str | None]:
        """The numeric telemetry a device's model declares for a component, in the model's
        order, each with its catalog unit (None: unitless or a unit the catalog lacks)."""
        model = await self.model(device)
        if model is None:
            return {}
        iface = model if component is None else model.components.get(component)
        if iface is None:
            return {}
        return {
            name: unit_for_dtdl(telemetry.unit)
            for name, telemetry in iface.telemetry.items()
            if isinstance(telemetry.schema, Primitive) and telemetry.schema.name in NUMERIC_SCHEMAS
        }

    async def raw_metrics(
        self, sensor: Sensor, latest: Mapping[str, Observation]
    ) -> tuple[Metric, ...]:
        """The sensor's raw metrics (see the module docstring), default unit included."""
        info = sensor.holder.attributes.get("itwin")
        if isinstance(info, dict):
            return _created_metrics(info, latest)
        units = await self.field_units(sensor.holder, sensor.component)
        names = list(units)
        prefix = f"{sensor.component}." if sensor.component else ""
        seen = sorted(
            (
                key[len(prefix) :]
                for key in latest
                if (key.startswith(prefix) if prefix else "." not in key)
                and key[len(prefix) :] not in units
            ),
            key=_catalog_order,
        )
        out = []
        for name in [*names, *seen]:
            metric = metric_of_field(name, units.get(name))
            if metric is not None:
                out.append(metric)
        return tuple(out)


_CATALOG_ORDER: Final = {metric_id: i for i, metric_id in enumerate(METRICS)}


def _catalog_order(name: str) -> tuple[int, str]:
    """Catalog metrics in the catalog's order (T before P_raw, as the seed lists a Rugged
    TROLL's), then free-form ones by name."""
    return _CATALOG_ORDER.get(name, len(_CATALOG_ORDER)), name


def _created_metrics(
    info: Mapping[str, Any], latest: Mapping[str, Observation]
) -> tuple[Metric, ...]:
    props = info.get("props")
    if isinstance(props, dict) and any(key in props for key in METRIC_PROPS):
        try:
            return generic_sensor_metrics(props)
        except Invalid:  # checked when it was made; props changed since by update*
            pass
    out = []
    for name in sorted(latest, key=_catalog_order):
        metric = metric_of_field(name, None)
        if metric is not None:
            out.append(metric)
    return tuple(out)
