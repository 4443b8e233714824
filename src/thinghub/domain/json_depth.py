"""JSON nesting depth: a named limit, checked on the text before any parser or serializer.

Parsers and serializers recurse once per level of nesting: Python's json raises
RecursionError near 1,000 levels, orjson refuses to write more than 254 and older orjson
releases crashed the process on deep input. So every JSON document thinghub takes from
outside (HTTP bodies of every face, device telemetry, twin patches, DPS requests, method
answers) and every stored body it renders is first measured here, on its text, without
recursion.

Depth counts open containers: `1` and `"a"` are 0 levels deep, `[]` and `{}` 1, `{"a": [1]}`
2. Brackets inside strings do not count.

Theory of operation (exceeds_depth): everything is done by bytes methods in C; Python
loops only over passes, never over bytes.
1. A document holding at most `limit` brackets in all cannot nest deeper: done. This is the
   common case (a telemetry object has one or two brackets), about 0.2 µs for 100 bytes.
2. Escaped backslashes and quotes are dropped, then everything but quotes and brackets.
   Strings are then dropped (adjacent `""` first, which merges or empties strings without
   changing what is outside them; the rest by splitting at quotes), so brackets inside
   strings do not count, and `{}` become `[]`.
3. `limit + 1` opens in a row mean that many nested levels before anything could close
   them (the classic attack, `[[[[...`): too deep, at once.
4. Each pass removes every adjacent `[]`: pass p removes exactly the pairs that hold p
   levels, so a pass beyond `limit` that removes anything proves the document too deep.
   Passes go on while each removes at least half of what is left (a wide, shallow
   document is gone after a few), then the rest is counted prefix by prefix (opens minus
   closes, about 15 ns a bracket); its deepest prefix plus the passes made is the depth (for
   text that is not JSON, a bound on how deep a parser could get before it fails).
"""

from __future__ import annotations

from itertools import accumulate

from thinghub.domain.errors import Invalid

__all__ = [
    "DEFAULT_MAX_JSON_DEPTH",
    "JSON_DEPTH_CEILING",
    "check_depth",
    "exceeds_depth",
]

# Deep enough for any real document (IoT Hub allows twins 10 levels, DTDL schemas 8), far
# from what parsers and serializers can take.
DEFAULT_MAX_JSON_DEPTH = 64
# The most `max_json_depth` may be set to, and what storage checks rendered bodies against:
# a stored body is wrapped in a few more levels when it is answered (a page, an item, an
# event body), and orjson writes no more than 254 in all.
JSON_DEPTH_CEILING = 128

_STRUCTURE = b'"[]{}'
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
_SQUARE = bytes.maketrans(b"{}", b"[]")
_STEPS = bytes.maketrans(b"[]", b"\x01\xff")  # +1 and -1 as signed bytes


def _brackets(data: bytes) -> bytes:
    """The document's brackets outside strings, as `[` and `]` only."""
    if b"\\" in data:
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = data.translate(None, _NOT_STRUCTURE)
    if b'"' in skeleton:
        skeleton = skeleton.replace(b'""', b"")
        if b'"' in skeleton:  # some string holds brackets: keep what is between strings
            skeleton = b"".join(skeleton.split(b'"')[::2])
    return skeleton.translate(_SQUARE)


def exceeds_depth(document: bytes | bytearray | memoryview | str, limit: int) -> bool:
    """True when the JSON text nests deeper than `limit` levels (see the module docstring).

    Works on any bytes, JSON or not: text that is not JSON is judged by its brackets, so a
    caller can decide before parsing whether to parse at all.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    if isinstance(document, str):  # stored text: count before paying for the encoding
        if document.count("[") + document.count("{") <= limit:
            return False
        data = document.encode("utf-8", "surrogatepass")
    else:
        data = document if isinstance(document, bytes) else bytes(document)
        if data.count(b"[") + data.count(b"{") <= limit:
            return False
    brackets = _brackets(data)
    if brackets.count(b"[") <= limit:
        return False
    if b"[" * (limit + 1) in brackets:
        return True
    passes = 0
    while b"[" in brackets:
        reduced = brackets.replace(b"[]", b"")
        removed = len(brackets) - len(reduced)
        if not removed:
            break  # unbalanced: `]...][...[` is left
        passes += 1
        if passes > limit:
            return True
        brackets = reduced
        if 2 * removed < len(brackets) + removed:
            break  # less than half went: count the rest
    return passes + _deepest_prefix(brackets) > limit


def _deepest_prefix(brackets: bytes) -> int:
    """The most opens minus closes of any prefix (0 for none)."""
    steps = memoryview(brackets.translate(_STEPS)).cast("b")
    return max(accumulate(steps, initial=0))


def check_depth(
    document: bytes | bytearray | memoryview | str, limit: int, field: str = "body"
) -> None:
    """Raise Invalid (naming `field` and the limit) when the text nests deeper than `limit`.

    Raises:
        Invalid: the document is too deep.
    """
    if exceeds_depth(document, limit):
        raise Invalid(
            f"{field} nests deeper than {limit} levels of arrays and objects (max_json_depth)",
            field=field,
        )
