"""Topic name/filter validation and wildcard matching (MQTT 3.1.1 §4.7)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thinghub.mqtt import (
    TopicError,
    is_valid_topic_filter,
    is_valid_topic_name,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)

VALID_NAMES = [
    "a",
    "/",
    "sport/tennis/player1",
    "/finance",
    "finance/",
    "a//b",
    "$SYS/broker/load",
    "devices/thermo-1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
    "$iothub/twin/PATCH/properties/reported/?$rid=4&$version=2",
    "ünïcødé/主题",
]

INVALID_NAMES = [
    ("", "empty"),
    ("sport/+", "wildcard"),
    ("sport/#", "wildcard"),
    ("a+b", "wildcard"),
    ("a\x00b", "U+0000"),
]

VALID_FILTERS = [
    "#",
    "+",
    "+/+",
    "/+",
    "sport/#",
    "sport/+/player1",
    "sport/tennis/+",
    "+/tennis/#",
    "$SYS/#",
    "devices/d1/messages/devicebound/#",
    "$iothub/methods/POST/#",
    "a//b",
]

INVALID_FILTERS = [
    ("", "empty"),
    ("sport/tennis#", "'#'"),
    ("sport/#/ranking", "'#'"),
    ("#/a", "'#'"),
    ("##", "'#'"),
    ("sport+", "'+'"),
    ("sport/+tennis", "'+'"),
    ("++", "'+'"),
    ("a/\x00", "U+0000"),
]


@pytest.mark.parametrize("name", VALID_NAMES)
def test_valid_topic_names(name: str) -> None:
    validate_topic_name(name)
    assert is_valid_topic_name(name)


@pytest.mark.parametrize(("name", "reason"), INVALID_NAMES)
def test_invalid_topic_names(name: str, reason: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_topic_name(name)
    assert reason in info.value.reason
    assert "§" in info.value.reason
    assert info.value.topic == name
    assert not is_valid_topic_name(name)


@pytest.mark.parametrize("topic_filter", VALID_FILTERS + VALID_NAMES)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)
    assert is_valid_topic_filter(topic_filter)


@pytest.mark.parametrize(("topic_filter", "reason"), INVALID_FILTERS)
def test_invalid_topic_filters(topic_filter: str, reason: str) -> None:
    with pytest.raises(TopicError) as info:
        validate_topic_filter(topic_filter)
    assert reason in info.value.reason
    assert not is_valid_topic_filter(topic_filter)


def test_topic_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        validate_topic_name("a/#")


MATCHES = [
    # §4.7.1.2
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    # §4.7.1.3
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/golf", False),
    # §4.7.2: wildcards at the first level skip $-topics.
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    # Exact matches and near misses.
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("a/b", "A/b", False),
    ("a/b/c", "a/b", False),
    ("a/+/c", "a/b/c/d", False),
    # The Azure topics a device subscribes to.
    ("devices/d1/messages/devicebound/#", "devices/d1/messages/devicebound/%24.mid=1", True),
    ("devices/d1/messages/devicebound/#", "devices/d2/messages/devicebound/", False),
    ("$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", True),
    ("$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=7", True),
    ("$iothub/methods/POST/#", "$iothub/twin/res/200/?$rid=1", False),
]


@pytest.mark.parametrize(("topic_filter", "name", "expected"), MATCHES)
def test_topic_matches(topic_filter: str, name: str, expected: bool) -> None:
    assert topic_matches(topic_filter, name) is expected


_level = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/+#\x00"),
    max_size=5,
)
_names = st.lists(_level, min_size=1, max_size=5).map("/".join).filter(bool)


@settings(max_examples=200)
@given(_names)
def test_every_name_matches_itself_and_hash(name: str) -> None:
    assert is_valid_topic_name(name)
    assert topic_matches(name, name)
    assert topic_matches("#", name) is not name.startswith("$")


@settings(max_examples=200)
@given(_names, st.data())
def test_plus_in_place_of_any_level_matches(name: str, data: st.DataObject) -> None:
    levels = name.split("/")
    index = data.draw(st.integers(0, len(levels) - 1))
    levels[index] = "+"
    topic_filter = "/".join(levels)
    assert is_valid_topic_filter(topic_filter)
    expected = not (index == 0 and name.startswith("$"))
    assert topic_matches(topic_filter, name) is expected
    assert topic_matches(topic_filter + "/#", name) is expected
