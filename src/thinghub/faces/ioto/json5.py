"""The JSON5 the Ioto agent's own JSON library writes, read into Python values.

The agent's ``ioAutomation()`` posts its ``{name, context}`` body as ``jsonString(data, 0)``,
and flags 0 mean ``JSON_HUMAN``: JSON5 with single-quoted strings, keys left unquoted when
they are letters, digits and ``_``, several lines, and control characters inside strings
written as they are (no ``\\n`` escapes). An app's own ``ioAPI()`` calls may send the same.
This reads that dialect, and the rest of JSON5 a hand-written body may use: double-quoted
strings, comments, trailing commas, ``+``/leading-dot/trailing-dot numbers, hexadecimal
integers. ``Infinity`` and ``NaN`` are refused (no face stores them).

Strict JSON is parsed by orjson first (faster, and the common case); this is the fallback.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["Json5Error", "loads"]


class Json5Error(ValueError):
    """The text is not JSON5 (the message says where)."""


_NUMBER_RE = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_IDENTIFIER_RE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*|[0-9A-Za-z_]+")
_ESCAPES = {
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "0": "\0",
    "/": "/",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "\n": "",  # a line continuation
}
_LITERALS = {"true": True, "false": False, "null": None}


def loads(text: str | bytes, *, max_depth: int = 64) -> Any:
    """The value of a JSON5 document.

    Raises:
        Json5Error: not JSON5, nested deeper than `max_depth`, or trailing text.
    """
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise Json5Error("the body is not UTF-8") from None
    reader = _Reader(text, max_depth)
    value = reader.value(0)
    reader.skip()
    if reader.at < len(text):
        raise reader.error("text after the value")
    return value


class _Reader:
    def __init__(self, text: str, max_depth: int) -> None:
        self.text = text
        self.at = 0
        self.max_depth = max_depth

    def error(self, what: str) -> Json5Error:
        return Json5Error(f"{what} at character {self.at}")

    def skip(self) -> None:
        """Skip white space and comments."""
        text = self.text
        while self.at < len(text):
            char = text[self.at]
            if char.isspace() or char == "\ufeff":
                self.at += 1
            elif text.startswith("//", self.at):
                end = text.find("\n", self.at)
                self.at = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.at):
                end = text.find("*/", self.at + 2)
                if end < 0:
                    raise self.error("an unclosed comment")
                self.at = end + 2
            else:
                return

    def value(self, depth: int) -> Any:
        self.skip()
        if self.at >= len(self.text):
            raise self.error("a value is missing")
        char = self.text[self.at]
        if char in "{[":
            if depth >= self.max_depth:
                raise self.error(f"nesting deeper than {self.max_depth} levels")
            return self.object(depth + 1) if char == "{" else self.array(depth + 1)
        if char in "'\"":
            return self.string()
        match = _NUMBER_RE.match(self.text, self.at)
        if match:
            self.at = match.end()
            return _number(match[0], self)
        word = _IDENTIFIER_RE.match(self.text, self.at)
        if word and word[0] in _LITERALS:
            self.at = word.end()
            return _LITERALS[word[0]]
        raise self.error("an unexpected character")

    def object(self, depth: int) -> dict[str, Any]:
        self.at += 1  # {
        out: dict[str, Any] = {}
        while True:
            self.skip()
            if self.text.startswith("}", self.at):
                self.at += 1
                return out
            key = self.key()
            self.skip()
            if not self.text.startswith(":", self.at):
                raise self.error("':' is missing")
            self.at += 1
            out[key] = self.value(depth)
            if not self.separator("}"):
                return out

    def array(self, depth: int) -> list[Any]:
        self.at += 1  # [
        out: list[Any] = []
        while True:
            self.skip()
            if self.text.startswith("]", self.at):
                self.at += 1
                return out
            out.append(self.value(depth))
            if not self.separator("]"):
                return out

    def separator(self, close: str) -> bool:
        """After a member: True at a ',' (more may follow), False at the closing bracket."""
        self.skip()
        if self.text.startswith(",", self.at):
            self.at += 1
            return True
        if self.text.startswith(close, self.at):
            self.at += 1
            return False
        raise self.error(f"',' or '{close}' is missing")

    def key(self) -> str:
        if self.text[self.at : self.at + 1] in ("'", '"'):
            return self.string()
        match = _IDENTIFIER_RE.match(self.text, self.at)
        if not match:
            raise self.error("a property name is missing")
        self.at = match.end()
        return match[0]

    def string(self) -> str:
        text = self.text
        quote = text[self.at]
        self.at += 1
        parts: list[str] = []
        start = self.at
        while True:
            if self.at >= len(text):
                raise self.error("an unclosed string")
            char = text[self.at]
            if char == quote:
                parts.append(text[start : self.at])
                self.at += 1
                return _joined(parts, self)
            if char != "\\":
                self.at += 1
                continue
            parts.append(text[start : self.at])
            escaped = text[self.at + 1 : self.at + 2]
            if escaped == "u" or escaped == "x":
                width = 4 if escaped == "u" else 2
                digits = text[self.at + 2 : self.at + 2 + width]
                if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                    raise self.error("a bad escape")
                parts.append(chr(int(digits, 16)))
                self.at += 2 + width
            elif escaped == "\r":
                self.at += 3 if text.startswith("\r\n", self.at + 1) else 2
            elif escaped in _ESCAPES:
                parts.append(_ESCAPES[escaped])
                self.at += 2
            elif escaped == "":
                raise self.error("an unclosed string")
            else:
                parts.append(escaped)  # JSON5: any other character escapes to itself
                self.at += 2
            start = self.at


def _joined(parts: list[str], reader: _Reader) -> str:
    """The string's parts; a surrogate pair written as two escapes is one character."""
    joined = "".join(parts)
    if not any("\ud800" <= c <= "\udfff" for c in joined):
        return joined
    try:
        return joined.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        raise reader.error("a lone surrogate escape") from None


def _number(text: str, reader: _Reader) -> int | float:
    """As orjson reads numbers: integers beyond 64 bits become floats, infinities are refused."""
    body = text.lstrip("+-")
    sign = -1 if text.startswith("-") else 1
    if body[:2] in ("0x", "0X"):
        value: int | float = sign * int(body[2:], 16)
    elif any(c in body for c in ".eE"):
        value = float(text)
    else:
        try:
            value = int(text)
        except ValueError:  # past Python's limit on decimal digits
            value = float(text)
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        value = float(value)
    if not math.isfinite(value):
        raise reader.error("a number out of range")
    return value
