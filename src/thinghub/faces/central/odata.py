"""The OData `$filter` subset of IoT Central's device list.

Grammar (OData v4 §5.1.1, lowest precedence first; keywords are case-insensitive here)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | comparison
    comparison := primary (("eq"|"ne"|"gt"|"ge"|"lt"|"le") primary)?
    primary    := "(" filter ")" | literal | field | function "(" args ")"
    literal    := 'string' ('' escapes a quote) | true | false | null | number
    function   := startswith | endswith | contains        (two string arguments)

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
    "FieldType",
    "Filter",
    "FilterError",
    "parse_filter",
]

FieldType = Literal["string", "boolean", "number"]
_Type = Literal["string", "boolean", "number", "null"]

# A filter is typed by a person or a small program; anything longer is a mistake or an attack.
MAX_FILTER_CHARS = 4096
# Nesting of parentheses and `not`, bounded so the recursive-descent parser stays shallow.
MAX_DEPTH = 64

_COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "startswith": lambda a, b: a.startswith(b),
    "endswith": lambda a, b: a.endswith(b),
    "contains": lambda a, b: b in a,
}
_KEYWORDS = {"and", "or", "not", "true", "false", "null", *_COMPARISONS}

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?![A-Za-z0-9_])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
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
        return bool(_evaluate(self._root, record))


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
        if len(args) != 2:
            raise FilterError(f"{function} takes 2 arguments, got {len(args)} {_at(name)}")
        for arg in args:
            if _type_of(arg, self.fields) != "string":
                raise FilterError(f"{function} takes two strings {_at(name)}")
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
        a, b = (_value(arg, record) for arg in node.args)
        if not isinstance(a, str) or not isinstance(b, str):
            return False
        return _FUNCTIONS[node.name](a, b)
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
