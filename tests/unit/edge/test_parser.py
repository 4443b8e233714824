"""Tests for thinghub.edge.parser: delimiters, regex and JSON-path parsers."""

from __future__ import annotations

from thinghub.edge.parser import JsonPathParser, LineSplitter, RegexParser, make_parser


def test_splitter_handles_split_delimiters_and_several_kinds() -> None:
    splitter = LineSplitter((b"\r\n", b"\n"))
    assert splitter.feed(b"a=1\r") == []
    assert splitter.feed(b"\nb=2\nc") == [b"a=1", b"b=2"]
    assert splitter.feed(b"=3\r\n") == [b"c=3"]


def test_splitter_drops_a_line_that_never_ends_and_counts_it() -> None:
    splitter = LineSplitter((b"\n",), max_line_bytes=8)
    assert splitter.feed(b"0123456789") == []
    assert splitter.overflows == 1
    assert splitter.feed(b"ok\n") == [b"ok"]


def test_regex_parser_takes_named_numeric_groups() -> None:
    parser = RegexParser(r"T=(?P<temperature>-?[0-9.]+)(?: H=(?P<humidity>\w+))?")
    assert parser.parse(b"T=21.5 H=40\r") == {"temperature": 21.5, "humidity": 40}
    assert parser.parse(b"T=-3") == {"temperature": -3}
    assert parser.parse(b"T=1 H=high") == {"temperature": 1}
    assert parser.parse(b"garbage") is None
    assert parser.parse(b"\xff\xfe") is None


def test_json_path_parser_reads_nested_values_and_skips_the_rest() -> None:
    parser = JsonPathParser({"t": "$.env.t", "first": "$.list[0]", "odd": "$['a b']"})
    line = b'{"env": {"t": "22.5"}, "list": [7, 8], "a b": 1e3}'
    assert parser.parse(line) == {"t": 22.5, "first": 7, "odd": 1000.0}
    assert parser.parse(b'{"env": {"t": true}}') is None
    assert parser.parse(b"not json") is None
    assert parser.parse(b"[" * 100 + b"]" * 100) is None  # too deep: never parsed
    assert parser.parse(b'{"env": {"t": NaN}}') is None


def test_no_parser_without_regex_or_paths() -> None:
    assert make_parser(None, None) is None
