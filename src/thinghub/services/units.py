"""Unit conversion between the catalog's units, with pint, fast enough for streaming.

pint knows the definitions (1 psi = 0.45359237 kg x 9.80665 m/s² / 0.0254² m²); calling it per
value would cost microseconds. So each (from, to) pair is asked of pint once, in exact
rational arithmetic, and kept as an affine Conversion `y = (x * scale + shift) / divisor`:
three float operations per value. When scale, shift and divisor are small integers (C to F
is (9x + 160) / 5, ft to m is 381x / 1250) common values convert exactly (0 C is 32.0 F,
100 C is 212.0 F); otherwise the divisor is 1 and scale and shift are the nearest floats.

Conversions are only allowed within one catalog quantity (domain/metrics.py): pint would
happily turn degrees into percent (both dimensionless), the catalog does not. A free-form
unit converts only to itself. A delta metric's values are differences, converted with
`is_difference=True` (scale only: a change of 1 C is a change of 1.8 F, not 33.8 F).

DTDL_UNITS maps the unit names of DTDL semantic types (`"unit": "degreeCelsius"` in a
device model) to catalog unit ids, so an MQTT device's telemetry gets its unit.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any

import pint

from thinghub.domain.errors import Invalid
from thinghub.domain.metrics import UNITS, Metric

__all__ = [
    "DTDL_UNITS",
    "IDENTITY",
    "PINT_UNITS",
    "Conversion",
    "conversion",
    "conversion_for",
    "convert",
    "unit_for_dtdl",
]

# Catalog unit id -> pint expression. Every catalog unit except GENERIC has one (a unit test
# checks that, and that pint's dimensionality agrees with the catalog's quantity).
PINT_UNITS: Mapping[str, str] = MappingProxyType(
    {
        "C": "degC",
        "K": "kelvin",
        "F": "degF",
        "Pa": "pascal",
        "hPa": "hectopascal",
        "kPa": "kilopascal",
        "MPa": "megapascal",
        "bar": "bar",
        "mbar": "millibar",
        "psi": "psi",
        "atm": "atm",
        "mmHg": "mmHg",
        "inHg": "inHg",
        "mH2O": "meter_H2O",
        "cmH2O": "cmH2O",
        "inH2O": "inH2O",
        "m": "meter",
        "mm": "millimeter",
        "cm": "centimeter",
        "km": "kilometer",
        "um": "micrometer",
        "in": "inch",
        "ft": "foot",
        "Hz": "hertz",
        "kHz": "kilohertz",
        "deg": "degree",
        "rad": "radian",
        "mrad": "milliradian",
        "gon": "gon",
        "arcsec": "arcsecond",
        "%": "percent",
        "V": "volt",
        "mV": "millivolt",
        "A": "ampere",
        "mA": "milliampere",
        "s": "second",
        "ms": "millisecond",
        "min": "minute",
        "h": "hour",
        "d": "day",
        "m/s": "meter / second",
        "mm/s": "millimeter / second",
        "in/s": "inch / second",
        "m/s2": "meter / second ** 2",
        "g": "standard_gravity",
    }
)

# DTDL v2/v3 semantic unit names -> catalog unit ids (the ones the catalog has).
DTDL_UNITS: Mapping[str, str] = MappingProxyType(
    {
        "degreeCelsius": "C",
        "degreeFahrenheit": "F",
        "kelvin": "K",
        "pascal": "Pa",
        "hectopascal": "hPa",
        "kilopascal": "kPa",
        "megapascal": "MPa",
        "bar": "bar",
        "millibar": "mbar",
        "poundPerSquareInch": "psi",
        "atmosphere": "atm",
        "millimetresOfMercury": "mmHg",
        "inchesOfMercury": "inHg",
        "inchesOfWater": "inH2O",
        "metre": "m",
        "millimetre": "mm",
        "centimetre": "cm",
        "kilometre": "km",
        "micrometre": "um",
        "inch": "in",
        "foot": "ft",
        "hertz": "Hz",
        "kilohertz": "kHz",
        "degreeOfArc": "deg",
        "radian": "rad",
        "secondOfArc": "arcsec",
        "percent": "%",
        "volt": "V",
        "millivolt": "mV",
        "ampere": "A",
        "milliampere": "mA",
        "second": "s",
        "millisecond": "ms",
        "minute": "min",
        "hour": "h",
        "day": "d",
        "metrePerSecond": "m/s",
        "metrePerSecondSquared": "m/s2",
        "gForce": "g",
    }
)

# Integers up to 2**53 are exact floats; past that the rational form would round anyway.
_EXACT_INT = 2**53


@dataclass(frozen=True, slots=True)
class Conversion:
    """An affine conversion `y = (x * scale + shift) / divisor`, made once per unit pair.

    Call it per value, or use many() / many_values() for a batch (a comprehension with the
    constants in locals: about a third of the per-call cost).
    """

    scale: float
    shift: float = 0.0
    divisor: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.shift == 0.0 and self.divisor == 1.0

    def __call__(self, value: float) -> float:
        return (value * self.scale + self.shift) / self.divisor

    def many(self, values: Iterable[float]) -> list[float]:
        """Convert a batch of values."""
        if self.is_identity:
            return list(values)
        scale, shift, divisor = self.scale, self.shift, self.divisor
        return [(v * scale + shift) / divisor for v in values]

    def many_values(self, data: Mapping[str, float]) -> dict[str, float]:
        """Convert the values of a `{timestamp: value}` chunk, keeping its keys."""
        if self.is_identity:
            return dict(data)
        scale, shift, divisor = self.scale, self.shift, self.divisor
        return {k: (v * scale + shift) / divisor for k, v in data.items()}


IDENTITY = Conversion(1.0)


@functools.cache
def _registry() -> pint.UnitRegistry[Any]:
    # Exact rationals: 0 degC is exactly 32 degF here, where float pint says 31.99999999999994.
    return pint.UnitRegistry(non_int_type=Fraction)


def _quantity_of(unit_id: str) -> str:
    unit = UNITS.get(unit_id)
    return unit.quantity if unit is not None else ""


def conversion(
    from_unit: str, to_unit: str, *, is_difference: bool = False, field: str = "unit"
) -> Conversion:
    """The conversion of values in `from_unit` to `to_unit`, cached per pair.

    Args:
        from_unit: a catalog unit id, or a free-form unit (converts only to itself).
        to_unit: the unit asked for.
        is_difference: the values are differences (a delta metric): apply no offset.
        field: the request field errors name.

    Raises:
        Invalid: naming `field` and the unit, when `to_unit` is unknown or of another quantity.
    """
    if from_unit == to_unit:
        return IDENTITY
    if not isinstance(to_unit, str) or to_unit not in UNITS:
        raise Invalid(f"{field}: unknown unit {to_unit!r}", field=field, unit=to_unit)
    source, target = _quantity_of(from_unit), _quantity_of(to_unit)
    if source != target or not source or from_unit not in PINT_UNITS:
        raise Invalid(
            f"{field}: cannot convert {from_unit!r} ({source or 'free-form'}) to {to_unit!r} "
            f"({target})",
            field=field,
            unit=to_unit,
        )
    return _cached(from_unit, to_unit, is_difference)


@functools.cache
def _cached(from_unit: str, to_unit: str, is_difference: bool) -> Conversion:
    # Only catalog pairs of one quantity get here: the cache holds at most |UNITS|² x 2.
    registry = _registry()
    source, target = PINT_UNITS[from_unit], PINT_UNITS[to_unit]
    zero = Fraction(registry.Quantity(Fraction(0), source).to(target).magnitude)
    one = Fraction(registry.Quantity(Fraction(1), source).to(target).magnitude)
    scale, shift = one - zero, Fraction(0) if is_difference else zero
    divisor = math.lcm(scale.denominator, shift.denominator)
    scale_num, shift_num = int(scale * divisor), int(shift * divisor)  # integral by the lcm
    if max(abs(scale_num), abs(shift_num), divisor) <= _EXACT_INT:
        return Conversion(float(scale_num), float(shift_num), float(divisor))
    return Conversion(float(scale), float(shift))


def conversion_for(metric: Metric, to_unit: str, field: str = "unit") -> Conversion:
    """The conversion of `metric`'s raw values (in its default unit) to `to_unit`.

    A delta metric's values are differences and convert without offset.

    Raises:
        Invalid: naming `field`, when the metric cannot be asked in `to_unit`.
    """
    return conversion(metric.default_unit, to_unit, is_difference=metric.is_delta, field=field)


def convert(value: float, from_unit: str, to_unit: str, *, is_difference: bool = False) -> float:
    """Convert one value (through the cached conversion).

    Raises:
        Invalid: when the units are unknown or of different quantities.
    """
    return conversion(from_unit, to_unit, is_difference=is_difference)(value)


def unit_for_dtdl(name: object) -> str | None:
    """The catalog unit id of a DTDL semantic unit name, or None when the catalog has none."""
    return DTDL_UNITS.get(name) if isinstance(name, str) else None
