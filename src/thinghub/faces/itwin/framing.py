"""JSON framing of the iTwin socket API: concatenated JSON values on TCP, one per WS message.

Theory of operation (sans-IO, h11 style: bytes in, values out):

On the TCP port (4200) requests arrive as JSON objects written back to back with no
delimiter, as the real clients write them. FrameDecoder.receive_data() appends bytes;
next_frame() returns the next complete value, or NEED_DATA. It finds where a value ends with
a cheap scan that never recurses: between values it skips whitespace and expects `{` or
`[`; inside a value one possessive regex match skips everything up to the next bracket,
complete strings (with their escapes) included, and the loop counts bracket depth; a string
not yet complete is scanned incrementally as its bytes arrive. Python steps once per
bracket, not per byte or string. Only when a value is complete, no larger than
MAX_FRAME_BYTES, no deeper than MAX_DEPTH and with at most MAX_CONTAINERS objects and arrays,
does the (recursive, C) JSON parser see it. So a huge, deeply nested or bracket-stuffed frame
is refused before any parser walks it, and the scan state survives across reads: bytes are
scanned about once, and UTF-8 characters split across reads are harmless (every byte the
scan decides on is ASCII).

Anything that does not parse is a FrameError: the TCP adapter answers it with its JSON-RPC
error (code -32700, or -32600 for a limit) and then closes the connection. There is no
resync: after a FrameError the decoder refuses everything (issue 9: "unparseable bytes get
-32700 and then the connection closes").

WebSocket messages (4201) are whole values already; decode_message() applies the same
limits and parser to one message. encode_frame() writes compact JSON with nothing between
objects, and escapes `{` and `}` inside strings as \\u007b / \\u007d so that the seed's
brace-counting `decodeOneJsonFrame` reader, which does not know about strings, still finds
the end of every frame. A WebSocket message ends where its frame says, so encode_message()
writes the same JSON value without that escaping (and without the scan for braces that a
40 KB data chunk would otherwise pay on every send).
"""

from __future__ import annotations

import re
from typing import Any, Final

import orjson

from thinghub.domain.json_depth import exceeds_depth

__all__ = [
    "INVALID_REQUEST",
    "MAX_CONTAINERS",
    "MAX_DEPTH",
    "MAX_FRAME_BYTES",
    "NEED_DATA",
    "PARSE_ERROR",
    "FrameDecoder",
    "FrameError",
    "NeedData",
    "decode_message",
    "encode_frame",
    "encode_message",
]

# One request, e.g. an uploadData of a few thousand observations (~150 bytes each); larger
# uploads go in several requests. The decoder holds at most this much of one frame.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
# Requests nest about 5 deep (params.data[].values); 64 leaves room and stays far below the
# recursion limits of json (Python's stack) and orjson (1024).
MAX_DEPTH: Final = 64
# Objects and arrays in one value: the scan steps once per bracket in Python, so this bounds
# its work (16 MiB of `[]` would be 8 million steps). An uploadData of 100,000 observations
# has 200,000.
MAX_CONTAINERS: Final = 500_000

# JSON-RPC 2.0 §5.1 codes a framing failure is answered with (jsonrpc.py has them all).
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600

_WHITESPACE = re.compile(rb"[ \t\r\n]*")
# Inside a value: non-bracket bytes and whole strings, possessively (never backtracks).
_UP_TO_BRACKET = re.compile(rb'(?:[^"{}\[\]]++|"[^"\\]*+(?:\\.[^"\\]*+)*+")*+', re.DOTALL)
_STRING_STOP = re.compile(rb'["\\]')  # inside a string
_OPEN = frozenset(b"{[")
_CLOSE = frozenset(b"}]")
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


