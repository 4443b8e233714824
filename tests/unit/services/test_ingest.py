"""Tests for thinghub.services.ingest: a message's size as IoT Hub counts it."""

from __future__ import annotations

from thinghub.services.ingest import message_size


def test_the_size_is_the_body_plus_property_names_and_values_plus_system_values() -> None:
    assert message_size(b"12345", None) == 5
    assert message_size(b"12345", {"ab": "cde"}) == 10
    assert message_size(b"", {"k": "é"}) == 3  # UTF-8 bytes, not characters
    assert message_size(b"x", {}, ("id-1", None, "application/json")) == 1 + 4 + 16


def test_many_small_properties_add_up() -> None:
    props = {f"p{i}": "v" for i in range(100_000)}
    assert message_size(b"{}", props) > 262_144
