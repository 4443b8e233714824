"""Reading REST request bodies: bounded JSON, tolerating a trailing comma as the seed writes.

The Sensor Data Service examples in the seed end arrays with `},]` (the `/data/upload` curl,
fetch and requests samples, and the advanced `/integrations/integrate` curl). Strict JSON
parsers refuse that, yet issue 9 wants the seed's curl to work as printed. So a body that
does not parse is read a second time with exactly that case removed: a comma that follows a
value and precedes `]` or `}` (whitespace allowed around it). Nothing else is tolerated:
`[,]`, `[1,,2]`, `{"a":1,,}`, comments or single quotes still fail.

Size and depth are bounded before any parser sees the body (framing.decode_message).
"""

from __future__ import annotations

import re
from typing import Any, Final

from thinghub.faces.itwin.framing import (
    MAX_DEPTH,
    PARSE_ERROR,
    FrameError,
    decode_message,
)

__all__ = ["MAX_BODY_BYTES", "BodyError", "read_json_body"]

# A REST body: one /data/upload of a few tens of thousands of observations.
MAX_BODY_BYTES: Final = 16 * 1024 * 1024

_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|,[ \t\r\n]*(?=[\]}])', re.DOTALL)
_VALUE_END = frozenset(b'"0123456789el}]')  # string, number, true/false, null, object, array
_WHITESPACE = b" \t\r\n"


class BodyError(Exception):
    """The body is not one JSON object or array within the limits.

    Attributes:
        message: what was wrong (no body bytes echoed).
        is_too_large: over MAX_BODY_BYTES or the depth limit (413/400), rather than malformed.
    """

    def __init__(self, message: str, *, is_too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.is_too_large = is_too_large


def read_json_body(raw: bytes, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse a request body, allowing trailing commas before `]` and `}`.

    Raises:
        BodyError: empty, malformed (after the trailing-comma retry) or over a limit.
    """
    if not raw.strip():
        raise BodyError("the request body is empty")
    try:
        return decode_message(raw, max_bytes, max_depth)
    except FrameError as exc:
        if exc.code != PARSE_ERROR:
            raise BodyError(exc.message, is_too_large=True) from None
        fixed = _without_trailing_commas(raw)
        if fixed is None:
            raise BodyError(f"the request body is not JSON: {exc.message}") from None
    try:
        return decode_message(fixed, max_bytes, max_depth)
    except FrameError as exc:
        raise BodyError(f"the request body is not JSON: {exc.message}") from None


def _without_trailing_commas(raw: bytes) -> bytes | None:
    """`raw` minus each comma that follows a value and precedes a closing bracket; None
    when there is none."""
    dropped = False

    def keep_or_drop(match: re.Match[bytes]) -> bytes:
        nonlocal dropped
        token = match.group()
        if token[0] != ord(","):
            return token  # a string literal, kept whole (commas inside it are content)
        at = match.start() - 1
        while at >= 0 and raw[at] in _WHITESPACE:
            at -= 1
        if at < 0 or raw[at] not in _VALUE_END:
            return token  # `[,]`, `,,`, `:,`: not a trailing comma after a value
        dropped = True
        return token[1:]

    fixed = _TOKEN.sub(keep_or_drop, raw)
    return fixed if dropped else None
