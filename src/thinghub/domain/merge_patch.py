"""JSON merge patch (RFC 7396, which obsoletes RFC 7386): an object merges into an object,
`null` deletes a member, anything else replaces the target.
"""

from __future__ import annotations

import copy
from typing import Any

from thinghub.domain.errors import Invalid
from thinghub.domain.json_depth import JSON_DEPTH_CEILING

__all__ = ["merge_patch"]


def merge_patch(target: Any, patch: Any, depth: int = 0) -> Any:
    """Apply `patch` to `target` (RFC 7396); neither argument is changed.

    It recurses along the patch, which came in as a request body (at most max_json_depth
    deep); past JSON_DEPTH_CEILING it is refused all the same (issue 7).

    Raises:
        Invalid: the patch nests deeper than JSON_DEPTH_CEILING.
    """
    if depth > JSON_DEPTH_CEILING:
        raise Invalid(f"the patch nests deeper than {JSON_DEPTH_CEILING} levels", field="body")
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value, depth + 1)
    return out
