"""Tests for thinghub.domain.twin: merge patches, versions, $metadata and patch validation."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.domain.clock import format_ts
from thinghub.domain.errors import Invalid, TooLarge
from thinghub.domain.twin import (
    MAX_TWIN_DEPTH,
    MAX_TWIN_PATCH_BYTES,
    MAX_TWIN_SECTION_BYTES,
    Twin,
    TwinSection,
    check_patch_size,
    validate_patch,
)

T0 = 1_755_090_409.0139609  # 2025-08-13T13:06:49Z, near the ST API's example timestamps
T1 = T0 + 60.0
SEED_TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")  # 2025-08-13T13:46:49.0139609Z


def nested(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """An object `levels` objects deep: nested(2) == {"k": {"k": 1}}."""
    node: Any = leaf
    for _ in range(levels):
        node = {"k": node}
    return node  # type: ignore[no-any-return]


# -- merge semantics ---------------------------------------------------------------------------


def test_nested_objects_merge() -> None:
    section = TwinSection().apply({"a": {"b": 1, "c": 2}, "x": 1}, T0)
    section = section.apply({"a": {"c": 3, "d": {"e": 4}}}, T1)
    assert section.properties == {"a": {"b": 1, "c": 3, "d": {"e": 4}}, "x": 1}


def test_null_deletes_at_any_depth() -> None:
    section = TwinSection().apply({"a": {"b": 1, "c": 2}, "x": 1}, T0)
    section = section.apply({"a": {"b": None}, "x": None, "never-there": None}, T1)
    assert section.properties == {"a": {"c": 2}}
    assert "x" not in section.metadata
    assert "b" not in section.metadata["a"]


def test_nulls_inside_a_new_object_are_not_stored() -> None:
    section = TwinSection().apply({"a": {"b": None, "c": 1}}, T0)
    assert section.properties == {"a": {"c": 1}}


@pytest.mark.parametrize(
    ("before", "patch", "after"),
    [
        ({"a": 1}, {"a": {"b": 2}}, {"a": {"b": 2}}),  # an object replaces a value
        ({"a": {"b": 2}}, {"a": 5}, {"a": 5}),  # a value replaces an object
        ({"a": [1, 2, 3]}, {"a": [4]}, {"a": [4]}),  # arrays are values: replaced whole
        ({"a": "x"}, {"a": False}, {"a": False}),
        ({"a": {"b": 1}}, {"a": {}}, {"a": {"b": 1}}),  # an empty object changes nothing
    ],
)
def test_values_replace(
    before: dict[str, Any], patch: dict[str, Any], after: dict[str, Any]
) -> None:
    assert TwinSection().apply(before, T0).apply(patch, T1).properties == after


def test_apply_returns_a_new_section_and_leaves_inputs_alone() -> None:
    first = TwinSection().apply({"a": {"b": 1}}, T0)
    props, meta = copy.deepcopy(first.properties), copy.deepcopy(first.metadata)
    patch = {"a": {"b": 2, "c": {"d": 3}}}
    kept = copy.deepcopy(patch)
    second = first.apply(patch, T1)
    assert (first.properties, first.metadata, first.version) == (props, meta, 2)
    assert patch == kept
    assert second.properties == {"a": {"b": 2, "c": {"d": 3}}}


# -- versions ----------------------------------------------------------------------------------


def test_versions_count_changes_per_section_and_per_twin() -> None:
    twin = Twin("dev-1")
    assert (twin.version, twin.desired.version, twin.reported.version) == (1, 1, 1)
    twin = twin.patch_desired({"targetTemperature": 22.5}, T0)
    twin = twin.patch_desired({"targetTemperature": 23}, T1)
    twin = twin.patch_reported({"maxTempSinceLastReboot": 10.96}, T1)
    assert twin.desired.version == 3
    assert twin.reported.version == 2
    assert twin.version == 4
    assert twin.desired.properties == {"targetTemperature": 23}
    assert twin.reported.properties == {"maxTempSinceLastReboot": 10.96}


def test_a_patch_that_deletes_nothing_still_bumps_the_version() -> None:
    section = TwinSection().apply({"gone": None}, T0)
    assert section.version == 2
    assert section.properties == {}


# -- $metadata ---------------------------------------------------------------------------------


def test_metadata_stamps_each_patched_node() -> None:
    section = TwinSection().apply({"a": {"b": 1, "c": 2}, "x": 1}, T0)
    section = section.apply({"a": {"c": 3}}, T1)
    old, new = format_ts(T0), format_ts(T1)
    assert section.metadata == {
        "a": {"$lastUpdated": new, "b": {"$lastUpdated": old}, "c": {"$lastUpdated": new}},
        "x": {"$lastUpdated": old},
    }
    assert section.last_updated == T1


def test_replacing_an_object_with_a_value_drops_its_child_metadata() -> None:
    section = TwinSection().apply({"a": {"b": 1}}, T0).apply({"a": 2}, T1)
    assert section.metadata == {"a": {"$lastUpdated": format_ts(T1)}}


def _mirrors(properties: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Metadata has the same keys as the properties, each node with a $lastUpdated."""
    assert set(metadata) - {"$lastUpdated"} == set(properties)
    for key, value in properties.items():
        node = metadata[key]
        assert SEED_TS.match(node["$lastUpdated"])
        if isinstance(value, dict):
            _mirrors(value, node)
        else:
            assert set(node) == {"$lastUpdated"}


