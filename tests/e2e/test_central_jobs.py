"""IoT Central jobs beyond the basics (tests/e2e/test_central_real_device.py has those): `batch`
(devices worked on so many at a time) and `cancellationThreshold` (failures that end the job
`cancelled`), as the real API's 2022-10-31-preview takes them.

The devices stay offline: a property step completes for a device of the step's `target`
template and fails for any other, so which devices fail is known beforehand.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.azure import wait_for
from tests.e2e.test_central_api import (
    TIME_RE,
    assert_error,
    central,
    template_body,
    template_id,
)

pytestmark = pytest.mark.e2e

__all__ = ["central", "template_id"]  # fixtures, shared with test_central_api.py


def _fleet(
    central: httpx.Client, template_id: str, unique: Callable[[str], str], fails: set[int]
) -> tuple[str, list[str]]:
    """Six devices (those in `fails` of another template) and a group of them."""
    prefix = unique("fleet")
    other = f"dtmi:thinghub:jobs:{unique('other').replace('-', '_')};1"
    assert central.put(f"/deviceTemplates/{other}", json=template_body(other)).status_code == 200
    ids = [f"{prefix}-{i}" for i in range(6)]
    for i, device_id in enumerate(ids):
        template = other if i in fails else template_id
        made = central.put(f"/devices/{device_id}", json={"template": template})
        assert made.status_code == 200, made.text
    group_id = unique("group")
    group = central.put(
        f"/deviceGroups/{group_id}",
        json={"displayName": "fleet", "filter": f"startswith(id, '{prefix}')"},
    )
    assert group.status_code == 200, group.text
    return group_id, ids


def _job(template: str, group: str, **extra: Any) -> dict[str, Any]:
    return {
        "displayName": "Set the target",
        "group": group,
        "data": [
            {"type": "property", "path": "targetTemperature", "value": 20, "target": template}
        ],
        **extra,
    }


def _ended(central: httpx.Client, job_id: str) -> dict[str, Any]:
    final = ("completed", "failed", "cancelled")

    def ended() -> dict[str, Any] | None:
        job: dict[str, Any] = central.get(f"/jobs/{job_id}").json()
        return job if job["status"] in final else None

    return wait_for(ended, what=f"job {job_id} to end", timeout=60)


def _statuses(central: httpx.Client, job_id: str) -> list[str]:
    return [d["status"] for d in central.get(f"/jobs/{job_id}/devices").json()["value"]]


def test_a_cancellation_threshold_cancels_the_job(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    group, ids = _fleet(central, template_id, unique, fails={1, 2})
    job_id = unique("job")
    threshold = {"type": "number", "value": 2, "batch": False}
    made = central.put(
        f"/jobs/{job_id}", json=_job(template_id, group, cancellationThreshold=threshold)
    )
    assert made.status_code == 200, made.text
    assert made.json()["cancellationThreshold"] == threshold
    job = _ended(central, job_id)
    # One at a time, by id: 0 completes, 1 and 2 fail, the second failure cancels the job.
    assert job["status"] == "cancelled"
    assert job["progress"] == {"total": 6, "pending": 3, "completed": 1, "failed": 2}
    assert _statuses(central, job_id) == ["completed", "failed", "failed"] + ["pending"] * 3
    # A cancelled job has ended: nothing to stop or resume; its failed devices can be rerun.
    assert_error(central.post(f"/jobs/{job_id}/stop"), 409, "cancelled")
    assert_error(central.post(f"/jobs/{job_id}/resume"), 409, "cancelled")
    rerun = central.put(f"/jobs/{job_id}/rerun/{job_id}-again")
    assert rerun.status_code == 200, rerun.text
    assert rerun.json()["progress"]["total"] == 2
    assert rerun.json()["cancellationThreshold"] == threshold
    again = _ended(central, f"{job_id}-again")
    # Both fail again, and the threshold is reached with nothing pending: it ends failed.
    assert again["status"] == "failed"

    # Under the threshold the job runs to its end.
    lenient = unique("job")
    made = central.put(
        f"/jobs/{lenient}",
        json=_job(template_id, group, cancellationThreshold={"type": "percentage", "value": 50}),
    )
    assert made.status_code == 200, made.text
    assert _ended(central, lenient)["status"] == "failed"
    assert _statuses(central, lenient).count("pending") == 0


def test_batches_and_a_threshold_per_batch(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    group, ids = _fleet(central, template_id, unique, fails={1, 2, 3})
    job_id = unique("job")
    body = _job(
        template_id,
        group,
        batch={"type": "number", "value": 2},
        cancellationThreshold={"type": "percentage", "value": 100, "batch": True},
    )
    made = central.put(f"/jobs/{job_id}", json=body)
    assert made.status_code == 200, made.text
    assert made.json()["batch"] == {"type": "number", "value": 2}
    job = _ended(central, job_id)
    # Batch [0, 1]: one failure of two, 50%; batch [2, 3]: 100%, the job is cancelled and
    # the last batch never starts.
    assert job["status"] == "cancelled"
    assert (
        _statuses(central, job_id) == ["completed", "failed", "failed", "failed"] + ["pending"] * 2
    )

    # Half the devices at a time, no threshold: every device is worked on.
    halves = unique("job")
    made = central.put(
        f"/jobs/{halves}", json=_job(template_id, group, batch={"type": "percentage", "value": 50})
    )
    assert made.status_code == 200, made.text
    done = _ended(central, halves)
    assert done["status"] == "failed"
    assert done["progress"] == {"total": 6, "pending": 0, "completed": 3, "failed": 3}
    assert done["batch"] == {"type": "percentage", "value": 50}
    for device_id, status in zip(ids, _statuses(central, halves), strict=True):
        expected = "failed" if device_id.endswith(("-1", "-2", "-3")) else "completed"
        assert status == expected
        if expected == "completed":
            shown = central.get(f"/devices/{device_id}/properties").json()
            assert shown["targetTemperature"] == 20


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"batch": 5}, "batch"),
        ({"batch": {"type": "lots", "value": 2}}, "batch.type"),
        ({"batch": {"type": "number", "value": 0}}, "batch.value"),
        ({"batch": {"type": "number", "value": 1.5}}, "batch.value"),
        ({"batch": {"type": "percentage", "value": 150}}, "batch.value"),
        ({"batch": {"type": "number"}}, "value"),
        ({"batch": {"type": "number", "value": 2, "size": 3}}, "size"),
        ({"batch": {"type": "number", "value": "2"}}, "value"),
        ({"cancellationThreshold": {"type": "number", "value": 0}}, "cancellationThreshold.value"),
        ({"cancellationThreshold": {"type": "count", "value": 1}}, "cancellationThreshold.type"),
        ({"cancellationThreshold": {"type": "number", "value": 1, "batch": "yes"}}, "batch"),
        ({"cancellationThreshold": {"type": "number", "value": 1, "x": 1}}, "x"),
    ],
)
def test_bad_batches_and_thresholds_are_400_naming_them(
    central: httpx.Client,
    template_id: str,
    unique: Callable[[str], str],
    extra: dict[str, Any],
    field: str,
) -> None:
    group_id = unique("group")
    assert (
        central.put(
            f"/deviceGroups/{group_id}", json={"displayName": "g", "filter": "id eq 'none'"}
        ).status_code
        == 200
    )
    job_id = unique("bad")
    assert_error(
        central.put(f"/jobs/{job_id}", json=_job(template_id, group_id, **extra)), 400, field
    )
    assert_error(central.get(f"/jobs/{job_id}"), 404)


def test_published_job_examples(central: httpx.Client, unique: Callable[[str], str]) -> None:
    """The real API's job examples (2022-10-31-preview), their bodies as published: Jobs_Create
    (a component's property named `componentName.propertyName`, a `target` template), Jobs_
    GetDevices, Jobs_Rerun, and the answers compared with the published ones (ids, and the
    `progress` this server adds, aside)."""
    tid = f"urn:{unique('t')}:modelDefinition:02uwtefvdy"
    template = {
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "Example",
        "capabilityModel": {
            "@id": f"{tid}:cm",
            "@type": "Interface",
            "contents": [
                {
                    "@type": "Component",
                    "name": "componentName",
                    "schema": {
                        "@id": f"{tid}:component",
                        "@type": "Interface",
                        "contents": [
                            {
                                "@type": "Property",
                                "name": "propertyName",
                                "schema": "string",
                                "writable": True,
                            }
                        ],
                    },
                }
            ],
        },
    }
    made = central.put(f"/deviceTemplates/{tid}", json=template)
    assert made.status_code == 200, made.text
    prefix = unique("ex")
    good, other = f"{prefix}-a", f"{prefix}-b"
    assert central.put(f"/devices/{good}", json={"template": tid}).status_code == 200
    assert central.put(f"/devices/{other}", json={}).status_code == 200  # no template: fails
    group = str(uuid.uuid4())
    assert (
        central.put(
            f"/deviceGroups/{group}",
            json={"displayName": "example", "filter": f"startswith(id, '{prefix}')"},
        ).status_code
        == 200
    )
    job_id = unique("myJobId")
    body = {
        "displayName": "My Job",
        "group": group,
        "data": [
            {
                "type": "property",
                "target": tid,
                "path": "componentName.propertyName",
                "value": "updated value",
            }
        ],
    }
    created = central.put(f"/jobs/{job_id}", json=body)
    assert created.status_code == 200, created.text
    published = {"id": job_id, **body, "status": "running"}
    assert {k: created.json()[k] for k in published} == published
    assert _ended(central, job_id)["status"] == "failed"
    # Jobs_GetDevices: {value: [{id, status}]} (an error beside a failed device's).
    devices = central.get(f"/jobs/{job_id}/devices").json()["value"]
    assert devices[0] == {"id": good, "status": "completed"}
    assert (devices[1]["id"], devices[1]["status"]) == (other, "failed")
    properties = central.get(f"/devices/{good}/properties").json()
    assert properties["componentName"]["propertyName"] == "updated value"
    # Jobs_Rerun: the published answer, over the failed device.
    rerun_id = unique("myJobRerunId")
    rerun = central.put(f"/jobs/{job_id}/rerun/{rerun_id}")
    assert rerun.status_code == 200, rerun.text
    published = {"id": rerun_id, **body, "status": "running"}
    assert {k: rerun.json()[k] for k in published} == published
    assert rerun.json()["progress"]["total"] == 1


def test_published_scheduled_job_examples(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    """ScheduledJobs_Get and _List as published: a daily command job (its start in the past:
    it runs from its next occurrence), answered in the published shape."""
    group = str(uuid.uuid4())
    made = central.put(f"/deviceGroups/{group}", json={"displayName": "g", "filter": "id eq 'x'"})
    assert made.status_code == 200, made.text
    scheduled_id = unique("newScheduledJobId")
    body = {
        "displayName": "New Scheduled Job",
        "description": "",
        "group": group,
        "data": [{"type": "command", "target": template_id, "path": "Reboot", "value": None}],
        "schedule": {"start": "2022-05-24T22:29:01Z", "recurrence": "daily"},
    }
    created = central.put(f"/scheduledJobs/{scheduled_id}", json=body)
    assert created.status_code == 200, created.text
    shown = created.json()
    assert {k: v for k, v in shown.items() if k != "etag"} == {
        "id": scheduled_id,
        **body,
        "enabled": True,
        "completed": False,
    }
    assert isinstance(shown["etag"], str) and shown["etag"]
    listed = central.get("/scheduledJobs").json()["value"]
    assert [s for s in listed if s["id"] == scheduled_id] == [shown]
    # ScheduledJobs_ListJobs: nothing ran yet (the next occurrence is ahead).
    assert central.get(f"/scheduledJobs/{scheduled_id}/jobs").json() == {"value": []}


def test_a_job_without_a_display_name_and_its_start_and_end(
    central: httpx.Client, template_id: str, unique: Callable[[str], str]
) -> None:
    """The real Job requires only `group` and `data` (displayName is optional) and shows its
    read-only `start` and, once ended, `end` times; a scheduled job's displayName is optional
    too."""
    group, _ = _fleet(central, template_id, unique, fails=set())
    job_id = unique("job")
    body = _job(template_id, group)
    body.pop("displayName")
    made = central.put(f"/jobs/{job_id}", json=body)
    assert made.status_code == 200, made.text
    assert made.json()["displayName"] == job_id  # named by its id
    assert TIME_RE.fullmatch(made.json()["start"])
    job = _ended(central, job_id)
    assert job["status"] == "completed"
    assert TIME_RE.fullmatch(job["end"])
    assert job["start"] == made.json()["start"] <= job["end"]
    listed = {j["id"]: j for j in central.get("/jobs").json()["value"]}
    assert listed[job_id]["end"] == job["end"]

    scheduled_id = unique("sched")
    scheduled = central.put(
        f"/scheduledJobs/{scheduled_id}",
        json={**body, "schedule": {"start": "2999-01-01T00:00:00Z"}},
    )
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["displayName"] == scheduled_id
