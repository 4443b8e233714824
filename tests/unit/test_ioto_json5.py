"""The JSON5 reader of the Ioto face: what the agent's JSON library writes (JSON_HUMAN), the
rest of JSON5, and what it refuses."""

from __future__ import annotations

import pytest

from thinghub.faces.ioto.json5 import Json5Error, loads


def test_reads_the_agents_json_human_output() -> None:
    text = "{\n    name: 'alarm',\n    context: {t: 21.5, 'a-b': 'it\\'s\nhot', ok: true}\n}\n"
    assert loads(text) == {"name": "alarm", "context": {"t": 21.5, "a-b": "it's\nhot", "ok": True}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("{a: 1, /* c */ b: [2,], // x\n}", {"a": 1, "b": [2]}),
        ("[+1, -2, .5, 5., 0x1F, 1e3]", [1, -2, 0.5, 5.0, 31, 1000.0]),
        ("'\\u00e9\\ud83d\\ude00\\x41\\/'", "é😀A/"),
        ("'a\\\nb'", "ab"),
        ("[null, false]", [None, False]),
        ("123456789012345678901234567890", 1.2345678901234568e29),
        (b"{k: 'v'}", {"k": "v"}),
    ],
)
def test_reads_json5(text: str | bytes, value: object) -> None:
    assert loads(text) == value


@pytest.mark.parametrize(
    "text",
    ["", "{", "{a:}", "{a 1}", "NaN", "Infinity", "-Infinity", "1e400", "'\\ud800'", "{a:1} x",
     "'open", "[1 2]", "undefined", "9" * 5000, b"'\xff'"],
)  # fmt: skip
def test_refuses_what_is_not_json5(text: str | bytes) -> None:
    with pytest.raises(Json5Error):
        loads(text)


def test_refuses_nesting_past_the_limit() -> None:
    assert loads("[" * 10 + "]" * 10, max_depth=10) == [[[[[[[[[[]]]]]]]]]]
    with pytest.raises(Json5Error, match="deeper"):
        loads("[" * 11 + "]" * 11, max_depth=10)