_keys = st.sampled_from(["a", "b", "c", "d"])
_leaves = st.none() | st.integers(-5, 5) | st.text(max_size=3) | st.booleans()
_patches = st.dictionaries(
    _keys,
    st.recursive(_leaves, lambda inner: st.dictionaries(_keys, inner, max_size=3), max_leaves=8),
    max_size=4,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(_patches, max_size=6))
def test_metadata_mirrors_the_property_tree(patches: list[dict[str, Any]]) -> None:
    section = TwinSection()
    for i, patch in enumerate(patches):
        section = section.apply(patch, T0 + i)
        _mirrors(section.properties, section.metadata)
    assert section.version == 1 + len(patches)


# -- document(): the wire shape ----------------------------------------------------------------


def test_document_has_the_seed_change_event_reported_shape() -> None:
    # The ST API's change_event example: its body.properties.reported.
    seed_reported: dict[str, Any] = {
        "maxTempSinceLastReboot": 10.96,
        "$metadata": {
            "$lastUpdated": "2025-08-13T13:46:49.0139609Z",
            "maxTempSinceLastReboot": {"$lastUpdated": "2025-08-13T13:46:49.0139609Z"},
        },
        "$version": 13765,
    }
    twin = Twin("c8dc6706").patch_reported({"maxTempSinceLastReboot": 10.96}, T0)
    doc = twin.reported.document()
    assert list(doc) == list(seed_reported)
    assert doc["maxTempSinceLastReboot"] == 10.96
    assert list(doc["$metadata"]) == list(seed_reported["$metadata"])
    assert SEED_TS.match(doc["$metadata"]["$lastUpdated"])
    assert doc["$metadata"]["maxTempSinceLastReboot"] == {"$lastUpdated": format_ts(T0)}
    assert doc["$version"] == 2
    assert isinstance(doc["$version"], int)


def test_document_of_an_untouched_section() -> None:
    assert TwinSection().document() == {"$metadata": {}, "$version": 1}
    assert TwinSection().with_version() == {"$version": 1}


def test_with_version_is_properties_and_version_only() -> None:
    section = TwinSection().apply({"a": {"b": 1}}, T0)
    assert section.with_version() == {"a": {"b": 1}, "$version": 2}


# -- validate_patch ----------------------------------------------------------------------------


