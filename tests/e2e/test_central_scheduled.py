"""IoT Central scheduled jobs (the real API's 2022-10-31-preview): PUT/GET/PATCH/DELETE
/scheduledJobs/{id} with `schedule {start, recurrence, end}`, run by the server at their time
as jobs listed under /scheduledJobs/{id}/jobs, kept across a restart (an occurrence missed
while the server was down runs when it is back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.azure import wait_for
from tests.e2e.server import ServerProcess
from tests.e2e.test_central_api import (
    API,
    VERSION,
    assert_error,
    central,
    template_body,
    template_id,
)

pytestmark = pytest.mark.e2e

__all__ = ["central", "template_id"]  # fixtures, shared with test_central_api.py


def _at(seconds_from_now: float) -> str:
    stamp = datetime.fromtimestamp(time.time() + seconds_from_now, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fleet(central: httpx.Client, template_id: str, unique: Callable[[str], str]) -> str:
    """Two devices of the template and a group of them; the group's id."""
    prefix = unique("sched")
    for i in range(2):
        made = central.put(f"/devices/{prefix}-{i}", json={"template": template_id})
        assert made.status_code == 200, made.text
    group_id = unique("group")
    group = central.put(
        f"/deviceGroups/{group_id}",
        json={"displayName": "fleet", "filter": f"startswith(id, '{prefix}')"},
    )
    assert group.status_code == 200, group.text
    return group_id


def _body(group: str, schedule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "displayName": "Nightly target",
        "group": group,
        "data": [{"type": "property", "path": "targetTemperature", "value": 21}],
        "schedule": schedule,
        **extra,
    }


def _runs(central: httpx.Client, scheduled_id: str) -> list[dict[str, Any]]:
    response = central.get(f"/scheduledJobs/{scheduled_id}/jobs")
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()["value"]
    return runs


