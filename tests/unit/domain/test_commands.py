"""Tests for thinghub.domain.commands: the queued command lifecycle, method names."""

from __future__ import annotations

import re

import pytest

from thinghub.domain.commands import (
    METHOD_NAME_PATTERN,
    Command,
    CommandMode,
    CommandStatus,
    parse_method_name,
)
from thinghub.domain.errors import Conflict, Invalid

NOW = 1_755_090_000.0
FINAL = [s for s in CommandStatus if s is not CommandStatus.PENDING]


def pending() -> Command:
    return Command(
        id="cmd-1",
        account_id="acct",
        device_id="dev-1",
        name="getMaxMinReport",
        payload={"since": "2025-08-13T13:00:00Z"},
        mode=CommandMode.QUEUED,
        status=CommandStatus.PENDING,
        created_at=NOW,
        expires_at=NOW + 3600,
        response_timeout_s=30.0,
    )


def test_status_names_are_the_wire_names() -> None:
    assert [s.value for s in CommandStatus] == [
        "Pending",
        "Completed",
        "Failed",
        "TimedOut",
        "Expired",
    ]
    assert [m.value for m in CommandMode] == ["awaited", "queued"]


def test_only_pending_is_not_final() -> None:
    assert not CommandStatus.PENDING.is_final
    assert all(s.is_final for s in FINAL)


def test_finish_completed_keeps_the_answer() -> None:
    command = pending()
    done = command.finish(CommandStatus.COMPLETED, NOW + 2, 200, {"maxTemp": 49})
    assert done.status is CommandStatus.COMPLETED
    assert (done.completed_at, done.response_code, done.result) == (NOW + 2, 200, {"maxTemp": 49})
    assert (done.id, done.name, done.payload) == (command.id, command.name, command.payload)
    assert command.status is CommandStatus.PENDING  # frozen: finish returns a new command
    assert command.completed_at is None


@pytest.mark.parametrize("status", FINAL)
def test_pending_moves_to_every_final_status(status: CommandStatus) -> None:
    done = pending().finish(status, NOW + 1)
    assert done.status is status
    assert done.completed_at == NOW + 1
    assert done.response_code is None
    assert done.result is None


@pytest.mark.parametrize("first", FINAL)
@pytest.mark.parametrize("second", FINAL)
def test_finishing_twice_is_a_conflict(first: CommandStatus, second: CommandStatus) -> None:
    done = pending().finish(first, NOW + 1)
    with pytest.raises(Conflict) as info:
        done.finish(second, NOW + 2)
    assert info.value.field == "status"
    assert "cmd-1" in info.value.message
    assert first.value in info.value.message


def test_finish_needs_a_final_status() -> None:
    with pytest.raises(ValueError, match="final status"):
        pending().finish(CommandStatus.PENDING, NOW)


# -- method names: one rule for every face ------------------------------------------------


@pytest.mark.parametrize(
    "name", ["reboot", "getMaxMinReport", "thermostat1*getMaxMinReport", "a.b-c_d!~", "x" * 128]
)
def test_method_names_iot_hub_allows_pass(name: str) -> None:
    assert parse_method_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "x" * 129, "a?$rid=evil", "a/b", "a b", "a\tb", "a+b", "a#", "a:b", "ä", "a\x00", None, 7],
)
def test_other_method_names_are_invalid_naming_the_field(name: object) -> None:
    with pytest.raises(Invalid) as caught:
        parse_method_name(name, "commandName")
    assert caught.value.field == "commandName"


def test_the_documented_pattern_is_the_same_rule() -> None:
    pattern = re.compile(METHOD_NAME_PATTERN)
    for code in range(0x110):
        ch = chr(code)
        try:
            parse_method_name(ch)
            valid = True
        except Invalid:
            valid = False
        assert bool(pattern.fullmatch(ch)) is valid, repr(ch)
    assert pattern.fullmatch("x" * 128) and not pattern.fullmatch("x" * 129)
