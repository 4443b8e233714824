"""Naming the bad field of a pydantic error the way the iTwin wire does: `data[0].timestamp`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

__all__ = ["error_paths", "format_loc"]

# pydantic adds these to a location for union members and validators; they are not fields.
_NOT_FIELDS = ("function-", "union[", "list[", "dict[", "tagged-union[")
_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


def format_loc(loc: tuple[int | str, ...], root: str = "params") -> str:
    """`("data", 0, "timestamp")` -> `data[0].timestamp`; an empty location is `root`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(_NOT_FIELDS) or part in _TYPE_NAMES:
            continue
        else:
            out += f".{part}" if out else part
    return out or root


def error_paths(exc: ValidationError, root: str = "params") -> list[dict[str, Any]]:
    """`[{"path", "message"}]` for each error, without echoing the input."""
    return [
        {
            "path": format_loc(tuple(error["loc"]), root),
            "message": error["msg"].removeprefix("Value error, "),
        }
        for error in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
