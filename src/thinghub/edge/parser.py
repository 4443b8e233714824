"""Line parsing: bytes from an instrument -> lines (delimiters) -> metric values (regex or JSON).

Sans-IO: `LineSplitter.feed(bytes)` returns the complete lines; `LineParser.parse(line)`
returns `{metric: number}` or None when the line holds no value. A port without REGEX or
JSON_PATHS has no parser: its bytes are bridged, not forwarded.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = [
    "MAX_LINE_BYTES",
    "JsonPathParser",
    "LineParser",
    "LineSplitter",
    "RegexParser",
    "make_parser",
]

#: Bytes buffered while no delimiter arrives. Past it the buffer is dropped (counted): an
#: instrument that never sends its delimiter must not grow the edge's memory.
MAX_LINE_BYTES = 64 * 1024

#: Nesting accepted in a JSON line before it is parsed (json.loads recurses).
MAX_JSON_DEPTH = 32


class LineSplitter:
    """Splits a byte stream on any of several delimiters (the earliest, then the longest)."""

    def __init__(self, delimiters: tuple[bytes, ...], max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if not delimiters or not all(delimiters):
            raise ValueError("at least one non-empty delimiter")
        self._delimiters = tuple(sorted(delimiters, key=len, reverse=True))
        self._buffer = bytearray()
        self._max = max_line_bytes
        self.overflows = 0  # buffers dropped for want of a delimiter

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the lines they complete, without their delimiters."""
        self._buffer += data
        lines: list[bytes] = []
        while True:
            best: tuple[int, int] | None = None
            for delimiter in self._delimiters:
                at = self._buffer.find(delimiter)
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, len(delimiter))
            if best is None:
                break
            at, size = best
            lines.append(bytes(self._buffer[:at]))
            del self._buffer[: at + size]
        if len(self._buffer) > self._max:
            self._buffer.clear()
            self.overflows += 1
        return lines


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        if not math.isfinite(number):
            return None
        is_whole = number.is_integer() and not any(c in value for c in ".eE")
        return int(number) if is_whole else number
    return None


class LineParser:
    """Turns one line into metric values."""

    def parse(self, line: bytes) -> dict[str, float | int] | None:
        raise NotImplementedError


class RegexParser(LineParser):
    """`re.search` with named groups; each group that holds a number is a metric."""

    def __init__(self, pattern: str) -> None:
        self._regex = re.compile(pattern)

    def parse(self, line: bytes) -> dict[str, float | int] | None:
        text = line.decode("utf-8", "replace").strip()
        match = self._regex.search(text)
        if match is None:
            return None
        values = {}
        for name, raw in match.groupdict().items():
            number = _number(raw) if raw is not None else None
            if number is not None:
                values[name] = number
        return values or None


_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\['([^']*)'\]")


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for match in _STEP.finditer(path, 1):
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (name if name is not None else quoted))
    return steps


def _depth_exceeds(text: str, limit: int) -> bool:
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


class JsonPathParser(LineParser):
    """A JSON object per line; each metric is read at its path (`$.a.b[0]`, `$['x y']`)."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = {metric: _steps(path) for metric, path in paths.items()}

    def parse(self, line: bytes) -> dict[str, float | int] | None:
        text = line.decode("utf-8", "replace").strip()
        if not text or _depth_exceeds(text, MAX_JSON_DEPTH):
            return None
        try:
            document = json.loads(text)
        except ValueError:
            return None
        values = {}
        for metric, steps in self._paths.items():
            node: Any = document
            for step in steps:
                is_index = isinstance(step, int) and isinstance(node, list) and step < len(node)
                is_key = isinstance(step, str) and isinstance(node, dict) and step in node
                if not (is_index or is_key):
                    node = None
                    break
                node = node[step]
            number = _number(node)
            if number is not None:
                values[metric] = number
        return values or None


def make_parser(regex: str | None, json_paths: dict[str, str] | None) -> LineParser | None:
    """The parser a port's settings name, or None (bridge only)."""
    if regex is not None:
        return RegexParser(regex)
    if json_paths is not None:
        return JsonPathParser(json_paths)
    return None
