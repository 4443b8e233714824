"""Tests for thinghub.devices.hub: decoding a device's answer to a direct method."""

from __future__ import annotations

from thinghub.devices.hub import _decode_payload


def test_method_answers_are_json_when_they_can_be() -> None:
    assert _decode_payload(b'{"ok": [1, 2]}', 64) == {"ok": [1, 2]}
    assert _decode_payload(b"", 64) is None
    assert _decode_payload(b"plain text", 64) == "plain text"
    assert _decode_payload(b"\xff\xfe", 64) is None


def test_method_answers_deeper_than_the_limit_stay_text() -> None:
    """json.loads would recurse into it (RecursionError near 1,000 levels, which dropped the
    device's connection): it reaches the caller as the text it is."""
    deep = b"[" * 5000 + b"]" * 5000
    assert _decode_payload(deep, 64) == deep.decode()
    assert _decode_payload(b"[[1]]", 2) == [[1]]
    assert _decode_payload(b"[[[1]]]", 2) == "[[[1]]]"