class NeedData:
    """The type of NEED_DATA: next_frame() needs more bytes (a normal return, not an error)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class FrameError(Exception):
    """The stream is not a sequence of JSON values within the limits; close after answering.

    Attributes:
        code: the JSON-RPC error code to answer with (PARSE_ERROR or INVALID_REQUEST).
        message: what was wrong, without echoing the bytes.
    """

    def __init__(self, message: str, code: int = PARSE_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class FrameDecoder:
    """Split a byte stream of concatenated JSON objects/arrays into parsed values.

    Args:
        max_frame_bytes: the largest value accepted, in bytes.
        max_depth: the deepest bracket nesting accepted.
        max_containers: the most objects and arrays in one value.
    """

    def __init__(
        self,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        max_depth: int = MAX_DEPTH,
        max_containers: int = MAX_CONTAINERS,
    ) -> None:
        if max_frame_bytes < 2 or max_depth < 1 or max_containers < 1:
            raise ValueError("max_frame_bytes must be >= 2, the other limits >= 1")
        self.max_frame_bytes = max_frame_bytes
        self.max_depth = max_depth
        self.max_containers = max_containers
        self._containers = 0  # opened in the current value
        self._buffer = bytearray()
        self._pos = 0  # next byte to scan (buffer[0] is the current value's first byte)
        self._depth = 0  # 0: between values
        self._in_string = False
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for the value being received."""
        return len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the connection (b"" at EOF is ignored)."""
        if self._error is None:
            self._buffer += data

    def next_frame(self) -> Any | NeedData:
        """The next complete value (a dict or list), or NEED_DATA.

        Raises:
            FrameError: the bytes are not JSON, or a value is over a limit. Every later
                call raises it again (no resync).
        """
        if self._error is not None:
            raise self._error
        try:
            end = self._scan()
            if end is None:
                return NEED_DATA
            frame = bytes(self._buffer[:end])
            del self._buffer[:end]
            self._pos = 0
            return _parse(frame)
        except FrameError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def _scan(self) -> int | None:
        """Advance the scan; the end offset of a complete value, or None for more bytes."""
        buf = self._buffer
        while True:
            if self._depth == 0:
                skip = _WHITESPACE.match(buf, self._pos)
                start = skip.end() if skip else self._pos
                if start:
                    del buf[:start]  # whitespace between values is dropped, never held
                    self._pos = 0
                if not buf:
                    return None
                if buf[0] not in _OPEN:
                    raise FrameError("expected a JSON object or array")
                self._depth, self._pos, self._containers = 1, 1, 1
                continue
            if self._in_string:
                found = _STRING_STOP.search(buf, self._pos)
                if found is None:
                    self._pos = len(buf)
                    self._check_held()
                    return None
                at = found.start()
                if buf[at] == _BACKSLASH:
                    if at + 1 >= len(buf):  # the escaped character has not arrived yet
                        self._pos = at
                        self._check_held()
                        return None
                    self._pos = at + 2
                    continue
                self._in_string = False
                self._pos = at + 1
                continue
            # Everything up to the next bracket, complete strings included, in one C call;
            # it stops at a bracket, at a string that has not ended yet, or at the end.
            skipped = _UP_TO_BRACKET.match(buf, self._pos)  # it matches, if only b""
            at = skipped.end() if skipped else self._pos
            if at >= len(buf):
                self._pos = at
                self._check_held()
                return None
            if at >= self.max_frame_bytes:
                raise self._too_large()
            byte = buf[at]
            self._pos = at + 1
            if byte == _QUOTE:
                self._in_string = True  # unfinished: scanned incrementally as bytes arrive
            elif byte in _OPEN:
                self._depth += 1
                self._containers += 1
                if self._depth > self.max_depth:
                    raise FrameError(
                        f"JSON nested deeper than {self.max_depth} levels", INVALID_REQUEST
                    )
                if self._containers > self.max_containers:
                    raise FrameError(
                        f"JSON value with more than {self.max_containers} objects and arrays",
                        INVALID_REQUEST,
                    )
            elif byte in _CLOSE:
                self._depth -= 1
                if self._depth == 0:
                    if self._pos > self.max_frame_bytes:
                        raise self._too_large()
                    return self._pos

    def _check_held(self) -> None:
        # An incomplete value may not grow past the limit while it waits for its end.
        if len(self._buffer) > self.max_frame_bytes:
            raise self._too_large()

    def _too_large(self) -> FrameError:
        return FrameError(f"JSON value larger than {self.max_frame_bytes} bytes", INVALID_REQUEST)


def _parse(frame: bytes) -> Any:
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"invalid JSON: {exc.msg}") from exc


def decode_message(
    data: bytes | str,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    max_depth: int = MAX_DEPTH,
    max_containers: int = MAX_CONTAINERS,
) -> Any:
    """Parse one WebSocket message: exactly one JSON object or array, bounded before parsing.

    Raises:
        FrameError: not exactly one JSON value, or over a limit.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_frame_bytes + 2 * 1024:  # some whitespace around the value is fine
        raise FrameError(f"JSON value larger than {max_frame_bytes} bytes", INVALID_REQUEST)
    if raw.count(b"{") + raw.count(b"[") <= max_containers:
        # A whole message is at hand: bound its depth with the C-speed check every JSON
        # body gets (domain/json_depth) and let orjson parse it, instead of stepping through
        # its brackets in Python (a tenth of the time for a 12 MB upload). Brackets inside
        # strings count here too, so this bound is never below the real count.
        text = raw.strip(b" \t\r\n")
        if len(text) > max_frame_bytes:
            raise FrameError(f"JSON value larger than {max_frame_bytes} bytes", INVALID_REQUEST)
        if exceeds_depth(text, max_depth):
            raise FrameError(f"JSON nested deeper than {max_depth} levels", INVALID_REQUEST)
        if text[:1] not in (b"{", b"["):
            raise FrameError("expected a JSON object or array")
        return _parse(text)
    decoder = FrameDecoder(max_frame_bytes, max_depth, max_containers)
    decoder.receive_data(raw)
    value = decoder.next_frame()
    if isinstance(value, NeedData):
        raise FrameError("incomplete JSON value")
    if decoder.next_frame() is not NEED_DATA or decoder.buffered:
        raise FrameError("more than one JSON value in one message")
    return value


