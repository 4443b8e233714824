"""Tests for thinghub.domain.commands: the queued command lifecycle."""

from __future__ import annotations

import pytest

from thinghub.domain.commands import Command, CommandMode, CommandStatus
from thinghub.domain.errors import Conflict

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
