"""Wire helpers of the IoT Central face (faces/central/_wire.py): JSON values, twin times."""

from __future__ import annotations

import math
from typing import Any

import pytest

from thinghub.domain.errors import Invalid
from thinghub.domain.twin import TwinSection
from thinghub.faces.central._wire import section_stamp, section_time, to_json


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, {"a": math.nan}, [1, [2, {"b": math.inf}]]],
)
def test_non_finite_numbers_are_400(value: Any) -> None:
    with pytest.raises(Invalid, match="not a JSON number") as caught:
        to_json(value, "body")
    assert caught.value.field == "body"


def test_json_values_pass() -> None:
    assert to_json({"a": [1, 2.5, None, True, "x"]}, "body") == b'{"a":[1,2.5,null,true,"x"]}'


def test_integers_beyond_64_bits_are_400() -> None:
    with pytest.raises(Invalid, match="cannot be stored"):
        to_json({"a": 2**70}, "value")


def test_section_times_come_from_the_property_metadata() -> None:
    section = TwinSection().apply({"a": 1, "c": {"b": 2}}, 1_700_000_000.0)
    section = section.apply({"a": 3}, 1_700_000_100.0)
    assert section_stamp(section, None, "a") == pytest.approx(1_700_000_100.0)
    assert section_stamp(section, "c", "b") == pytest.approx(1_700_000_000.0)
    assert section_time(section, None, "a") == "2023-11-14T22:15:00Z"
    # Without metadata for the property: the section's last update.
    assert section_stamp(section, None, "missing") == section.last_updated
    assert section_time(TwinSection(), None, "x") is None