def test_validate_patch_drops_top_level_version_only() -> None:
    patch = {"$version": 7, "targetTemperature": 22.5}
    assert validate_patch(patch) == {"targetTemperature": 22.5}
    assert patch == {"$version": 7, "targetTemperature": 22.5}  # the input is not changed
    with pytest.raises(Invalid) as info:
        validate_patch({"a": {"$version": 7}})
    assert info.value.field == "properties.a.$version"


@pytest.mark.parametrize("value", [[], [1], "x", 1, None, True, 2.5])
def test_validate_patch_rejects_non_objects(value: Any) -> None:
    with pytest.raises(Invalid) as info:
        validate_patch(value, "reported")
    assert info.value.field == "reported"
    assert "object" in info.value.message


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"$metadata": {}}, "properties.$metadata"),
        ({"a": {"$x": 1}}, "properties.a.$x"),
        ({"": 1}, "properties."),
        ({"a.b": 1}, "properties.a.b"),
        ({"a b": 1}, "properties.a b"),
    ],
)
def test_validate_patch_rejects_reserved_or_odd_names(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as info:
        validate_patch(patch)
    assert info.value.field == field


def test_validate_patch_depth_limit() -> None:
    assert validate_patch(nested(MAX_TWIN_DEPTH)) == nested(MAX_TWIN_DEPTH)
    with pytest.raises(Invalid, match=f"deeper than {MAX_TWIN_DEPTH}") as info:
        validate_patch(nested(MAX_TWIN_DEPTH + 1))
    assert info.value.field is not None
    assert info.value.field.startswith("properties.k.k")


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
def test_validate_patch_rejects_non_finite_numbers(number: float) -> None:
    with pytest.raises(Invalid, match="finite") as info:
        validate_patch({"a": {"b": number}})
    assert info.value.field == "properties.a.b"


def test_validate_patch_accepts_json_values() -> None:
    patch = {"s": "x", "i": -1, "f": 2.5, "b": False, "n": None, "l": [1, "a"], "o": {"p": 1}}
    assert validate_patch(patch) == patch


def test_a_section_holds_at_most_32_kib_of_properties() -> None:
    """IoT Hub's limit is per section: patches that each fit may not overfill it."""
    half = "x" * (MAX_TWIN_SECTION_BYTES // 2)
    section = TwinSection().apply({"a": half}, 1.0)
    with pytest.raises(TooLarge, match="limit is 32768"):
        section.apply({"b": half}, 2.0)
    assert section.apply({"a": None, "b": half}, 2.0).properties == {"b": half}
    twin = Twin("d").patch_reported({"a": half}, 1.0)
    with pytest.raises(TooLarge):
        twin.patch_reported({"b": half}, 2.0)
    assert twin.patch_desired({"b": half}, 2.0).desired.properties == {"b": half}  # apart


def test_the_patch_size_cap_measures_bytes_as_sent_and_patches_as_compact_json() -> None:
    """One cap for every way a patch comes in: a device's bytes, an application's object."""
    room = MAX_TWIN_PATCH_BYTES - len('{"a":""}')
    assert check_patch_size({"a": "x" * room}) == MAX_TWIN_PATCH_BYTES
    with pytest.raises(TooLarge) as info:
        check_patch_size({"a": "x" * (room + 1)}, "value")
    assert info.value.field == "value"
    assert info.value.message == f"value is {MAX_TWIN_PATCH_BYTES + 1} bytes; the limit is 32768"
    # Non-ASCII counts in UTF-8 bytes, not characters.
    with pytest.raises(TooLarge):
        check_patch_size({"a": "é" * (room // 2 + 1)})
    assert check_patch_size(b" " * MAX_TWIN_PATCH_BYTES, "reported") == MAX_TWIN_PATCH_BYTES
    with pytest.raises(TooLarge) as raw:
        check_patch_size(b" " * (MAX_TWIN_PATCH_BYTES + 1), "reported")
    assert raw.value.field == "reported"
    # Measuring never raises on what other checks refuse (a lone surrogate).
    assert check_patch_size({"a": "\ud800"}) == len('{"a":""}') + 3