_STRING_LITERAL = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")', re.DOTALL)


def encode_frame(message: Any) -> bytes:
    """Compact JSON of one message, with nothing before or after it.

    Braces inside strings are escaped (\\u007b, \\u007d: the same JSON text to any parser)
    so a reader that counts braces, like the seed's decodeOneJsonFrame, ends the frame at the
    right byte. Numbers that JSON cannot express (NaN, inf) are written as null.

    Raises:
        TypeError: `message` holds something JSON cannot express (programmer error).
    """
    out = orjson.dumps(message)
    if not _has_brace_in_string(out):
        return out
    parts = _STRING_LITERAL.split(out)
    parts[1::2] = [s.replace(b"{", b"\\u007b").replace(b"}", b"\\u007d") for s in parts[1::2]]
    return b"".join(parts)


def encode_message(message: Any) -> bytes:
    """Compact JSON of one message for a transport that delimits messages (WebSocket).

    The same JSON value as encode_frame() gives (NaN and inf as null), with braces inside
    strings left as they are: only a reader that counts braces in a byte stream (TCP) needs
    them escaped.

    Raises:
        TypeError: `message` holds something JSON cannot express (programmer error).
    """
    return orjson.dumps(message)


def _has_brace_in_string(out: bytes) -> bool:
    """Whether a string literal of compact JSON `out` holds a brace, in C-speed passes only.

    Dropping the escaped-backslash pairs first, then the escaped quotes, leaves only the
    quotes that delimit strings (a left-to-right replace of backslash pairs follows the
    escape grammar: every escape starts with a backslash, and only the escaped backslash has
    a backslash second). Keeping only quotes and braces, each brace-free string is `""`;
    removing those pairs left to right removes every quote exactly when no string has a
    brace (the first string with one keeps its opening quote).
    """
    if b"\\" in out:
        out = out.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b'"' in out.translate(None, _ALL_BUT_QUOTES_AND_BRACES).replace(b'""', b"")


_ALL_BUT_QUOTES_AND_BRACES = bytes(b for b in range(256) if b not in b'"{}')
