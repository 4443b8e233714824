"""Tests for thinghub.domain.live: typed bus events, their subjects, and token escaping."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from thinghub.bus.subjects import subject_matches
from thinghub.domain.events import Event, EventType
from thinghub.domain.live import (
    ConnectionChanged,
    DeviceChanged,
    EventRecorded,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
    live_pattern,
    subject_of,
    subject_token,
    token_value,
)

ACC = "6f1c0a52-acc"


@pytest.mark.parametrize(
    ("value", "token"),
    [
        ("dev-1", "dev-1"),
        ("a.b", "a%2Eb"),
        ("gw/mod", "gw%2Fmod"),
        ("50%", "50%25"),
        ("%2E", "%252E"),  # an escape-looking value stays itself
        ("a*", "a%2A"),
        ("a>b", "a%3Eb"),
        ("a b", "a%20b"),
        ("a\tb\nc\rd", "a%09b%0Ac%0Dd"),
        ("nb\u00a0sp", "nb%C2%A0sp"),  # Unicode whitespace, as its UTF-8 bytes
        ("del\x7f", "del%7F"),
        ("", "_"),
        (None, "_"),
        ("_", "%5F"),  # `_` alone means "none"; a value `_` is told apart
        ("a_b", "a_b"),
        ("thermo:1", "thermo:1"),
        ("Ünïcode", "Ünïcode"),
    ],
)
def test_tokens_escape_what_subjects_cannot_hold(value: str | None, token: str) -> None:
    assert subject_token(value) == token
    assert token_value(token) == (value or None)


@given(st.text())
def test_every_value_is_one_token_that_reads_back(value: str) -> None:
    token = subject_token(value)
    assert token
    assert "." not in token and "*" not in token and ">" not in token
    assert not any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in token)
    assert token_value(token) == (value or None)


def events(account: str, project: str | None, device: str) -> list[LiveEvent]:
    return [
        TelemetryReceived(account, project, device, 1.0, {"t": 1}, {}, None, "mqtt", "m1"),
        TwinChanged(account, project, device, "reported", {"t": 1}, 2),
        ConnectionChanged(account, project, device, True, 1.0),
        EventRecorded(
            account,
            project,
            device,
            Event(account, device, EventType.LIFECYCLE, 1.0, {}, project),
        ),
        DeviceChanged(account, project, device, "created"),
    ]


def test_subjects_carry_kind_account_project_and_device() -> None:
    kinds = [e.subject.split(".")[0] for e in events(ACC, "farm", "d.1")]
    assert kinds == ["telemetry", "twin", "connection", "event", "device"]
    for event in events(ACC, "farm", "gw/m.1"):
        assert event.subject == f"{event.kind}.{ACC}.farm.gw%2Fm%2E1"
    for event in events(ACC, None, "d1"):
        assert event.subject == f"{event.kind}.{ACC}._.d1"


def test_a_pattern_for_one_project_or_device_matches_only_its_events() -> None:
    mine = events(ACC, "farm", "d1")
    others = [
        *events(ACC, "barn", "d1"),  # another project of the account (same device id)
        *events(ACC, None, "d1"),  # no project
        *events(ACC, "farm", "d2"),  # another device of the project
        *events(ACC, "farm", "d1/m"),  # a module of the device
        *events("other-acc", "farm", "d1"),  # another account
        *events(ACC, "farm.x", "d1"),  # a project whose escaped name starts like "farm"
    ]
    by_device = live_pattern(account_id=ACC, device_id="d1", project="farm")
    project = live_pattern("telemetry", ACC, "farm")
    device = live_pattern("telemetry", ACC, device_id="d1")
    for event in mine:
        assert subject_matches(by_device, event.subject)
    for event in others:
        assert not subject_matches(by_device, event.subject), event.subject
    # the project pattern: telemetry of every device in that project of that account
    matched = [e for e in [*mine, *others] if subject_matches(project, e.subject)]
    assert {(e.account_id, e.project, e.device_id, e.kind) for e in matched} == {
        (ACC, "farm", "d1", "telemetry"),
        (ACC, "farm", "d2", "telemetry"),
        (ACC, "farm", "d1/m", "telemetry"),
    }
    # the device pattern: telemetry of the device in any project of the account
    matched = [e for e in [*mine, *others] if subject_matches(device, e.subject)]
    assert {(e.account_id, e.project, e.device_id, e.kind) for e in matched} == {
        (ACC, "farm", "d1", "telemetry"),
        (ACC, "barn", "d1", "telemetry"),
        (ACC, None, "d1", "telemetry"),
        (ACC, "farm.x", "d1", "telemetry"),
    }


def test_a_pattern_for_devices_without_a_project() -> None:
    pattern = live_pattern("device", ACC, None)
    assert pattern == f"device.{ACC}._.*"
    assert subject_matches(pattern, DeviceChanged(ACC, None, "d1", "deleted").subject)
    assert not subject_matches(pattern, DeviceChanged(ACC, "_", "d1", "deleted").subject)


def test_subject_of_escapes_every_part() -> None:
    assert subject_of("twin", "a.b", "p q", "*") == "twin.a%2Eb.p%20q.%2A"


def test_events_are_frozen_values() -> None:
    event = ConnectionChanged(ACC, None, "d1", True, 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.connected = False  # type: ignore[misc]
    assert event == ConnectionChanged(ACC, None, "d1", True, 1.0)
