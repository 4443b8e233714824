"""A device group's filter: the IoT Central query form `SELECT * FROM devices [WHERE ...]`,
or an OData `$filter` as the device list takes it.

The WHERE clause of IoT Central's form is read as a `$filter` after a translation of its
surface: `$id`, `$displayName`, `$template`, `$simulated`, `$provisioned`, `$enabled` name the
device fields; `=`, `!=`/`<>`, `<`, `<=`, `>`, `>=` are `eq`, `ne`, `lt`, `le`, `gt`, `ge`;
double-quoted strings are strings. Everything else (AND, OR, NOT, parentheses, functions) is
OData's already.
"""

from __future__ import annotations

import re

from thinghub.domain.errors import Invalid
from thinghub.faces.central._wire import FILTER_FIELDS
from thinghub.faces.central.odata import Filter, FilterError, parse_filter

__all__ = ["group_filter"]

_SELECT = re.compile(
    r"\s*select\s+\*\s+from\s+devices(?:\s+where\s+(?P<where>.+))?\s*", re.I | re.S
)
_TOKEN = re.compile(
    r"""(?P<dq>"(?:[^"\\]|\\.)*")|(?P<sq>'(?:[^']|'')*')|(?P<op>!=|<>|<=|>=|=|<|>)"""
    r"""|(?P<field>\$[A-Za-z]+)|(?P<other>[^"'!<>=$]+|.)""",
    re.S,
)
_OPS = {"=": "eq", "!=": "ne", "<>": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


def _translate(where: str) -> str:
    out: list[str] = []
    for match in _TOKEN.finditer(where):
        kind = match.lastgroup
        text = match.group()
        if kind == "dq":
            out.append("'" + text[1:-1].replace('\\"', '"').replace("'", "''") + "'")
        elif kind == "op":
            out.append(f" {_OPS[text]} ")
        elif kind == "field":
            name = text[1:]
            if name not in FILTER_FIELDS:
                raise Invalid(
                    f"filter: unknown field {text!r}; fields are "
                    + ", ".join(f"${f}" for f in FILTER_FIELDS),
                    field="filter",
                )
            out.append(name)
        else:
            out.append(text)
    return "".join(out)


def group_filter(text: str) -> Filter | None:
    """The filter of a group (None: every device).

    Raises:
        Invalid: naming `filter`, when it does not parse.
    """
    select = _SELECT.fullmatch(text)
    odata = text
    if select is not None:
        where = select.group("where")
        if where is None:
            return None
        odata = _translate(where)
    try:
        return parse_filter(odata, FILTER_FIELDS)
    except FilterError as exc:
        raise Invalid(exc.message.replace("$filter", "filter", 1), field="filter") from None
