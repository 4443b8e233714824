"""The OData `$filter` subset of IoT Central's device list.

Grammar (OData v4 §5.1.1, lowest precedence first; keywords are case-insensitive here)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | comparison
    comparison := primary (("eq"|"ne"|"gt"|"ge"|"lt"|"le") primary)?
    primary    := "(" filter ")" | literal | field | function "(" args ")"
    literal    := 'string' ('' escapes a quote) | true | false | null | number
    function   := startswith | endswith | contains      (string, string) -> boolean
                | tolower | toupper | trim              (string) -> string
                | length                                (string) -> number
                | indexof                               (string, string) -> number
                | concat                                (string, string) -> string
                | substring                             (string, number[, number]) -> string

The functions are OData v4's string functions (§5.1.1.5), as IoT Central's device list takes
them; a function of a null field is null (so `tolower(template) eq null` holds for a device
without a template, and a boolean function of null is false).

`$orderby` (parse_orderby) is a comma-separated list of `field [asc|desc]`; nulls sort first
ascending, as OData says.

Every expression is type-checked against the fields a caller allows, once, at parse time, so
evaluation never fails: `simulated eq 'x'` or `id gt true` is a FilterError (a 400), not a
surprise later. Input is bounded (MAX_FILTER_CHARS, MAX_DEPTH) so no filter can exhaust the
stack.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from thinghub.domain.errors import Invalid

__all__ = [
    "MAX_DEPTH",
    "MAX_FILTER_CHARS",
    "MAX_ORDERBY_KEYS",
    "FieldType",
    "Filter",
    "FilterError",
    "OrderBy",
    "parse_filter",
    "parse_orderby",
]

FieldType = Literal["string", "boolean", "number"]
_Type = Literal["string", "boolean", "number", "null"]

# A filter is typed by a person or a small program; anything longer is a mistake or an attack.
MAX_FILTER_CHARS = 4096
# Nesting of parentheses and `not`, bounded so the recursive-descent parser stays shallow.
MAX_DEPTH = 64

# The most keys a `$orderby` may name (each a field; more is a mistake).
MAX_ORDERBY_KEYS = 8

_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")


@dataclass(frozen=True, slots=True)
class _Function:
    params: tuple[_Type, ...]  # the argument types, in order
    optional: int  # how many of the last params may be left out
    returns: _Type
    apply: Callable[..., Any]


def _substring(text: str, start: float, length: float | None = None) -> str:
    begin = max(int(start), 0)
    return text[begin:] if length is None else text[begin : begin + max(int(length), 0)]


_FUNCTIONS: dict[str, _Function] = {
    "startswith": _Function(("string", "string"), 0, "boolean", lambda a, b: a.startswith(b)),
    "endswith": _Function(("string", "string"), 0, "boolean", lambda a, b: a.endswith(b)),
    "contains": _Function(("string", "string"), 0, "boolean", lambda a, b: b in a),
    "tolower": _Function(("string",), 0, "string", str.lower),
    "toupper": _Function(("string",), 0, "string", str.upper),
    "trim": _Function(("string",), 0, "string", str.strip),
    "length": _Function(("string",), 0, "number", len),
    "indexof": _Function(("string", "string"), 0, "number", lambda a, b: a.find(b)),
    "concat": _Function(("string", "string"), 0, "string", lambda a, b: a + b),
    "substring": _Function(("string", "number", "number"), 1, "string", _substring),
}
_KEYWORDS = {"and", "or", "not", "true", "false", "null", *_COMPARISONS}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![A-Za-z0-9_])
  | (?P<name>@?[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)


class FilterError(Invalid):
    """A `$filter` that does not parse or does not type-check; the message says where."""

    def __init__(self, message: str) -> None:
        super().__init__(f"$filter: {message}", field="$filter")


# -- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Literal:
    value: str | bool | float | int | None


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


@dataclass(frozen=True, slots=True)
class _Compare:
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Logical:
    op: Literal["and", "or"]
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Not:
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Call:
    name: str
    args: tuple[_Node, ...]


_Node = _Literal | _Field | _Compare | _Logical | _Not | _Call


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string | number | name | punct | end
    text: str
    pos: int
    value: Any = None


# -- public surface ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed, type-checked filter; `matches` never raises for records of the declared fields."""

    text: str
    _root: _Node

    def matches(self, record: Mapping[str, Any]) -> bool:
        return _evaluate(self._root, record) is True


