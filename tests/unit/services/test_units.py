"""Tests for thinghub.services.units: cached pint conversions between catalog units."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pint
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.deltas import SECONDS_PER
from thinghub.domain.errors import Invalid
from thinghub.domain.metrics import GENERIC, METRICS, UNITS
from thinghub.services.units import (
    DTDL_UNITS,
    IDENTITY,
    PINT_UNITS,
    Conversion,
    conversion,
    conversion_for,
    convert,
    unit_for_dtdl,
)

REGISTRY: pint.UnitRegistry[Any] = pint.UnitRegistry()


def test_every_catalog_unit_has_a_pint_unit_of_its_quantity() -> None:
    assert set(PINT_UNITS) == set(UNITS) - {GENERIC}
    by_quantity: dict[str, set[object]] = {}
    for uid, expression in PINT_UNITS.items():
        by_quantity.setdefault(UNITS[uid].quantity, set()).add(
            REGISTRY.Quantity(1, expression).dimensionality
        )
    assert all(len(dims) == 1 for dims in by_quantity.values()), by_quantity
    # Quantities pint cannot tell apart stay apart in the catalog (see the refusal test).
    dimensionless = {
        q for q, dims in by_quantity.items() if REGISTRY.dimensionless.dimensionality in dims
    }
    assert dimensionless == {"angle", "ratio"}


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (0, "C", "F", 32.0),
        (100, "C", "F", 212.0),
        (-40, "C", "F", -40.0),
        (212, "F", "C", 100.0),
        (32, "F", "C", 0.0),
        (0, "K", "C", -273.15),
        (0, "C", "K", 273.15),
        (1, "bar", "kPa", 100.0),
        (100, "kPa", "bar", 1.0),
        (1, "atm", "Pa", 101325.0),
        (1013.25, "hPa", "Pa", 101325.0),
        (1, "MPa", "kPa", 1000.0),
        (1000, "mbar", "bar", 1.0),
        (1, "mH2O", "Pa", 9806.65),
        (1, "in", "mm", 25.4),
        (1, "ft", "m", 0.3048),
        (12, "in", "ft", 1.0),
        (1, "km", "m", 1000.0),
        (1000, "um", "mm", 1.0),
        (1, "kHz", "Hz", 1000.0),
        (100, "gon", "deg", 90.0),
        (1, "V", "mV", 1000.0),
        (1, "h", "s", 3600.0),
        (1, "g", "m/s2", 9.80665),
        (25.4, "mm/s", "in/s", 1.0),
    ],
)
def test_known_values_convert_exactly(
    value: float, source: str, target: str, expected: float
) -> None:
    assert convert(value, source, target) == expected


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (1, "bar", "psi", 14.5038),
        (1, "psi", "Pa", 6894.757293168361),
        (760, "mmHg", "Pa", 101325.0),
        (29.9213, "inHg", "kPa", 101.325),
        (180, "deg", "rad", math.pi),
        (1, "arcsec", "deg", 1 / 3600),
        (98.6, "F", "C", 37.0),
    ],
)
def test_known_values_convert_closely(
    value: float, source: str, target: str, expected: float
) -> None:
    assert convert(value, source, target) == pytest.approx(expected, rel=1e-5)


def test_differences_convert_without_offset() -> None:
    assert convert(1, "C", "F", is_difference=True) == 1.8
    assert convert(10, "K", "C", is_difference=True) == 10.0
    assert convert(9, "F", "K", is_difference=True) == 5.0
    assert conversion_for(METRICS["dT"], "F")(1.0) == 1.8  # a delta metric converts as a change
    assert conversion_for(METRICS["T"], "F")(1.0) == 33.8


def test_delta_of_converted_equals_converted_delta() -> None:
    a, b = 21.5, 19.25
    to_f = conversion("C", "F")
    assert to_f(a) - to_f(b) == pytest.approx(conversion("C", "F", is_difference=True)(a - b))


def test_same_unit_is_identity_even_when_free_form() -> None:
    assert conversion("millimeter", "millimeter") is IDENTITY
    assert conversion(GENERIC, GENERIC) is IDENTITY
    assert IDENTITY.is_identity and IDENTITY(3.25) == 3.25


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        ("C", "furlong", "unknown unit 'furlong'"),
        ("C", "Pa", "unit: cannot convert 'C' (temperature) to 'Pa' (pressure)"),
        ("deg", "%", "cannot convert 'deg' (angle) to '%' (ratio)"),  # pint would allow it
        ("millimeter", "mm", "cannot convert 'millimeter' (free-form) to 'mm' (length)"),
        (GENERIC, "m", "cannot convert 'GENERIC'"),
        ("m", GENERIC, "cannot convert 'm'"),
    ],
)
def test_refusals_name_the_unit(source: str, target: str, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        conversion(source, target, field="unit")
    assert caught.value.field == "unit"
    assert message in caught.value.message


def test_conversions_are_cached_per_pair() -> None:
    assert conversion("C", "F") is conversion("C", "F")
    assert conversion("C", "F") is not conversion("C", "F", is_difference=True)


def test_batch_forms_match_the_per_value_form() -> None:
    to_f = conversion("C", "F")
    values = [-40.0, 0.0, 21.5, 100.0]
    assert to_f.many(values) == [to_f(v) for v in values]
    data = {"2016-12-15T23:38:07.000Z": 20.0, "2016-12-16T07:13:07.000Z": 25.0}
    assert to_f.many_values(data) == {k: to_f(v) for k, v in data.items()}
    assert IDENTITY.many(values) == values and IDENTITY.many_values(data) == data


EXACT: pint.UnitRegistry[Any] = pint.UnitRegistry(non_int_type=Fraction)


def _exact(value: Fraction, source: str, target: str) -> float:
    return float(EXACT.Quantity(value, PINT_UNITS[source]).to(PINT_UNITS[target]).magnitude)


PAIRS = [
    (a, b)
    for a in PINT_UNITS
    for b in PINT_UNITS
    if a != b and UNITS[a].quantity == UNITS[b].quantity
]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PAIRS), st.integers(-(10**6), 10**6), st.integers(1, 1000))
def test_cached_conversion_agrees_with_pint(pair: tuple[str, str], num: int, den: int) -> None:
    source, target = pair
    value = Fraction(num, den)
    got = conversion(source, target)(float(value))
    assert got == pytest.approx(_exact(value, source, target), rel=1e-12, abs=1e-9)


def test_dt_seconds_agree_with_pint() -> None:
    for unit, seconds in SECONDS_PER.items():
        assert REGISTRY.Quantity(1, PINT_UNITS[unit]).to("second").magnitude == pytest.approx(
            seconds
        )


def test_dtdl_units_map_to_catalog_units() -> None:
    assert set(DTDL_UNITS.values()) <= set(UNITS)
    for name, unit in {
        "degreeCelsius": "C",
        "degreeFahrenheit": "F",
        "kelvin": "K",
        "pascal": "Pa",
        "kilopascal": "kPa",
        "metre": "m",
        "millimetre": "mm",
        "hertz": "Hz",
        "percent": "%",
    }.items():
        assert unit_for_dtdl(name) == unit
    assert unit_for_dtdl("furlongPerFortnight") is None
    assert unit_for_dtdl(None) is None


def test_conversion_is_plain_arithmetic() -> None:
    c = Conversion(9.0, 160.0, 5.0)
    assert c(100.0) == 212.0 and not c.is_identity
