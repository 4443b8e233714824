"""IoT Central's query language (POST /query), the documented subset, over telemetry.

Grammar (keywords case-insensitive)::

    query   := SELECT [TOP n] item ("," item)* FROM template
               [WHERE cond] [GROUP BY group ("," group)*] [ORDER BY key [ASC|DESC]]
    item    := ($id | $ts | field | AGG "(" field ")") [AS alias]
    AGG     := AVG | SUM | MIN | MAX | COUNT
    group   := WINDOW "(" duration ")" | $id
    cond    := term (OR term)* ; term := factor (AND factor)*
    factor  := NOT factor | "(" cond ")" | WITHIN_WINDOW "(" duration ")"
             | operand (= | != | <> | < | <= | > | >=) operand
    operand := $id | $ts | field | 'string' | number | true | false
    field   := name | component.name

A row is one telemetry message of a device that uses the template: `$id`, `$ts` and its
fields (a component's as `component.name`). WITHIN_WINDOW(P1D) keeps the messages of the last
day. Without GROUP BY and aggregates, each row with one of the selected fields is a result;
with aggregates, rows are grouped by WINDOW (windows aligned on multiples of the duration since
1970) and/or `$id`, and each group is a result (`$ts` the window's start), an aggregate named by
its alias or `<agg>_<field>`. Durations are ISO 8601 (P1D, PT10M, P1W). This module parses and
evaluates; the route reads the rows (through the services, as the caller).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from thinghub.domain.errors import Invalid

__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_TOP",
    "Query",
    "parse_duration",
    "parse_query",
]

# A query is typed by a person; longer is a mistake.
MAX_QUERY_CHARS = 4096
# The most results one query answers (and the default TOP).
MAX_TOP = 10_000
# Nesting of parentheses and NOT in WHERE.
MAX_DEPTH = 32

_AGGREGATES = ("avg", "sum", "min", "max", "count")
_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)"""
    r"""|(?P<op><>|!=|<=|>=|=|<|>)|(?P<punct>[(),*])|(?P<dtmi>dtmi:[^\s]+)"""
    r"""|(?P<name>\$?[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)""",
)
_DURATION = re.compile(
    r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?",
    re.I,
)


def _error(message: str) -> Invalid:
    return Invalid(f"query: {message}", field="query")


def parse_duration(text: str) -> float:
    """An ISO 8601 duration (PnW, PnDTnHnMnS) in seconds, more than 0."""
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groupdict().values()):
        raise _error(f"{text!r} is not an ISO 8601 duration such as P1D or PT10M")
    parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
    seconds = (
        parts["w"] * 604_800
        + parts["d"] * 86_400
        + parts["h"] * 3600
        + parts["m"] * 60
        + parts["s"]
    )
    if not 0 < seconds <= 3650 * 86_400:
        raise _error(f"duration {text!r} must be more than 0 and at most ten years")
    return seconds


# -- syntax --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str
    text: str
    pos: int


@dataclass(frozen=True, slots=True)
class Item:
    """One selected column: a field (`$id`, `$ts`, a telemetry) or an aggregate of one."""

    field: str
    aggregate: str | None
    name: str  # its key in a result


@dataclass(frozen=True, slots=True)
class _Cmp:
    op: str
    left: Any  # ("field", name) | ("value", v)
    right: Any


@dataclass(frozen=True, slots=True)
class _Bool:
    op: str  # and | or | not
    parts: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Within:
    seconds: float