@dataclass(frozen=True, slots=True)
class OrderBy:
    """A parsed `$orderby`: (field, descending) pairs, first key first."""

    keys: tuple[tuple[str, bool], ...]

    def sort(self, records: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """The records in this order (stable: equal keys keep their order)."""
        ordered = list(records)
        for name, descending in reversed(self.keys):
            ordered.sort(key=lambda r: _sort_key(r.get(name)), reverse=descending)
        return ordered


def _sort_key(value: Any) -> tuple[int, Any]:
    # Null first (ascending); a field holds one type, so values compare.
    return (0, 0) if value is None else (1, value)


def parse_orderby(text: str, fields: Mapping[str, FieldType]) -> OrderBy:
    """`field [asc|desc], ...` over the allowed `fields`.

    Raises:
        Invalid: naming `$orderby`, for an unknown field, a bad direction or too many keys.
    """
    keys: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if not words:
            raise Invalid("$orderby: an empty key; write field [asc|desc], ...", field="$orderby")
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise Invalid(f"$orderby: {part.strip()!r} is not field [asc|desc]", field="$orderby")
        if words[0] not in fields:
            raise Invalid(
                f"$orderby: unknown field {words[0]!r}; sortable fields are {', '.join(fields)}",
                field="$orderby",
            )
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
    if len(keys) > MAX_ORDERBY_KEYS:
        raise Invalid(f"$orderby: at most {MAX_ORDERBY_KEYS} keys", field="$orderby")
    return OrderBy(tuple(keys))


def parse_filter(text: str, fields: Mapping[str, FieldType]) -> Filter:
    """Parse `text` against the allowed `fields` and their types.

    Raises:
        FilterError: when the text is too long, does not parse, names an unknown field or
            compares values of different types.
    """
    if not isinstance(text, str):
        raise TypeError("the filter must be a str")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(f"longer than {MAX_FILTER_CHARS} characters")
    if not text.strip():
        raise FilterError("is empty")
    parser = _Parser(_tokenize(text), fields)
    root = parser.parse()
    if _type_of(root, fields) != "boolean":
        raise FilterError("must be a condition (a comparison, function or boolean field)")
    return Filter(text, root)


# -- tokenizer ---------------------------------------------------------------------------------


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos] == "'":
                raise FilterError(f"unterminated string starting at position {pos + 1}")
            raise FilterError(f"unexpected character {text[pos]!r} at position {pos + 1}")
        kind = match.lastgroup or ""
        raw = match.group()
        if kind == "string":
            tokens.append(_Token("string", raw, pos, raw[1:-1].replace("''", "'")))
        elif kind == "number":
            tokens.append(_Token("number", raw, pos, _number(raw, pos)))
        elif kind in ("name", "punct"):
            tokens.append(_Token(kind, raw, pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _number(raw: str, pos: int) -> int | float:
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    value = float(raw)
    if not math.isfinite(value):
        raise FilterError(f"number {raw} at position {pos + 1} is out of range")
    return value


# -- parser ------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, tokens: list[_Token], fields: Mapping[str, FieldType]) -> None:
        self.tokens = tokens
        self.fields = fields
        self.index = 0
        self.depth = 0

    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def _keyword(self, *words: str) -> str | None:
        token = self.current
        if token.kind == "name" and token.text.lower() in words:
            self.index += 1
            return token.text.lower()
        return None

    def _expect(self, text: str) -> None:
        token = self.current
        if token.kind != "punct" or token.text != text:
            raise FilterError(f"expected {text!r} {_at(token)}")
        self.index += 1

    def _descend(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FilterError(f"nests deeper than {MAX_DEPTH} levels")

    def parse(self) -> _Node:
        node = self._or()
        if self.current.kind != "end":
            raise FilterError(f"unexpected {_describe(self.current)} {_at(self.current)}")
        return node

    def _or(self) -> _Node:
        node = self._and()
        while self._keyword("or"):
            node = _Logical("or", node, self._and())
            self._check_logical(node)
        return node

    def _and(self) -> _Node:
        node = self._unary()
        while self._keyword("and"):
            node = _Logical("and", node, self._unary())
            self._check_logical(node)
        return node

    def _unary(self) -> _Node:
        start = self.current
        if self._keyword("not"):
            self._descend()
            operand = self._unary()
            self.depth -= 1
            if _type_of(operand, self.fields) != "boolean":
                raise FilterError(f"'not' needs a condition {_at(start)}")
            return _Not(operand)
        return self._comparison()

    def _comparison(self) -> _Node:
        left = self._primary()
        token = self.current
        op = self._keyword(*_COMPARISONS)
        if op is None:
            return left
        right = self._primary()
        self._check_compare(op, left, right, token)
        return _Compare(op, left, right)

    def _primary(self) -> _Node:
        token = self.current
        if token.kind == "punct" and token.text == "(":
            self.index += 1
            self._descend()
            node = self._or()
            self.depth -= 1
            self._expect(")")
            return node
        if token.kind in ("string", "number"):
            self.index += 1
            return _Literal(token.value)
        if token.kind == "name":
            word = token.text.lower()
            if word in ("true", "false"):
                self.index += 1
                return _Literal(word == "true")
            if word == "null":
                self.index += 1
                return _Literal(None)
            if word in _KEYWORDS:
                raise FilterError(f"expected a value, got '{token.text}' {_at(token)}")
            self.index += 1
            if self.current.kind == "punct" and self.current.text == "(":
                return self._call(token)
            if token.text not in self.fields:
                raise FilterError(
                    f"unknown field {token.text!r} {_at(token)}; filterable fields are "
                    f"{', '.join(self.fields)}"
                )
            return _Field(token.text)
        raise FilterError(f"expected a value, got {_describe(token)} {_at(token)}")

    def _call(self, name: _Token) -> _Node:
        function = name.text.lower()
        if function not in _FUNCTIONS:
            raise FilterError(
                f"unknown function {name.text!r} {_at(name)}; supported are {', '.join(_FUNCTIONS)}"
            )
        self._expect("(")
        self._descend()
        args = [self._or()]
        while self.current.kind == "punct" and self.current.text == ",":
            self.index += 1
            args.append(self._or())
        self.depth -= 1
        self._expect(")")
        spec = _FUNCTIONS[function]
        most = len(spec.params)
        if not most - spec.optional <= len(args) <= most:
            wanted = str(most) if not spec.optional else f"{most - spec.optional} or {most}"
            raise FilterError(f"{function} takes {wanted} arguments, got {len(args)} {_at(name)}")
        for arg, wanted_type in zip(args, spec.params, strict=False):
            if _type_of(arg, self.fields) not in (wanted_type, "null"):
                raise FilterError(
                    f"{function} takes ({', '.join(spec.params[: len(args)])}) {_at(name)}"
                )
        return _Call(function, tuple(args))

    def _check_compare(self, op: str, left: _Node, right: _Node, token: _Token) -> None:
        types = {_type_of(left, self.fields), _type_of(right, self.fields)}
        if "null" in types:
            if op not in ("eq", "ne"):
                raise FilterError(f"'{op}' cannot compare with null {_at(token)}")
            return
        if len(types) != 1:
            raise FilterError(f"'{op}' compares a {' with a '.join(sorted(types))} {_at(token)}")
        if op not in ("eq", "ne") and types == {"boolean"}:
            raise FilterError(f"'{op}' needs strings or numbers, not booleans {_at(token)}")

    def _check_logical(self, node: _Logical) -> None:
        for side in (node.left, node.right):
            if _type_of(side, self.fields) != "boolean":
                raise FilterError(f"'{node.op}' joins conditions, not bare values")


def _type_of(node: _Node, fields: Mapping[str, FieldType]) -> _Type:
    if isinstance(node, _Literal):
        value = node.value
        if value is None:
            return "null"
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, str):
            return "string"
        return "number"
    if isinstance(node, _Field):
        return fields[node.name]
    if isinstance(node, _Call):
        return _FUNCTIONS[node.name].returns
    return "boolean"


def _describe(token: _Token) -> str:
    return "end of filter" if token.kind == "end" else repr(token.text)


def _at(token: _Token) -> str:
    return "at the end" if token.kind == "end" else f"at position {token.pos + 1}"


# -- evaluation --------------------------------------------------------------------------------


def _value(node: _Node, record: Mapping[str, Any]) -> Any:
    if isinstance(node, _Literal):
        return node.value
    if isinstance(node, _Field):
        return record.get(node.name)
    return _evaluate(node, record)


def _evaluate(node: _Node, record: Mapping[str, Any]) -> Any:
    if isinstance(node, _Logical):
        if node.op == "and":
            return _evaluate(node.left, record) is True and _evaluate(node.right, record) is True
        return _evaluate(node.left, record) is True or _evaluate(node.right, record) is True
    if isinstance(node, _Not):
        return _evaluate(node.operand, record) is not True
    if isinstance(node, _Call):
        spec = _FUNCTIONS[node.name]
        args = [_value(arg, record) for arg in node.args]
        if any(arg is None for arg in args):
            return False if spec.returns == "boolean" else None
        return spec.apply(*args)
    if isinstance(node, _Compare):
        return _compare(node.op, _value(node.left, record), _value(node.right, record))
    return _value(node, record) is True


def _compare(op: str, a: Any, b: Any) -> bool:
    if op == "eq":
        return bool(_same(a, b))
    if op == "ne":
        return not _same(a, b)
    if a is None or b is None or isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, str) != isinstance(b, str):
        return False
    try:
        if op == "gt":
            return bool(a > b)
        if op == "ge":
            return bool(a >= b)
        if op == "lt":
            return bool(a < b)
        return bool(a <= b)
    except TypeError:
        return False


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; in OData a boolean never equals a number.
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return bool(a == b)