def _ended_run(central: httpx.Client, scheduled_id: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        runs = _runs(central, scheduled_id)
        done = [r for r in runs if r["status"] in ("completed", "failed", "cancelled")]
        return done[0] if done else None

    return wait_for(probe, what=f"a run of {scheduled_id}", timeout=60)


def test_a_one_time_schedule_runs_at_its_time(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    group = _fleet(central, template_id, unique)
    scheduled_id = unique("once")
    start = _at(2)
    made = central.put(f"/scheduledJobs/{scheduled_id}", json=_body(group, {"start": start}))
    assert made.status_code == 200, made.text
    shown = made.json()
    # The published answer's shape (Scheduled Jobs - Get).
    assert set(shown) == {
        "id", "displayName", "group", "data", "schedule", "enabled", "completed", "etag"
    }  # fmt: skip
    assert shown["schedule"] == {"start": start}
    assert (shown["enabled"], shown["completed"]) == (True, False)
    assert made.headers["etag"] == f'"{shown["etag"]}"'

    run = _ended_run(central, scheduled_id)
    assert run["status"] == "completed", run
    assert run["scheduledJobId"] == scheduled_id
    assert run["displayName"] == "Nightly target - 1"
    assert run["group"] == group
    assert run["progress"] == {"total": 2, "pending": 0, "completed": 2, "failed": 0}
    # The job is an ordinary one too.
    assert central.get(f"/jobs/{run['id']}").json()["scheduledJobId"] == scheduled_id
    done = wait_for(
        lambda: (j := central.get(f"/scheduledJobs/{scheduled_id}").json())["completed"] and j,
        what="the scheduled job to complete",
    )
    assert done["completed"] is True
    assert len(_runs(central, scheduled_id)) == 1
    # A change that keeps the schedule keeps its place: still completed, not run again.
    renamed = central.patch(f"/scheduledJobs/{scheduled_id}", json={"displayName": "Renamed"})
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["displayName"], renamed.json()["completed"]) == ("Renamed", True)
    # A new schedule must have an occurrence ahead.
    past = central.patch(f"/scheduledJobs/{scheduled_id}", json={"schedule": {"start": _at(-60)}})
    assert_error(past, 400, "schedule.start")


def test_a_recurring_schedule_runs_its_first_occurrence_and_waits(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    group = _fleet(central, template_id, unique)
    scheduled_id = unique("daily")
    schedule = {
        "start": _at(1),
        "recurrence": "daily",
        "end": {"type": "occurrences", "occurrences": 3},
    }
    made = central.put(
        f"/scheduledJobs/{scheduled_id}",
        json=_body(group, schedule, batch={"type": "number", "value": 2}),
    )
    assert made.status_code == 200, made.text
    assert made.json()["batch"] == {"type": "number", "value": 2}
    run = _ended_run(central, scheduled_id)
    assert run["status"] == "completed"
    assert run["batch"] == {"type": "number", "value": 2}
    # The next occurrence is a day later: the scheduled job is not completed.
    assert central.get(f"/scheduledJobs/{scheduled_id}").json()["completed"] is False
    assert len(_runs(central, scheduled_id)) == 1


def test_a_revoked_owner_runs_nothing(
    central: httpx.Client,
    server: ServerProcess,
    template_id: str,
    unique: Callable[[str], str],
) -> None:
    """A scheduled job runs as whoever saved it, as they stand when it runs: once the API
    token that saved it is revoked, its occurrences are skipped."""
    group = _fleet(central, template_id, unique)
    token_id = unique("tok")
    token = central.put(f"/apiTokens/{token_id}", json={"roles": [{"role": "App Operator"}]})
    assert token.status_code == 200, token.text
    with httpx.Client(
        base_url=server.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": token.json()["token"]},
        timeout=30,
    ) as operator:
        revoked_id, kept_id = unique("revoked"), unique("kept")
        for scheduled_id in (revoked_id, kept_id):
            made = operator.put(
                f"/scheduledJobs/{scheduled_id}", json=_body(group, {"start": _at(6)})
            )
            assert made.status_code == 200, made.text
    # The kept one is saved again by the admin: it runs as the admin.
    shown = central.get(f"/scheduledJobs/{kept_id}").json()
    assert central.put(f"/scheduledJobs/{kept_id}", json=shown).status_code == 200
    assert central.delete(f"/apiTokens/{token_id}").status_code == 204
    assert _ended_run(central, kept_id)["status"] == "completed"
    # The revoked one's occurrence passes without a job.
    wait_for(
        lambda: central.get(f"/scheduledJobs/{revoked_id}").json()["completed"],
        what="the revoked owner's occurrence to pass",
        timeout=60,
    )
    assert _runs(central, revoked_id) == []


def test_scheduled_job_crud_and_if_match(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    group = _fleet(central, template_id, unique)
    scheduled_id = unique("crud")
    far = {"start": "2090-05-24T22:29:01Z", "recurrence": "daily"}
    made = central.put(
        f"/scheduledJobs/{scheduled_id}", json=_body(group, far, description="every night")
    )
    assert made.status_code == 200, made.text
    etag = made.json()["etag"]
    assert made.json()["description"] == "every night"
    # Scheduled Jobs - Update, its body as published: a new schedule.
    weekly = {"schedule": {"start": "2090-05-24T22:29:01Z", "recurrence": "weekly"}}
    patched = central.patch(f"/scheduledJobs/{scheduled_id}", json=weekly)
    assert patched.status_code == 200, patched.text
    assert patched.json()["schedule"] == weekly["schedule"]
    assert patched.json()["data"] == made.json()["data"]
    assert patched.json()["etag"] != etag
    # If-Match with the old etag: 412, nothing changed.
    stale = central.patch(
        f"/scheduledJobs/{scheduled_id}", json={"enabled": False}, headers={"If-Match": etag}
    )
    assert_error(stale, 412)
    assert central.get(f"/scheduledJobs/{scheduled_id}").json()["enabled"] is True
    # GET's answer may come back whole.
    shown = central.get(f"/scheduledJobs/{scheduled_id}").json()
    again = central.put(f"/scheduledJobs/{scheduled_id}", json={**shown, "enabled": False})
    assert again.status_code == 200, again.text
    assert again.json()["enabled"] is False
    listed = central.get("/scheduledJobs").json()["value"]
    assert scheduled_id in [s["id"] for s in listed]
    gone = central.delete(f"/scheduledJobs/{scheduled_id}")
    assert gone.status_code == 204, gone.text
    assert_error(central.get(f"/scheduledJobs/{scheduled_id}"), 404, scheduled_id)
    assert_error(central.get(f"/scheduledJobs/{scheduled_id}/jobs"), 404)
    assert_error(central.delete(f"/scheduledJobs/{scheduled_id}"), 404)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"schedule": None}, "schedule"),
        ({"schedule": {"start": "2090-01-01T00:00:00Z", "recurrence": "hourly"}}, "recurrence"),
        ({"schedule": {"start": "2001-01-01T00:00:00Z"}}, "schedule.start"),
        ({"schedule": {"start": "soon"}}, "schedule.start"),
        (
            {"schedule": {"start": "2090-01-01T00:00:00Z", "end": {"type": "occurrences",
                                                                   "occurrences": 2}}},
            "schedule.end",
        ),
        (
            {"schedule": {"start": "2090-01-01T00:00:00Z", "recurrence": "daily",
                          "end": {"type": "date"}}},
            "schedule.end.date",
        ),
        (
            {"schedule": {"start": "2090-01-01T00:00:00Z", "recurrence": "daily",
                          "end": {"type": "occurrences", "occurrences": 0}}},
            "occurrences",
        ),
        (
            {"schedule": {"start": "2090-01-01T00:00:00Z", "recurrence": "daily",
                          "end": {"type": "date", "date": "2089-01-01T00:00:00Z"}}},
            "schedule.end.date",
        ),
        (
            {"schedule": {"start": "2090-01-01T00:00:00Z", "recurrence": "daily",
                          "end": {"type": "forever"}}},
            "schedule.end.type",
        ),
        ({"schedule": {"start": "2090-01-01T00:00:00Z", "every": "day"}}, "every"),
        ({"organizations": ["seattle"]}, "organizations"),
        ({"data": []}, "data"),
        ({"completed": True}, "completed"),
        ({"id": "other"}, "id"),
        ({"batch": {"type": "number", "value": 0}}, "batch.value"),
    ],
)  # fmt: skip
def test_bad_scheduled_jobs_are_400_naming_the_field(
    central: httpx.Client,
    template_id: str,
    unique: Callable[[str], str],
    change: dict[str, Any],
    field: str,
) -> None:
    group_id = unique("group")
    made = central.put(
        f"/deviceGroups/{group_id}", json={"displayName": "g", "filter": "id eq 'none'"}
    )
    assert made.status_code == 200, made.text
    body = {**_body(group_id, {"start": "2090-01-01T00:00:00Z"}), **change}
    if body["schedule"] is None:
        del body["schedule"]
    scheduled_id = unique("bad")
    assert_error(central.put(f"/scheduledJobs/{scheduled_id}", json=body), 400, field)
    assert_error(central.get(f"/scheduledJobs/{scheduled_id}"), 404)