@dataclass(frozen=True, slots=True)
class Query:
    top: int
    items: tuple[Item, ...]
    template: str
    where: Any
    window_s: float | None  # GROUP BY WINDOW
    by_device: bool  # GROUP BY $id
    order: tuple[str, bool] | None  # (key, descending)

    @property
    def aggregated(self) -> bool:
        return any(i.aggregate for i in self.items) or self.window_s is not None or self.by_device

    def fields(self) -> frozenset[str]:
        """The fields (neither `$id` nor `$ts`) the query selects or tests."""
        named = {i.field for i in self.items} | set(_fields(self.where))
        return frozenset(f for f in named if not f.startswith("$"))

    def since(self, now: float) -> float | None:
        """The start of the widest WITHIN_WINDOW the WHERE names (None: unbounded)."""
        widest = max((w.seconds for w in _withins(self.where)), default=None)
        return None if widest is None else now - widest

    def run(self, rows: Iterable[Mapping[str, Any]], now: float) -> list[dict[str, Any]]:
        """The results of the query over `rows` (each with `$id`, `$ts` in epoch seconds and
        fields), `$ts` left as epoch seconds for the caller to format."""
        kept = [r for r in rows if _test(self.where, r, now)]
        if self.aggregated:
            results = self._aggregate(kept)
        else:
            fields = [i.field for i in self.items if not i.field.startswith("$")]
            results = [
                {i.name: row.get(i.field) for i in self.items if i.field in row}
                for row in kept
                if not fields or any(f in row for f in fields)
            ]
        if self.order is not None:
            key, descending = self.order
            results.sort(key=lambda r: _sort_key(r.get(key)), reverse=descending)
        return results[: self.top]

    def _aggregate(self, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
        for row in rows:
            key: tuple[Any, ...] = ()
            if self.window_s is not None:
                if row.get("$ts") is None:
                    continue  # a property never changed since thinghub knew it: in no window
                key += (math.floor(row["$ts"] / self.window_s) * self.window_s,)
            if self.by_device:
                key += (row["$id"],)
            groups.setdefault(key, []).append(row)
        out = []
        for key, members in sorted(groups.items(), key=lambda kv: kv[0]):
            result: dict[str, Any] = {}
            index = 0
            if self.window_s is not None:
                result["$ts"] = key[index]
                index += 1
            if self.by_device:
                result["$id"] = key[index]
            for item in self.items:
                if item.aggregate is None:
                    if item.field not in ("$ts", "$id"):
                        raise _error(f"{item.field} must be aggregated or grouped by")
                    continue
                # COUNT counts the values there are (a string property's too); the others
                # take the numbers.
                keep = _is_present if item.aggregate == "count" else _is_number
                result[item.name] = _AGG_FUNCS[item.aggregate](
                    [m[item.field] for m in members if keep(m.get(item.field))]
                )
            out.append(result)
        return out


def _is_present(value: Any) -> bool:
    return value is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_AGG_FUNCS: dict[str, Callable[[list[Any]], Any]] = {
    "avg": lambda v: sum(v) / len(v) if v else None,
    "sum": lambda v: sum(v) if v else None,
    "min": lambda v: min(v) if v else None,
    "max": lambda v: max(v) if v else None,
    "count": len,
}


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (2, value)
    return (1, value)


def _withins(node: Any) -> list[_Within]:
    if isinstance(node, _Within):
        return [node]
    if isinstance(node, _Bool) and node.op == "and":
        return [w for part in node.parts for w in _withins(part)]
    return []


def _fields(node: Any) -> list[str]:
    if isinstance(node, _Bool):
        return [f for part in node.parts for f in _fields(part)]
    if isinstance(node, _Cmp):
        return [side[1] for side in (node.left, node.right) if side[0] == "field"]
    return []


def _operand(side: Any, row: Mapping[str, Any]) -> Any:
    kind, value = side
    return row.get(value) if kind == "field" else value


def _test(node: Any, row: Mapping[str, Any], now: float) -> bool:
    if node is None:
        return True
    if isinstance(node, _Within):
        ts = row.get("$ts")
        return ts is not None and bool(ts >= now - node.seconds)
    if isinstance(node, _Bool):
        if node.op == "not":
            return not _test(node.parts[0], row, now)
        results = (_test(part, row, now) for part in node.parts)
        return all(results) if node.op == "and" else any(results)
    a, b = _operand(node.left, row), _operand(node.right, row)
    if node.op == "=":
        return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)
    if node.op in ("!=", "<>"):
        return not (a == b and isinstance(a, bool) == isinstance(b, bool))
    if a is None or b is None or isinstance(a, str) != isinstance(b, str):
        return False
    try:
        if node.op == "<":
            return bool(a < b)
        if node.op == "<=":
            return bool(a <= b)
        if node.op == ">":
            return bool(a > b)
        return bool(a >= b)
    except TypeError:
        return False


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _error(f"unexpected {text[pos]!r} at position {pos + 1}")
        if match.lastgroup != "space":
            out.append(_Tok(match.lastgroup or "", match.group(), pos))
        pos = match.end()
    out.append(_Tok("end", "", len(text)))
    return out


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def _where(self) -> str:
        return "at the end" if self.tok.kind == "end" else f"at position {self.tok.pos + 1}"

    def word(self, *words: str) -> str | None:
        if self.tok.kind == "name" and self.tok.text.lower() in words:
            self.i += 1
            return self.tokens[self.i - 1].text.lower()
        return None

    def expect_word(self, word: str) -> None:
        if self.word(word) is None:
            raise _error(f"expected {word.upper()} {self._where()}")

    def punct(self, text: str) -> bool:
        if self.tok.kind == "punct" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.punct(text):
            raise _error(f"expected {text!r} {self._where()}")

    def field(self) -> str:
        if self.tok.kind != "name" or self.tok.text.lower() in _RESERVED:
            raise _error(f"expected a field {self._where()}")
        self.i += 1
        return self.tokens[self.i - 1].text

    def duration(self) -> float:
        self.expect("(")
        if self.tok.kind != "name":
            raise _error(f"expected a duration such as P1D {self._where()}")
        seconds = parse_duration(self.tok.text)
        self.i += 1
        self.expect(")")
        return seconds

    def parse(self) -> Query:
        self.expect_word("select")
        top = MAX_TOP
        if self.word("top"):
            if self.tok.kind != "number" or not self.tok.text.isdigit():
                raise _error(f"TOP takes a whole number {self._where()}")
            top = int(self.tok.text)
            if not 1 <= top <= MAX_TOP:
                raise _error(f"TOP must be 1 to {MAX_TOP}")
            self.i += 1
        items = [self.item()]
        while self.punct(","):
            items.append(self.item())
        self.expect_word("from")
        if self.tok.kind not in ("dtmi", "name"):
            raise _error(f"FROM takes a device template id {self._where()}")
        template = self.tok.text
        self.i += 1
        where = None
        if self.word("where"):
            where = self.condition()
        window_s: float | None = None
        by_device = False
        if self.word("group"):
            self.expect_word("by")
            while True:
                if self.word("window"):
                    window_s = self.duration()
                elif self.tok.kind == "name" and self.tok.text == "$id":
                    self.i += 1
                    by_device = True
                else:
                    raise _error(f"GROUP BY takes WINDOW(duration) or $id {self._where()}")
                if not self.punct(","):
                    break
        order = None
        if self.word("order"):
            self.expect_word("by")
            key = self.field()
            order = (key, self.word("asc", "desc") == "desc")
        if self.tok.kind != "end":
            raise _error(f"unexpected {self.tok.text!r} {self._where()}")
        names = {i.name for i in items}
        if order is not None and order[0] not in names | {"$ts", "$id"}:
            raise _error(f"ORDER BY {order[0]} names no selected column")
        query = Query(top, tuple(items), template, where, window_s, by_device, order)
        if query.aggregated:
            for item in items:
                if item.aggregate is None and item.field not in ("$ts", "$id"):
                    raise _error(f"{item.field} must be aggregated (AVG, SUM, MIN, MAX, COUNT)")
        return query

    def item(self) -> Item:
        aggregate = None
        if self.tok.kind == "name" and self.tok.text.lower() in _AGGREGATES:
            aggregate = self.tok.text.lower()
            self.i += 1
            self.expect("(")
            field = self.field()
            self.expect(")")
            name = f"{aggregate}_{field}"
        else:
            field = self.field()
            name = field
        if self.word("as"):
            name = self.field()
        return Item(field, aggregate, name)

    def _descend(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(f"WHERE nests deeper than {MAX_DEPTH} levels")

    def condition(self) -> Any:
        parts = [self.term()]
        while self.word("or"):
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else _Bool("or", tuple(parts))

    def term(self) -> Any:
        parts = [self.factor()]
        while self.word("and"):
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else _Bool("and", tuple(parts))

    def factor(self) -> Any:
        if self.word("not"):
            self._descend()
            inner = self.factor()
            self.depth -= 1
            return _Bool("not", (inner,))
        if self.punct("("):
            self._descend()
            inner = self.condition()
            self.depth -= 1
            self.expect(")")
            return inner
        if self.word("within_window"):
            return _Within(self.duration())
        left = self.operand()
        if self.tok.kind != "op":
            raise _error(f"expected a comparison {self._where()}")
        op = self.tok.text
        self.i += 1
        return _Cmp(op, left, self.operand())

    def operand(self) -> Any:
        tok = self.tok
        self.i += 1
        if tok.kind == "string":
            return ("value", tok.text[1:-1].replace("''", "'"))
        if tok.kind == "number":
            value = float(tok.text)
            if not math.isfinite(value):
                raise _error(f"number {tok.text} is out of range")
            return ("value", int(tok.text) if re.fullmatch(r"-?\d+", tok.text) else value)
        if tok.kind == "name" and tok.text.lower() in ("true", "false"):
            return ("value", tok.text.lower() == "true")
        if tok.kind == "name" and tok.text.lower() not in _RESERVED:
            return ("field", tok.text)
        self.i -= 1
        raise _error(f"expected a value or field {self._where()}")


_RESERVED = frozenset(
    {"select", "top", "from", "where", "group", "by", "order", "asc", "desc", "and", "or",
     "not", "as", "within_window", "window", "true", "false"}
)  # fmt: skip


def parse_query(text: Any) -> Query:
    """Parse a query (see the module docstring).

    Raises:
        Invalid: naming `query`, saying where it went wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise Invalid("query must be a non-empty string", field="query")
    if len(text) > MAX_QUERY_CHARS:
        raise _error(f"longer than {MAX_QUERY_CHARS} characters")
    return _Parser(_tokenize(text)).parse()
