"""Tests for thinghub.domain.metrics: the catalog, delta metrics, generic sensors."""

from __future__ import annotations

from typing import Any

import pytest

from thinghub.domain.errors import Invalid
from thinghub.domain.metrics import (
    DELTA_PARAMS,
    GENERIC,
    MAX_SENSOR_METRICS,
    METRICS,
    UNITS,
    Metric,
    MetricParam,
    delta_metric,
    free_metric,
    free_unit,
    generic_sensor_metrics,
    get_metric,
    get_unit,
    metric_for_key,
    metrics_with_deltas,
    units_of,
)

# Every metric id the seed's cloud API mentions (getMetrics, the dx example, uploadData's
# values, the generic sensor's KNOWN_METRICS, the GENERIC template).
SEED_METRICS = [
    "T", "dT", "P_raw", "P", "dx", "dy", "dz", "f", "cum_distance", "GENERIC",
    "e", "e_adjusted", "n", "n_adjusted", "h", "h_adjusted", "ha", "za", "sd", "sd_corrected",
]  # fmt: skip
SEED_UNITS = ["C", "K", "F", "Pa", "m", "mm", "Hz", "GENERIC"]


def test_catalog_covers_the_seed() -> None:
    assert set(SEED_METRICS) <= set(METRICS)
    assert set(SEED_UNITS) <= set(UNITS)


def test_seed_rows_are_copied_exactly() -> None:
    t = METRICS["T"]
    assert (t.name, t.display_name, t.notation, t.default_unit, t.params) == (
        "temperature", "Temperature", "T", "C", ()
    )  # fmt: skip
    assert t.units == ("C", "K", "F")  # /metrics/types lists them in that order
    d = METRICS["dT"]
    assert (d.name, d.display_name, d.notation, d.default_unit, d.delta_of) == (
        "delta temperature", "∆ Temperature", "∆T", "C", "T"
    )  # fmt: skip
    assert d.params == (MetricParam("dt"), MetricParam("START_DATE"), MetricParam("ZERO_DATE"))
    p = METRICS["P_raw"]
    assert (p.name, p.display_name, p.notation, p.default_unit, p.has_delta) == (
        "raw pressure", "Raw Pressure", "P_raw", "Pa", False
    )  # fmt: skip
    dx = METRICS["dx"]
    assert (dx.name, dx.display_name, dx.notation, dx.default_unit) == (
        "displacement X", "∆ X", "∆x", "m"
    )  # fmt: skip
    assert [p.id for p in dx.params] == ["dt", "START_DATE", "END", "ZERO_DATE"]
    assert (UNITS["m"].name, UNITS["m"].notation) == ("meter", "m")
    assert [(UNITS[u].name, UNITS[u].notation) for u in ("C", "K", "F")] == [
        ("celsius", "°C"), ("kelvin", "°K"), ("fahrenheit", "°F")
    ]  # fmt: skip


def test_no_catalog_entry_overwrites_another() -> None:
    raws = [m for m in METRICS.values() if not m.is_delta]
    deltas = [m for m in METRICS.values() if m.is_delta]
    assert len(deltas) == sum(1 for m in raws if m.has_delta)
    assert all(METRICS[d.delta_of].has_delta for d in deltas if d.delta_of)


@pytest.mark.parametrize("metric", list(METRICS.values()), ids=list(METRICS))
def test_every_metric_has_its_default_unit_among_its_units(metric: Metric) -> None:
    assert metric.default_unit in metric.units
    assert all(UNITS[u].quantity == metric.quantity for u in metric.units)


def test_generated_delta_names() -> None:
    d = delta_metric(METRICS["P"])
    assert (d.id, d.name, d.display_name, d.notation, d.params) == (
        "dP", "delta pressure", "∆ Pressure", "∆P", DELTA_PARAMS
    )  # fmt: skip
    assert d.units == METRICS["P"].units and d.is_delta and not d.has_delta


def test_metrics_with_deltas_orders_as_the_seed() -> None:
    listed = metrics_with_deltas([METRICS["T"], METRICS["P_raw"]])
    assert [m.id for m in listed] == ["dT", "T", "P_raw"]


def test_a_raw_metric_named_like_a_delta_wins() -> None:
    raw_dt = free_metric("dT", "C")
    listed = metrics_with_deltas([METRICS["T"], raw_dt])
    # T's delta would be dT: the sensor's own raw dT keeps the id (and gets its own ddT).
    assert [m.id for m in listed] == ["ddT", "T", "dT"] and listed[2] is raw_dt


def test_metric_for_key() -> None:
    assert metric_for_key("T") is METRICS["T"]
    fahrenheit = metric_for_key("T", "F")
    assert fahrenheit.default_unit == "F" and fahrenheit.units == ("C", "K", "F")
    with pytest.raises(Invalid) as caught:
        metric_for_key("T", "Pa")
    assert "temperature" in caught.value.message and "'Pa'" in caught.value.message
    # A telemetry key outside the catalog: named after itself, converting with its unit.
    temperature = metric_for_key("temperature", "C")
    assert (temperature.id, temperature.name, temperature.display_name) == ("temperature",) * 3
    assert temperature.units == ("C", "K", "F") and not temperature.is_known
    unitless = metric_for_key("thermostat1.targetTemperature")
    assert unitless.default_unit == GENERIC and unitless.units == (GENERIC,)
    # A delta id is not a raw key: an observation named "dT" is a free-form metric.
    assert not metric_for_key("dT", "C").is_delta