def test_an_unknown_group_is_404(central: httpx.Client, unique: Callable[[str], str]) -> None:
    body = _body("no-such-group", {"start": "2090-01-01T00:00:00Z"})
    assert_error(central.put(f"/scheduledJobs/{unique('x')}", json=body), 404, "no-such-group")


@pytest.fixture
def restartable(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> Callable[[], ServerProcess]:
    """Starts the server on one data directory, again and again (the same admin token)."""
    data_dir = tmp_path / "scheduled"
    token: list[str] = []

    def start() -> ServerProcess:
        proc = start_server(data_dir=data_dir, **({"admin_token": token[0]} if token else {}))
        token[:] = [proc.admin_token]
        return proc

    return start


def _client(proc: ServerProcess) -> httpx.Client:
    return httpx.Client(
        base_url=proc.http_url + API,
        params={"api-version": VERSION},
        headers={"Authorization": f"Bearer {proc.admin_token}"},
        timeout=30,
    )


def test_an_occurrence_missed_while_down_runs_after_a_restart(
    restartable: Callable[[], ServerProcess], unique: Callable[[str], str]
) -> None:
    first = restartable()
    tid = f"dtmi:thinghub:sched:{unique('t').replace('-', '_')};1"
    with _client(first) as central:
        assert central.put(f"/deviceTemplates/{tid}", json=template_body(tid)).status_code == 200
        group = _fleet(central, tid, unique)
        scheduled_id = unique("restart")
        start = time.time() + 3
        made = central.put(
            f"/scheduledJobs/{scheduled_id}",
            json=_body(group, {"start": _at(3), "recurrence": "weekly"}),
        )
        assert made.status_code == 200, made.text
        assert _runs(central, scheduled_id) == []
    first.stop()
    # Down past its start.
    wait_for(lambda: time.time() > start + 0.5, what="the start to pass")
    second = restartable()
    with _client(second) as central:
        run = _ended_run(central, scheduled_id)
        assert run["status"] == "completed"
        shown = central.get(f"/scheduledJobs/{scheduled_id}").json()
        assert shown["completed"] is False  # weekly: the next one is ahead
        assert len(_runs(central, scheduled_id)) == 1
