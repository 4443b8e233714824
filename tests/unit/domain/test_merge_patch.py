"""JSON merge patch (domain/merge_patch.py, RFC 7396), bounded in depth."""

from __future__ import annotations

import pytest

from tests.unit.domain.dtdl._models import nested_value
from thinghub.domain.errors import Invalid
from thinghub.domain.json_depth import JSON_DEPTH_CEILING
from thinghub.domain.merge_patch import merge_patch


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [1]}) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "f": [1],
    }
    assert merge_patch({"a": 1}, [1]) == [1]


def test_merge_patch_is_bounded_in_depth() -> None:
    """It recurses along the patch: bounded, whatever reaches it."""
    assert merge_patch({}, nested_value(JSON_DEPTH_CEILING)) == nested_value(JSON_DEPTH_CEILING)
    with pytest.raises(Invalid) as info:
        merge_patch({}, nested_value(JSON_DEPTH_CEILING + 2))
    assert info.value.field == "body"