def test_free_units_convert_only_to_themselves() -> None:
    unit = free_unit("millimeter")
    assert (unit.id, unit.name, unit.notation, unit.quantity) == ("millimeter",) * 3 + ("",)
    metric = free_metric("Alignment_Left_SD", "millimeter")
    assert metric.units == ("millimeter",) and metric.quantity == ""
    assert units_of(metric) == (unit,)


@pytest.mark.parametrize("bad", ["", "x" * 129, "a\nb", "\x00"])
def test_free_names_are_bounded(bad: str) -> None:
    with pytest.raises(Invalid):
        free_metric(bad, None)
    with pytest.raises(Invalid):
        free_unit(bad)


def test_lookups_name_the_field() -> None:
    with pytest.raises(Invalid) as caught:
        get_unit("furlong", "unit")
    assert caught.value.field == "unit" and "furlong" in caught.value.message
    with pytest.raises(Invalid) as caught:
        get_metric("zz", "metrics[2]")
    assert caught.value.field == "metrics[2]"


# -- generic sensors (seed: "Generic sensors") ------------------------------------------------


def test_seed_unknown_metrics_and_units() -> None:
    metrics = generic_sensor_metrics(
        {
            "INTEGRATION_ID": "GENERIC_SENSOR_SDE",
            "UNKNOWN_UNITS": {"0": "millimeter", "1": "millimeter"},
            "UNKNOWN_METRICS": {"0": "Alignment_Left_SD", "1": "Alignment_Right_SD"},
        }
    )
    assert [(m.id, m.default_unit, m.units, m.is_known) for m in metrics] == [
        ("Alignment_Left_SD", "millimeter", ("millimeter",), False),
        ("Alignment_Right_SD", "millimeter", ("millimeter",), False),
    ]


def test_seed_known_metrics_and_units() -> None:
    metrics = generic_sensor_metrics(
        {"KNOWN_UNITS": {"0": "Hz", "1": "mm"}, "KNOWN_METRICS": {"0": "f", "1": "cum_distance"}}
    )
    assert [(m.id, m.default_unit, m.is_known) for m in metrics] == [
        ("f", "Hz", True),
        ("cum_distance", "mm", True),
    ]


def test_seed_known_units_with_unknown_metrics() -> None:
    metrics = generic_sensor_metrics(
        {"KNOWN_UNITS": {"0": "Hz", "1": "mm"}, "UNKNOWN_METRICS": {"0": "abc", "1": "def"}}
    )
    assert [(m.id, m.default_unit, m.units) for m in metrics] == [
        ("abc", "Hz", ("Hz", "kHz")),
        ("def", "mm", UNITS_OF_LENGTH),
    ]


UNITS_OF_LENGTH = ("m", "mm", "cm", "km", "um", "in", "ft")


def test_indexes_sort_numerically() -> None:
    props = {
        "UNKNOWN_METRICS": {str(i): f"m{i}" for i in range(12)},
        "UNKNOWN_UNITS": {str(i): "u" for i in range(12)},
    }
    assert [m.id for m in generic_sensor_metrics(props)] == [f"m{i}" for i in range(12)]


@pytest.mark.parametrize(
    ("props", "field"),
    [
        ({}, "KNOWN_METRICS"),
        ({"UNKNOWN_METRICS": {"0": "a"}}, "KNOWN_UNITS.0"),
        ({"UNKNOWN_METRICS": {"0": "a"}, "UNKNOWN_UNITS": {"0": "u", "1": "v"}}, "KNOWN_UNITS.1"),
        (
            {"KNOWN_METRICS": {"0": "T"}, "UNKNOWN_METRICS": {"0": "a"}, "KNOWN_UNITS": {"0": "C"}},
            "UNKNOWN_METRICS.0",
        ),
        ({"KNOWN_METRICS": {"0": "nope"}, "KNOWN_UNITS": {"0": "C"}}, "KNOWN_METRICS.0"),
        ({"KNOWN_METRICS": {"0": "dT"}, "KNOWN_UNITS": {"0": "C"}}, "KNOWN_METRICS.0"),
        ({"KNOWN_METRICS": {"0": "T"}, "UNKNOWN_UNITS": {"0": "degrees"}}, "KNOWN_UNITS.0"),
        ({"KNOWN_METRICS": {"0": "T"}, "KNOWN_UNITS": {"0": "Pa"}}, "KNOWN_UNITS.0"),
        ({"KNOWN_METRICS": {"0": "T"}, "KNOWN_UNITS": {"0": "furlong"}}, "KNOWN_UNITS.0"),
        ({"UNKNOWN_METRICS": ["a"], "UNKNOWN_UNITS": {"0": "u"}}, "UNKNOWN_METRICS"),
        ({"UNKNOWN_METRICS": {"first": "a"}, "UNKNOWN_UNITS": {"0": "u"}}, "UNKNOWN_METRICS"),
        (
            {"UNKNOWN_METRICS": {"0": "a", "00": "b"}, "UNKNOWN_UNITS": {"0": "u"}},
            "UNKNOWN_METRICS.00",
        ),
        ({"UNKNOWN_METRICS": {"0": 5}, "UNKNOWN_UNITS": {"0": "u"}}, "UNKNOWN_METRICS.0"),
        (
            {"UNKNOWN_METRICS": {"0": "a", "1": "a"}, "UNKNOWN_UNITS": {"0": "u", "1": "u"}},
            "KNOWN_METRICS",
        ),
        (
            {"UNKNOWN_METRICS": {str(i): f"m{i}" for i in range(MAX_SENSOR_METRICS + 1)}},
            "UNKNOWN_METRICS",
        ),
    ],
)
def test_generic_sensor_refusals_name_the_prop(props: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as caught:
        generic_sensor_metrics(props)
    assert caught.value.field == field
