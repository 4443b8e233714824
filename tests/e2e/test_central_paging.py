"""Paging of a device group's devices and of a command history (the real API's `value`,
`nextLink` and `$maxpagesize`), past the 100 commands one page of a history holds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.e2e.server import ServerProcess
from tests.e2e.test_central_api import API, assert_error, central, make_device

pytestmark = pytest.mark.e2e

__all__ = ["central"]  # a fixture, shared with test_central_api.py


def _pages(
    central: httpx.Client, server: ServerProcess, path: str, **params: Any
) -> list[list[dict[str, Any]]]:
    """Every page of a list, following nextLink (which must point back at `path`)."""
    response = central.get(path, params=params)
    pages = []
    with httpx.Client(base_url=server.http_url, headers=central.headers, timeout=30) as bare:
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            assert set(body) <= {"value", "nextLink"}, body
            pages.append(body["value"])
            if "nextLink" not in body:
                return pages
            assert urlsplit(body["nextLink"]).path == API + path
            response = bare.get(body["nextLink"])


def test_a_device_groups_devices_are_paged(
    central: httpx.Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    prefix = unique("paged")
    ids = [f"{prefix}-{i}" for i in range(5)]
    for device_id in reversed(ids):
        make_device(central, device_id)
    group_id = unique("group")
    made = central.put(
        f"/deviceGroups/{group_id}",
        json={"displayName": "paged", "filter": f"startswith(id, '{prefix}')"},
    )
    assert made.status_code == 200, made.text
    path = f"/deviceGroups/{group_id}/devices"
    pages = _pages(central, server, path, **{"$maxpagesize": 2})
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [d["id"] for p in pages for d in p] == ids
    first = central.get(path, params={"$maxpagesize": 2}).json()
    assert parse_qs(urlsplit(first["nextLink"]).query)["$maxpagesize"] == ["2"]
    # Without a page size, the server's page (page_max) holds them all.
    assert [len(p) for p in _pages(central, server, path)] == [5]
    assert_error(central.get(path, params={"$maxpagesize": 0}), 400, "$maxpagesize")


def test_a_command_history_pages_past_one_hundred(
    central: httpx.Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    device_id = unique("history")
    make_device(central, device_id)
    sent = []
    for i in range(105):  # the specification's form: queued, answered at once
        response = central.post(f"/devices/{device_id}/commands/reboot", json={"n": i})
        assert response.status_code == 200, response.text
        sent.append(response.json()["commandId"])
    path = f"/devices/{device_id}/commands/reboot"
    # One page holds at most 100; nextLink leads to the rest, newest first, none twice.
    default = _pages(central, server, path)
    assert [len(p) for p in default] == [100, 5]
    shown = [c["id"] for p in default for c in p]
    assert shown == list(reversed(sent))
    small = _pages(central, server, path, **{"$maxpagesize": 40})
    assert [len(p) for p in small] == [40, 40, 25]
    assert [c["id"] for p in small for c in p] == shown
    assert [c["request"] for c in small[-1]][-1] == {"n": 0}
    for bad in ({"$maxpagesize": 101}, {"$maxpagesize": "x"}, {"$skiptoken": "nonsense"}):
        field = next(iter(bad))
        assert_error(central.get(path, params=bad), 400, field)


def test_a_next_link_is_followed_as_given(
    central: httpx.Client, server: ServerProcess, unique: Callable[[str], str]
) -> None:
    """The real API's nextLink is an absolute URL, which its clients request as it is: with
    the API's base URL (a path included) as an httpx base_url, or with no base at all. A
    request that reached the server directly gets an absolute link to the address it used;
    one whose Host names anything else (a proxy, a port mapping, a made-up name) still gets
    a relative link (tests/e2e/test_abuse_http.py)."""
    prefix = unique("follow")
    ids = [f"{prefix}-{i}" for i in range(3)]
    for device_id in ids:
        make_device(central, device_id)
    params = {"$filter": f"startswith(id, '{prefix}')", "$top": 1, "api-version": "2022-07-31"}
    headers = dict(central.headers)
    for origin in (server.http_url, server.http_url.replace("127.0.0.1", "localhost")):
        with httpx.Client(base_url=origin + API, headers=headers, timeout=30) as client:
            response = client.get("/devices", params=params)
            seen: list[str] = []
            while True:
                assert response.status_code == 200, response.text
                page = response.json()
                seen += [d["id"] for d in page["value"]]
                if "nextLink" not in page:
                    break
                assert page["nextLink"].startswith(f"{origin}{API}/devices?"), page
                response = client.get(page["nextLink"])
            assert seen == ids
    # No client base at all: the link alone leads to the next page.
    first = central.get("/devices", params=params).json()
    second = httpx.get(first["nextLink"], headers=headers, timeout=30)
    assert second.status_code == 200, second.text
    assert [d["id"] for d in second.json()["value"]] == ids[1:2]
    # A group's devices and a command history link the same way.
    group_id = unique("group")
    made = central.put(
        f"/deviceGroups/{group_id}",
        json={"displayName": "follow", "filter": f"startswith(id, '{prefix}')"},
    )
    assert made.status_code == 200, made.text
    grouped = central.get(f"/deviceGroups/{group_id}/devices", params={"$maxpagesize": 1})
    assert grouped.json()["nextLink"].startswith(f"{server.http_url}{API}/deviceGroups/")
