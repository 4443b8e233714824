"""Metrics and units: the catalog every observation is named and converted against.

An observation is a number of one *metric* (temperature `T`, raw pressure `P_raw`, easting
`e`, ...) recorded in one *unit* (`C`, `Pa`, `m`, ...). The catalog below is plain data: the
metric and unit objects the iTwin IoT (sensemetrics) API shows, with their ids, names and
notations copied from its documentation where it prints them, plus a few common ones it does
not (marked). Units of the same `quantity` convert into one another (the arithmetic lives in
services/units.py, with pint); a unit of another quantity, or a free-form unit, does not.

Three kinds of metric exist:
- catalog metrics (`KNOWN_METRICS` of a generic sensor, or a telemetry key equal to a catalog
  id), convertible between their quantity's units;
- free-form metrics (`UNKNOWN_METRICS`, or any other telemetry key), named after themselves,
  whose unit is a catalog unit (convertible) or a free-form one (no conversion);
- derived delta metrics: one per raw metric (`dT` for `T`), the change of the raw value
  relative to a reference (ZERO_DATE, START_DATE or a rolling window `dt`; domain/deltas.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from thinghub.domain.errors import Invalid

__all__ = [
    "DELTA_PARAMS",
    "GENERIC",
    "MAX_METRIC_CHARS",
    "MAX_SENSOR_METRICS",
    "METRICS",
    "UNITS",
    "Metric",
    "MetricParam",
    "Unit",
    "delta_metric",
    "find_unit",
    "free_metric",
    "free_unit",
    "generic_sensor_metrics",
    "get_metric",
    "get_unit",
    "is_catalog_unit",
    "metric_for_key",
    "metrics_with_deltas",
    "units_of",
]

# Metric and unit ids come from telemetry keys and generic-sensor props (untrusted): bounded,
# printable, so they can be echoed in messages and used as JSON keys.
MAX_METRIC_CHARS = 128
# A generic sensor declares its metrics as an index map {"0": ..., "1": ...}; bounded so a
# request cannot make a sensor with a million metrics.
MAX_SENSOR_METRICS = 256
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")

GENERIC = "GENERIC"  # the unit of a number that has none (the seed's GENERIC_SENSOR_SDE template)


@dataclass(frozen=True, slots=True)
class Unit:
    """A unit as `getUnits` shows it: `{"id": "m", "name": "meter", "notation": "m"}`.

    `quantity` groups the units that convert into each other ("temperature", "length", ...);
    a free-form unit has quantity "" and converts only to itself.
    """

    id: str
    name: str
    notation: str
    quantity: str


@dataclass(frozen=True, slots=True)
class MetricParam:
    """A calculation parameter a metric accepts, e.g. `{"id": "ZERO_DATE", "mandatory": false}`."""

    id: str
    is_mandatory: bool = False


@dataclass(frozen=True, slots=True)
class Metric:
    """A metric as `getMetrics` shows it, plus what conversion needs.

    Attributes:
        id: the key observations carry (`T`, `P_raw`, a telemetry field name).
        default_unit: the unit raw values are recorded in (for a catalog metric bound to a
            sensor whose device reports another unit, that unit: see metric_for_key).
        quantity: the quantity of its units ("" for a free-form unit: no conversion).
        units: the unit ids a value of this metric can be asked in, default first or in the
            catalog's order.
        delta_of: for a derived delta metric, the id of the raw metric it is computed from.
        has_delta: for a raw metric, whether getMetrics derives a delta metric from it.
        is_known: a catalog metric (KNOWN_METRICS) rather than a free-form one.
    """

    id: str
    name: str
    display_name: str
    notation: str
    default_unit: str
    quantity: str
    units: tuple[str, ...]
    params: tuple[MetricParam, ...] = ()
    is_hidden: bool = False
    delta_of: str | None = None
    has_delta: bool = True
    is_known: bool = True

    @property
    def is_delta(self) -> bool:
        """A derived delta metric: its values are differences (converted without offset)."""
        return self.delta_of is not None


# -- units ------------------------------------------------------------------------------------
# (id, name, notation). Order within a quantity is the order getUnits lists them in; the seed
# prints temperature as C, K, F with "°K" as K's notation, copied as printed.
_UNIT_TABLE: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("temperature", (("C", "celsius", "°C"), ("K", "kelvin", "°K"), ("F", "fahrenheit", "°F"))),
    (
        "pressure",
        (
            ("Pa", "pascal", "Pa"),
            ("hPa", "hectopascal", "hPa"),
            ("kPa", "kilopascal", "kPa"),
            ("MPa", "megapascal", "MPa"),
            ("bar", "bar", "bar"),
            ("mbar", "millibar", "mbar"),
            ("psi", "pound per square inch", "psi"),
            ("atm", "atmosphere", "atm"),
            ("mmHg", "millimeter of mercury", "mmHg"),
            ("inHg", "inch of mercury", "inHg"),
            ("mH2O", "meter of water", "mH2O"),
            ("cmH2O", "centimeter of water", "cmH2O"),
            ("inH2O", "inch of water", "inH2O"),
        ),
    ),
    (
        "length",
        (
            ("m", "meter", "m"),
            ("mm", "millimeter", "mm"),
            ("cm", "centimeter", "cm"),
            ("km", "kilometer", "km"),
            ("um", "micrometer", "µm"),
            ("in", "inch", "in"),
            ("ft", "foot", "ft"),
        ),
    ),
    ("frequency", (("Hz", "hertz", "Hz"), ("kHz", "kilohertz", "kHz"))),
    (
        "angle",
        (
            ("deg", "degree", "°"),
            ("rad", "radian", "rad"),
            ("mrad", "milliradian", "mrad"),
            ("gon", "gradian", "gon"),
            ("arcsec", "arcsecond", "″"),
        ),
    ),
    ("ratio", (("%", "percent", "%"),)),
    ("voltage", (("V", "volt", "V"), ("mV", "millivolt", "mV"))),
    ("current", (("A", "ampere", "A"), ("mA", "milliampere", "mA"))),
    (
        "time",
        (
            ("s", "second", "s"),
            ("ms", "millisecond", "ms"),
            ("min", "minute", "min"),
            ("h", "hour", "h"),
            ("d", "day", "d"),
        ),
    ),
    (
        "velocity",
        (
            ("m/s", "meter per second", "m/s"),
            ("mm/s", "millimeter per second", "mm/s"),
            ("in/s", "inch per second", "in/s"),
        ),
    ),
    (
        "acceleration",
        (("m/s2", "meter per second squared", "m/s²"), ("g", "standard gravity", "g")),
    ),
    ("generic", ((GENERIC, "generic", ""),)),
)

UNITS: Mapping[str, Unit] = MappingProxyType(
    {
        uid: Unit(uid, name, notation, quantity)
        for quantity, rows in _UNIT_TABLE
        for uid, name, notation in rows
    }
)
_UNITS_BY_QUANTITY: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {quantity: tuple(row[0] for row in rows) for quantity, rows in _UNIT_TABLE}
)

# -- metrics ----------------------------------------------------------------------------------
# The parameters a delta metric accepts, as the seed's getMetrics prints them for dT.
DELTA_PARAMS = (MetricParam("dt"), MetricParam("START_DATE"), MetricParam("ZERO_DATE"))
# dx/dy/dz also list END, as the seed's "Example metric object" prints it (accepted, unused).
_DISPLACEMENT_PARAMS = (
    MetricParam("dt"),
    MetricParam("START_DATE"),
    MetricParam("END"),
    MetricParam("ZERO_DATE"),
)

# (id, name, displayName, notation, defaultUnit, quantity, has_delta). Seed-printed rows first.
_RAW_TABLE: tuple[tuple[str, str, str, str, str, str, bool], ...] = (
    # getMetrics of a Rugged TROLL (seed): T and its dT, P_raw without a delta.
    ("T", "temperature", "Temperature", "T", "C", "temperature", True),
    ("P_raw", "raw pressure", "Raw Pressure", "P_raw", "Pa", "pressure", False),
    # uploadData's example values (a Trimble 4D total station): survey coordinates, angles,
    # distances, and the atmosphere (P 101325: pascal).
    ("P", "pressure", "Pressure", "P", "Pa", "pressure", True),
    ("e", "easting", "Easting", "e", "m", "length", True),
    ("e_adjusted", "adjusted easting", "Adjusted Easting", "e_adjusted", "m", "length", True),
    ("n", "northing", "Northing", "n", "m", "length", True),
    ("n_adjusted", "adjusted northing", "Adjusted Northing", "n_adjusted", "m", "length", True),
    ("h", "height", "Height", "h", "m", "length", True),
    ("h_adjusted", "adjusted height", "Adjusted Height", "h_adjusted", "m", "length", True),
    ("ha", "horizontal angle", "Horizontal Angle", "ha", "deg", "angle", True),
    ("za", "zenith angle", "Zenith Angle", "za", "deg", "angle", True),
    ("sd", "slope distance", "Slope Distance", "sd", "m", "length", True),
    (
        "sd_corrected",
        "corrected slope distance",
        "Corrected Slope Distance",
        "sd_corrected",
        "m",
        "length",
        True,
    ),
    # KNOWN_METRICS example of a generic sensor: f in Hz, cum_distance in mm.
    ("f", "frequency", "Frequency", "f", "Hz", "frequency", True),
    (
        "cum_distance",
        "cumulative distance",
        "Cumulative Distance",
        "cum_distance",
        "mm",
        "length",
        True,
    ),
    # The GENERIC_SENSOR_SDE template's one metric (sensors/types).
    (GENERIC, "generic", "generic", GENERIC, GENERIC, "generic", False),
    # Not printed in the seed: positions whose deltas are the seed's dx/dy/dz displacements,
    # and common readings of MQTT devices.
    ("x", "position X", "X", "x", "m", "length", True),
    ("y", "position Y", "Y", "y", "m", "length", True),
    ("z", "position Z", "Z", "z", "m", "length", True),
    ("RH", "relative humidity", "Relative Humidity", "RH", "%", "ratio", True),
    ("V", "voltage", "Voltage", "V", "V", "voltage", True),
    ("I", "current", "Current", "I", "A", "current", True),
    ("tilt_x", "tilt X", "Tilt X", "tilt_x", "deg", "angle", True),
    ("tilt_y", "tilt Y", "Tilt Y", "tilt_y", "deg", "angle", True),
    ("PPV", "peak particle velocity", "Peak Particle Velocity", "PPV", "mm/s", "velocity", True),
    ("a", "acceleration", "Acceleration", "a", "m/s2", "acceleration", True),
)

# Delta metrics whose names the seed prints and that do not follow the generated pattern
# (id "d"+raw, name "delta "+name, displayName "∆ "+displayName, notation "∆"+notation).
_DELTA_OVERRIDES: Mapping[str, tuple[str, str, str, str, tuple[MetricParam, ...]]] = (
    MappingProxyType(
        {
            "x": ("dx", "displacement X", "∆ X", "∆x", _DISPLACEMENT_PARAMS),
            "y": ("dy", "displacement Y", "∆ Y", "∆y", _DISPLACEMENT_PARAMS),
            "z": ("dz", "displacement Z", "∆ Z", "∆z", _DISPLACEMENT_PARAMS),
        }
    )
)


def _raw(row: tuple[str, str, str, str, str, str, bool]) -> Metric:
    mid, name, display, notation, unit, quantity, has_delta = row
    return Metric(
        mid,
        name,
        display,
        notation,
        unit,
        quantity,
        _UNITS_BY_QUANTITY[quantity],
        has_delta=has_delta,
    )


def delta_metric(raw: Metric) -> Metric:
    """The delta metric derived from `raw`: `T` gives `dT` ("delta temperature", "∆ Temperature",
    notation "∆T", params dt, START_DATE, ZERO_DATE), as the seed's getMetrics prints it.

    Its units are the raw metric's; its values are differences, so converting them applies a
    unit's scale but not its offset (a change of 1 C is a change of 1.8 F).
    """
    override = _DELTA_OVERRIDES.get(raw.id)
    if override is not None:
        mid, name, display, notation, params = override
    else:
        mid, name = "d" + raw.id, "delta " + raw.name
        display, notation, params = "∆ " + raw.display_name, "∆" + raw.notation, DELTA_PARAMS
    return Metric(
        mid,
        name,
        display,
        notation,
        raw.default_unit,
        raw.quantity,
        raw.units,
        params=params,
        delta_of=raw.id,
        has_delta=False,
        is_known=raw.is_known,
    )


_RAW_METRICS = tuple(_raw(row) for row in _RAW_TABLE)
METRICS: Mapping[str, Metric] = MappingProxyType(
    {
        m.id: m
        for raw in _RAW_METRICS
        for m in ((delta_metric(raw), raw) if raw.has_delta else (raw,))
    }
)


# -- lookups ----------------------------------------------------------------------------------


def get_unit(unit_id: object, field: str = "unit") -> Unit:
    """The catalog unit `unit_id`.

    Raises:
        Invalid: naming `field` and the unit, when it is not a catalog unit.
    """
    found = UNITS.get(unit_id) if isinstance(unit_id, str) else None
    if found is None:
        raise Invalid(f"{field}: unknown unit {unit_id!r}", field=field, unit=unit_id)
    return found


def find_unit(unit_id: str) -> Unit | None:
    """The catalog unit `unit_id`, or None."""
    return UNITS.get(unit_id)


def is_catalog_unit(unit_id: str) -> bool:
    return unit_id in UNITS


def get_metric(metric_id: object, field: str = "metric") -> Metric:
    """The catalog metric `metric_id` (raw or delta).

    Raises:
        Invalid: naming `field` and the metric, when it is not in the catalog.
    """
    found = METRICS.get(metric_id) if isinstance(metric_id, str) else None
    if found is None:
        raise Invalid(f"{field}: unknown metric {metric_id!r}", field=field, metric=metric_id)
    return found


def units_of(metric: Metric) -> tuple[Unit, ...]:
    """The unit objects a value of `metric` can be asked in (getUnits)."""
    return tuple(UNITS.get(u) or free_unit(u) for u in metric.units)


def _check_name(value: object, field: str, what: str) -> str:
    if not isinstance(value, str) or not _PRINTABLE.fullmatch(value):
        raise Invalid(
            f"{field}: a {what} must be 1 to {MAX_METRIC_CHARS} printable characters, "
            f"got {value!r}",
            field=field,
        )
    return value


def free_unit(unit_id: str, field: str = "unit") -> Unit:
    """A free-form unit (UNKNOWN_UNITS): named after itself, converting only to itself.

    Raises:
        Invalid: when the id is empty, too long or has control characters.
    """
    _check_name(unit_id, field, "unit")
    return Unit(unit_id, unit_id, unit_id, "")


def free_metric(metric_id: str, unit_id: str | None, field: str = "metric") -> Metric:
    """A free-form metric (UNKNOWN_METRICS, or a telemetry key not in the catalog).

    Named after itself, as the seed's `/sensors/metrics` shows `Alignment_Left_SD`. With a
    catalog unit it converts to that unit's quantity; with a free-form unit only to itself;
    with none it is GENERIC (unitless).

    Raises:
        Invalid: naming `field` when the id is not 1..128 printable characters.
    """
    _check_name(metric_id, field, "metric")
    unit = UNITS.get(unit_id or GENERIC) or free_unit(unit_id or GENERIC, field)
    units = _UNITS_BY_QUANTITY[unit.quantity] if unit.quantity else (unit.id,)
    return Metric(
        metric_id,
        metric_id,
        metric_id,
        metric_id,
        unit.id,
        unit.quantity,
        units,
        is_known=False,
    )


def metric_for_key(key: str, unit_id: str | None = None, field: str = "metric") -> Metric:
    """The raw metric of an observation key, recorded in `unit_id` (None: unknown/unitless).

    A key equal to a catalog metric id is that metric; if its device reports it in another
    unit of the same quantity (a DTDL `unit`), `default_unit` is that unit. Any other key is
    a free-form metric.

    Raises:
        Invalid: when the unit does not fit the catalog metric's quantity, or the key is not
            1..128 printable characters.
    """
    known = METRICS.get(key)
    if known is None or known.is_delta:
        return free_metric(key, unit_id, field)
    if unit_id is None or unit_id == known.default_unit:
        return known
    unit = get_unit(unit_id)
    if unit.quantity != known.quantity:
        raise Invalid(
            f"{field}: metric {key!r} is a {known.quantity}, unit {unit_id!r} is a {unit.quantity}",
            field=field,
            unit=unit_id,
        )
    return replace(known, default_unit=unit_id)


def metrics_with_deltas(raw_metrics: Iterable[Metric]) -> tuple[Metric, ...]:
    """What getMetrics lists for a sensor: the delta metrics, then the raw metrics.

    Order as the seed prints a Rugged TROLL's: `dT`, `T`, `P_raw` (P_raw has no delta). A
    delta whose id equals one of the sensor's raw metrics is left out (the raw one wins).
    """
    raws = tuple(raw_metrics)
    taken = {m.id for m in raws}
    deltas = []
    for raw in raws:
        if raw.has_delta and not raw.is_delta:
            delta = delta_metric(raw)
            if delta.id not in taken:
                taken.add(delta.id)
                deltas.append(delta)
    return (*deltas, *raws)


def generic_sensor_metrics(props: Mapping[str, Any]) -> tuple[Metric, ...]:
    """The raw metrics of a GENERIC_SENSOR_SDE sensor from its props.

    The seed's generic sensors declare index maps `{"0": ..., "1": ...}`: metric ids in
    KNOWN_METRICS (catalog ids) or UNKNOWN_METRICS (free-form), units in KNOWN_UNITS
    (catalog ids, convertible) or UNKNOWN_UNITS (free-form). Index i of the metrics pairs
    with index i of the units. Known metric + known unit must be the same quantity.

    Returns:
        The metrics, ordered by index.

    Raises:
        Invalid: naming the prop (e.g. `KNOWN_METRICS.1`) when a map is not an index map of
            strings, an index appears in both metric maps or in neither unit map, a known id
            is not in the catalog, or a unit does not fit its metric.
    """
    maps: dict[str, Mapping[str, str]] = {}
    for name in ("KNOWN_METRICS", "UNKNOWN_METRICS", "KNOWN_UNITS", "UNKNOWN_UNITS"):
        maps[name] = _index_map(props.get(name), name)
    metric_keys = _disjoint(maps, "KNOWN_METRICS", "UNKNOWN_METRICS")
    unit_keys = _disjoint(maps, "KNOWN_UNITS", "UNKNOWN_UNITS")
    if not metric_keys:
        raise Invalid(
            "a generic sensor must define its metrics (KNOWN_METRICS or UNKNOWN_METRICS)",
            field="KNOWN_METRICS",
        )
    extra_units = unit_keys - metric_keys
    if extra_units:
        key = min(extra_units, key=int)
        raise Invalid(f"unit index {key} has no metric", field=f"KNOWN_UNITS.{key}")
    out = []
    for key in sorted(metric_keys, key=int):
        known_unit = maps["KNOWN_UNITS"].get(key)
        free_unit_id = maps["UNKNOWN_UNITS"].get(key)
        if known_unit is None and free_unit_id is None:
            raise Invalid(
                f"metric index {key} has no unit (KNOWN_UNITS or UNKNOWN_UNITS)",
                field=f"KNOWN_UNITS.{key}",
            )
        if known_unit is not None:
            get_unit(known_unit, f"KNOWN_UNITS.{key}")
        known_metric = maps["KNOWN_METRICS"].get(key)
        if known_metric is not None:
            field = f"KNOWN_METRICS.{key}"
            catalog = get_metric(known_metric, field)
            if catalog.is_delta:
                raise Invalid(f"{field}: {known_metric!r} is a derived metric", field=field)
            if known_unit is None:
                raise Invalid(
                    f"{field}: a known metric needs a KNOWN_UNITS entry", field=f"KNOWN_UNITS.{key}"
                )
            out.append(metric_for_key(known_metric, known_unit, field=f"KNOWN_UNITS.{key}"))
        else:
            metric_id = maps["UNKNOWN_METRICS"][key]
            unit_id = known_unit if known_unit is not None else free_unit_id
            out.append(free_metric(metric_id, unit_id, field=f"UNKNOWN_METRICS.{key}"))
    _no_duplicates(out)
    return tuple(out)


def _index_map(value: object, name: str) -> Mapping[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise Invalid(f"{name} must be an object of index to id, got {value!r}", field=name)
    if len(value) > MAX_SENSOR_METRICS:
        raise Invalid(f"{name} has more than {MAX_SENSOR_METRICS} entries", field=name)
    out: dict[str, str] = {}
    for key, item in value.items():
        if not (isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 4):
            raise Invalid(f"{name} keys are indexes 0, 1, ..., got {key!r}", field=name)
        canonical = str(int(key))
        if canonical in out:
            raise Invalid(f"{name} repeats index {canonical}", field=f"{name}.{key}")
        out[canonical] = _check_name(item, f"{name}.{key}", "metric or unit")
    return out


def _disjoint(maps: Mapping[str, Mapping[str, str]], known: str, unknown: str) -> set[str]:
    both = maps[known].keys() & maps[unknown].keys()
    if both:
        key = min(both, key=int)
        raise Invalid(f"index {key} is in both {known} and {unknown}", field=f"{unknown}.{key}")
    return set(maps[known]) | set(maps[unknown])


def _no_duplicates(metrics: Sequence[Metric]) -> None:
    seen: set[str] = set()
    for metric in metrics:
        if metric.id in seen:
            raise Invalid(f"metric {metric.id!r} is declared twice", field="KNOWN_METRICS")
        seen.add(metric.id)
