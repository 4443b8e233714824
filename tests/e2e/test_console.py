"""The web console in a real browser (Playwright driving Debian's chromium) against the real
server, with a real device (`thinghub simulate`) behind it.

The journey: sign in (a wrong password first), create a device and read its connection
string off the page, start `thinghub simulate` with it, watch the device turn Connected and
its plot gain points without a reload, set a desired property and see the device get it (it
prints the patch and reports it back), call a method and see its answer, search, disable,
create and revoke a token, delete the device, sign out. A viewer sees but changes nothing.
Every page is photographed (desktop and phone width), none may scroll sideways, and no page
logs a browser error or makes a request off the server.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browser import DESKTOP, PHONE, Shots, Watched, chromium, watch
from tests.e2e.server import ServerProcess, running
from tests.e2e.ux4iot import Ux, create_key
from thinghub.faces.console.devices import PAGE_SIZE

pytestmark = [pytest.mark.e2e, pytest.mark.backend_agnostic]
# Tests marked backend_agnostic check layout, sessions and CSRF (console sessions live in
# memory); the PostgreSQL pass of `make test` leaves them out, the journey covers storage.

PASSWORD = "correct horse battery"
DEADLINE_S = 15.0


def _template(template_id: str) -> dict[str, Any]:
    return {
        "@id": template_id,
        "@type": ["ModelDefinition", "DeviceModel"],
        "displayName": "Thermostat",
        "capabilityModel": {
            "@id": f"{template_id}:cm",
            "@type": "Interface",
            "contents": [
                {"@type": "Telemetry", "name": "temperature", "schema": "double"},
                {
                    "@type": "Property",
                    "name": "targetTemperature",
                    "schema": "double",
                    "writable": True,
                },
                {"@type": "Property", "name": "firmwareVersion", "schema": "string"},
                {"@type": "Command", "name": "reboot"},
            ],
        },
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(ServerProcess(tmp_path_factory.mktemp("console"))) as proc:
        yield proc


@pytest.fixture(scope="module")
def users(server: ServerProcess) -> dict[str, str]:
    """One user per role: name -> role."""
    names = {f"{role}-{uuid.uuid4().hex[:6]}": role for role in ("admin", "operator", "viewer")}
    with server.client() as admin:
        for name, role in names.items():
            answer = admin.post("/v1/users", json={"username": name, "password": PASSWORD,
                                                   "role": role})  # fmt: skip
            assert answer.status_code == 201, answer.text
        template = admin.put(
            "/central/api/deviceTemplates/thermostat",
            params={"api-version": "2022-07-31"},
            json=_template("thermostat"),
        )
        assert template.status_code == 200, template.text
    return names


def user(users: dict[str, str], role: str) -> str:
    return next(name for name, r in users.items() if r == role)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    return Shots(tmp_path_factory.mktemp("console-screenshots"))


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Watched]]:
    contexts = []

    def open_(viewport: dict[str, int] = DESKTOP) -> Watched:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        contexts.append(context)
        return watch(context)

    yield open_
    for context in contexts:
        context.close()


def sign_in(page: Page, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(base + "/console/")
    expect(page).to_have_url(re.compile(r"/console/login"))
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("form button[type=submit]")


class Simulator:
    """`thinghub simulate` for one device, its stdout read line by line."""

    def __init__(self, server: ServerProcess, connection_string: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thinghub", "simulate", "--connection-string",
             connection_string, "--mqtt", f"127.0.0.1:{server.mqtt_port}", "--ca",
             server.ca_file, "--rate", "4", "--duration", "120", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=server.env,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect_line(self, pattern: str, timeout: float = DEADLINE_S) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            seen.append(line)
            if re.search(pattern, line):
                return line
        raise AssertionError(f"simulate printed no line like {pattern!r}: {seen}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _points(page: Page) -> int:
    return int(page.get_attribute("#plot", "data-points") or "0")


def _wait(predicate: Callable[[], bool], what: str, timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_operator_journey(
    server: ServerProcess, users: dict[str, str], open_page: Callable[..., Watched],
    shots: Shots,
) -> None:  # fmt: skip
    base = server.http_url
    watched = open_page()
    page = watched.page
    admin = user(users, "admin")

    # A wrong password is refused: the form again, with its error, and no session.
    page.goto(base + "/console/login")
    shots(page, "login")
    page.fill("#username", admin)
    page.fill("#password", "not the password")
    page.click("form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Wrong user name or password")
    shots(page, "login-failed")
    page.goto(base + "/console/devices")
    expect(page).to_have_url(re.compile(r"/console/login"))

    sign_in(page, base, admin)
    expect(page).to_have_url(re.compile(r"/console/devices$"))
    expect(page.locator("h1")).to_have_text("Devices")

    # Create a device: its keys and connection string are on this page, once.
    device_id = f"thermo-{uuid.uuid4().hex[:8]}"
    page.click("#new-device")
    shots(page, "device-new")
    page.fill("#name", "Hall thermostat")
    page.fill("#id", device_id)
    page.fill("#project", "building-a")
    page.click("form.stack button[type=submit]")
    expect(page.locator("h1")).to_contain_text(f"Device {device_id} created")
    connection_string = page.inner_text("#connection-string").strip()
    primary_key = page.inner_text("#primary-key").strip()
    assert connection_string == (
        f"HostName=localhost;DeviceId={device_id};SharedAccessKey={primary_key}"
    )
    assert page.inner_text("#id-scope").strip() == server.addresses["id_scope"]
    shots(page, "device-created", full_page=True)

    # The device's page, before the device exists on the wire: Disconnected, no points yet.
    page.click("#open-device")
    expect(page.locator("#device-state")).to_have_text("Disconnected")
    expect(page.locator("#plot")).to_have_attribute("data-points", "0")
    expect(page.locator("#plot-note")).to_have_text("No numeric telemetry in this range yet.")
    expect(page.locator("#plot canvas")).to_have_count(0)  # no empty axes
    assert primary_key not in page.content()  # shown once, at creation, never again
    expect(page.locator("#itwin-node")).to_have_text(f"/thinghub/{device_id}/node")
    expect(page.locator("#itwin-device")).to_have_text(
        f"/thinghub/{device_id}/node/device/{device_id}/device"
    )
    expect(page.locator("#ux4iot-endpoint")).to_have_text(f"{base}/ux4iot")

    # The list, open in a second tab: the device is Disconnected and has no activity yet.
    listing = watch(page.context)
    listing.page.goto(base + "/console/devices?q=" + device_id)
    listed_state = listing.page.locator(f'[data-state-of="{device_id}"]')
    listed_activity = listing.page.locator(f'[data-activity-of="{device_id}"]')
    expect(listed_state).to_have_text("Disconnected")
    expect(listed_activity).to_have_text("—")
    expect(listing.page.locator("#live-status")).to_have_text("live")
    expect(page.locator("#live-status")).to_have_text("live")
    # A device made elsewhere (here through /v1) tells the open list that it has changed.
    expect(listing.page.locator("#list-changed")).to_be_hidden()
    with server.client() as api:
        elsewhere = api.post("/v1/devices", json={"name": "made elsewhere", "project": "p",
                                                  "deployment": "d"})  # fmt: skip
        assert elsewhere.status_code in (200, 201), elsewhere.text
    expect(listing.page.locator("#list-changed")).to_be_visible()

    history_from = time.time() - 1
    simulator = Simulator(server, connection_string)
    try:
        started = time.monotonic()
        # Live, without a reload: Connected, then points on the plot.
        expect(page.locator("#device-state")).to_have_text("Connected", timeout=10_000)
        connected_s = time.monotonic() - started
        _wait(lambda: _points(page) >= 2, "the plot's first points", 10)
        expect(page.locator("#plot canvas").first).to_be_attached()  # drawn by uPlot
        expect(page.locator("#plot-note")).to_have_text("")
        first = _points(page)
        _wait(lambda: _points(page) > first, "the plot to gain points", 10)
        plotted_s = time.monotonic() - started
        print(f"connected after {connected_s:.2f}s, plot growing after {plotted_s:.2f}s")
        expect(page.locator("#events-log")).to_contain_text("connection: Connected")
        shots(page, "device", full_page=True)

        # The list tab followed without a reload: Connected, and its last activity moves on.
        expect(listed_state).to_have_text("Connected")
        expect(listed_activity).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
        seen_activity = listed_activity.inner_text()
        expect(listed_activity).not_to_have_text(seen_activity, timeout=10_000)

        # A desired property reaches the device; it reports it back and the page shows it.
        page.fill("#desired", json.dumps({"targetTemperature": 23.5}))
        page.click("#save-desired")
        expect(page.locator("#twin-result")).to_contain_text("Desired properties saved")
        line = simulator.expect_line(rf"^desired {re.escape(device_id)} ")
        assert json.loads(line.split(" ", 2)[2])["targetTemperature"] == 23.5
        expect(page.locator("#reported-json")).to_contain_text('"targetTemperature": 23.5')
        # Both twin changes reach the events log live.
        expect(page.locator("#events-log")).to_contain_text("twin: desired")
        expect(page.locator("#events-log")).to_contain_text("twin: reported")

        # A direct method and its answer.
        page.fill("#method-name", "reboot")
        page.fill("#method-payload", '{"delay": 1}')
        page.click("#call-method")
        expect(page.locator("#method-result")).to_contain_text("reboot answered 200")
        expect(page.locator("#method-result pre")).to_contain_text('"ok": true')

        # A cloud-to-device message is accepted.
        page.fill("#c2d-body", "hello device")
        page.fill("#c2d-properties", "kind=greeting")
        page.click("#send-c2d")
        expect(page.locator("#c2d-result")).to_contain_text("Message")
        shots(page, "device-actions", full_page=True)

        # The list shows it connected, with its activity; search finds it.
        page.goto(base + "/console/devices?q=" + device_id)
        row_state = page.locator(f'[data-state-of="{device_id}"]')
        expect(row_state).to_have_text("Connected")
        expect(page.locator(f'[data-activity-of="{device_id}"]')).not_to_have_text("—")
        expect(page.locator("#device-count")).to_contain_text("1 device")
        shots(page, "devices")

        # Disabling it cuts the connection; the list sees that live.
        page.goto(f"{base}/console/devices/{device_id}")
        page.click("#toggle-enabled")
        expect(page.locator("#device-enabled")).to_have_text("no")
        expect(page.locator("#device-state")).to_have_text("Disconnected", timeout=10_000)
        expect(listed_state).to_have_text("Disconnected", timeout=10_000)
        page.click("#toggle-enabled")
        expect(page.locator("#device-enabled")).to_have_text("yes")
    finally:
        simulator.stop()
    listing.assert_clean()
    listing.assert_offline(base)
    listing.page.close()

    # History: a fixed range from the store holds what streamed in; an empty one says so.
    def stored() -> int:
        with server.client() as api:
            answer = api.get("/v1/telemetries", params={"deviceID": device_id, "limit": 1000})
        assert answer.status_code == 200, answer.text
        assert "x-continuation-token" not in answer.headers
        return len(answer.json())

    utc = "%Y-%m-%dT%H:%M:%S"
    page.goto(f"{base}/console/devices/{device_id}")
    page.select_option("#range", "custom")
    page.fill("#from", time.strftime(utc, time.gmtime(history_from)))
    page.fill("#to", time.strftime(utc, time.gmtime(time.time() + 2)))
    page.click("#show-range")
    expect(page.locator("#plot-mode")).to_contain_text("A fixed range from the store")
    expect(page.locator("#from")).to_have_value(time.strftime(utc, time.gmtime(history_from)))
    range_url = page.url

    def plot_shows_the_store() -> bool:
        # Messages the server read before the simulator stopped may still be on their way to
        # the store: compare once the count holds still around a fresh plot.
        before = stored()
        page.goto(range_url)
        expect(page.locator("#plot")).to_have_attribute("data-points", re.compile(r"^\d+$"))
        return before == _points(page) == stored()

    _wait(plot_shows_the_store, "the plot to show every stored message of the range")
    assert _points(page) >= first
    shots(page, "device-history")
    page.fill("#from", "2020-01-01T00:00:00")
    page.fill("#to", "2020-01-01T01:00:00")
    page.click("#show-range")
    expect(page.locator("#plot-note")).to_have_text("No numeric telemetry in this range yet.")
    assert _points(page) == 0
    page.fill("#to", "2019-12-31T00:00:00")
    page.click("#show-range")
    expect(page.locator("#range-error")).to_contain_text("the range must end after it starts")

    # A templated device's desired patch is checked against its template.
    page.goto(base + "/console/new-device")
    templated = f"tpl-{uuid.uuid4().hex[:8]}"
    page.fill("#name", "Templated")
    page.fill("#id", templated)
    page.select_option("#template", "thermostat")
    page.click("form.stack button[type=submit]")
    page.goto(f"{base}/console/devices/{templated}")
    page.fill("#desired", json.dumps({"firmwareVersion": "2.0"}))
    page.click("#save-desired")
    expect(page.locator("#twin-result")).to_contain_text("not writable")
    page.fill("#desired", json.dumps({"targetTemperature": "warm"}))
    page.click("#save-desired")
    expect(page.locator("#twin-result")).to_contain_text("targetTemperature")
    page.fill("#desired", json.dumps({"targetTemperature": 21}))
    page.click("#save-desired")
    expect(page.locator("#twin-result")).to_contain_text("Desired properties saved")

    # Templates: the list and one template.
    page.goto(base + "/console/templates")
    expect(page.locator("#templates")).to_contain_text("thermostat")
    shots(page, "templates")
    page.click("#templates a")
    expect(page.locator("h1")).to_have_text("Thermostat")
    expect(page.locator("main")).to_contain_text("targetTemperature")
    shots(page, "template", full_page=True)

    # Tokens: create one (its secret shown once, and it works), then revoke it.
    page.goto(base + "/console/tokens")
    page.fill("#token-label", "console-test")
    page.select_option("#token-role", "viewer")
    page.click("#create-token")
    secret = page.inner_text("#token-secret").strip()
    token_id = page.inner_text("#token-id").strip()
    shots(page, "token-created")
    with httpx.Client(base_url=base, timeout=30) as http:
        bearer = {"Authorization": f"Bearer {secret}"}
        assert http.get("/v1/devices", headers=bearer).status_code == 200
        page.goto(base + "/console/tokens")
        assert secret not in page.content()
        shots(page, "tokens")
        page.on("dialog", lambda dialog: dialog.accept())
        page.click(f'tr[data-token="{token_id}"] button')
        expect(page.locator(".flash-ok")).to_contain_text("revoked")
        expect(page.locator(f'tr[data-token="{token_id}"]')).to_have_count(0)
        assert http.get("/v1/devices", headers=bearer).status_code == 401

        # A ux4iot key: its connection string once, and it opens the ux4iot API until revoked.
        page.fill("#ux4iot-label", "dashboard")
        page.click("#create-ux4iot-key")
        key = page.inner_text("#ux4iot-key").strip()
        key_id = page.inner_text("#ux4iot-key-id").strip()
        assert page.inner_text("#ux4iot-connection-string").strip() == (
            f"Endpoint={base}/ux4iot;SharedAccessKey={key}"
        )
        shots(page, "ux4iot-key-created")
        shared = {"Shared-Access-Key": key}
        state = http.get(f"/ux4iot/connectionState/{device_id}", headers=shared)
        assert state.status_code == 200, state.text
        page.goto(base + "/console/tokens")
        assert key not in page.content()
        page.click(f'tr[data-key="{key_id}"] button')
        expect(page.locator(".flash-ok")).to_contain_text(f"ux4iot key {key_id} revoked")
        expect(page.locator(f'tr[data-key="{key_id}"]')).to_have_count(0)
        state = http.get(f"/ux4iot/connectionState/{device_id}", headers=shared)
        assert state.status_code == 401, state.text

    # Users (admin): the list; a new user can sign in until it is deleted.
    page.goto(base + "/console/users")
    expect(page.locator("#users")).to_contain_text(user(users, "viewer"))
    newcomer = f"newcomer-{uuid.uuid4().hex[:6]}"
    page.fill("#new-username", newcomer)
    page.fill("#new-password", PASSWORD)
    page.select_option("#new-role", "viewer")
    page.click("#create-user")
    expect(page.locator(".flash-ok")).to_contain_text(f"User {newcomer} (viewer) created")
    expect(page.locator(f'tr[data-user="{newcomer}"]')).to_have_count(1)
    shots(page, "users")
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as http:
        assert _login(http, newcomer).status_code == 303
    page.click(f'tr[data-user="{newcomer}"] button')
    expect(page.locator(f'tr[data-user="{newcomer}"]')).to_have_count(0)
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as http:
        refused = _login(http, newcomer)
        assert refused.status_code == 200 and "Wrong user name or password" in refused.text

    # Delete the device, after a confirmation page.
    page.goto(f"{base}/console/devices/{device_id}")
    page.click("#delete-device")
    shots(page, "device-delete")
    page.click("#confirm-delete")
    expect(page).to_have_url(re.compile(r"/console/devices$"))
    expect(page.locator(".flash-ok")).to_contain_text(f"Device {device_id} deleted")
    with server.client() as api:
        assert api.get(f"/v1/devices/{device_id}").status_code == 404

    # Sign out: back at the form, and the old session is gone.
    cookies = page.context.cookies()
    page.click("header button.link")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    old = {c["name"]: c["value"] for c in cookies}
    with httpx.Client(base_url=base, timeout=30, follow_redirects=False, cookies=old) as http:
        answer = http.get("/console/devices")
        assert answer.status_code == 303
        assert "/console/login" in answer.headers["location"]
    watched.assert_clean()
    watched.assert_offline(base)


def test_viewer_sees_but_cannot_change(
    server: ServerProcess, users: dict[str, str], open_page: Callable[..., Watched],
    shots: Shots,
) -> None:  # fmt: skip
    base = server.http_url
    with server.client() as api:
        created = api.post(
            "/v1/devices", json={"name": "seen by a viewer", "project": "p", "deployment": "d"}
        ).json()
    device_id = created["id"]
    watched = open_page()
    page = watched.page
    sign_in(page, base, user(users, "viewer"))
    expect(page.locator("h1")).to_have_text("Devices")
    expect(page.locator("#new-device")).to_have_count(0)
    expect(page.locator("header nav")).not_to_contain_text("API tokens")
    page.goto(f"{base}/console/devices/{device_id}")
    expect(page.locator("h1")).to_have_text("seen by a viewer")
    for control in ("#toggle-enabled", "#delete-device", "#save-desired", "#call-method",
                    "#send-c2d"):  # fmt: skip
        expect(page.locator(control)).to_have_count(0)
    shots(page, "device-viewer", full_page=True)
    watched.assert_clean()  # what a viewer sees works; below, refusals log their 403s

    # Forms it could forge anyway (with its own valid CSRF token) are refused by the services.
    csrf = page.locator("header input[name=csrf]").get_attribute("value")
    attempts = {
        "/console/devices": {"name": "nope"},
        f"/console/devices/{device_id}/enabled": {"enabled": "0"},
        f"/console/devices/{device_id}/delete": {},
        f"/console/devices/{device_id}/desired": {"desired": '{"x": 1}'},
        f"/console/devices/{device_id}/method": {"method": "reboot"},
        f"/console/devices/{device_id}/messages": {"body": "hi"},
        "/console/tokens": {"role": "admin", "label": "escalate"},
        "/console/ux4iot-keys": {"label": "escalate"},
        "/console/users": {"username": "mallory", "password": "12345678", "role": "admin"},
    }
    for path, fields in attempts.items():
        status = page.evaluate(
            """async ([path, fields]) => {
                const r = await fetch(path, {method: 'POST', body: new URLSearchParams(fields),
                                             redirect: 'manual'});
                return r.status;
            }""",
            [path, {**fields, "csrf": csrf}],
        )
        assert status == 403, (path, status)
    page.goto(base + "/console/tokens")
    expect(page.locator("#error-message")).to_contain_text("admin")
    with server.client() as api:
        device = api.get(f"/v1/devices/{device_id}").json()
        assert device["provisioningStatus"] == "enabled"
        twin = api.get(f"/v1/devices/{device_id}/twin").json()
        assert "x" not in twin["properties"]["desired"]
        assert not [d for d in api.get("/v1/devices").json() if d["tags"]["name"] == "nope"]
        assert "escalate" not in {t["label"] for t in api.get("/v1/tokens").json()}
    assert watched.errors and all("403 (Forbidden)" in e for e in watched.errors)


@pytest.mark.backend_agnostic
def test_phone_width_and_keyboard(
    server: ServerProcess, users: dict[str, str], open_page: Callable[..., Watched],
    shots: Shots,
) -> None:  # fmt: skip
    base = server.http_url
    with server.client() as api:
        device_id = api.post(
            "/v1/devices", json={"name": "phone view", "project": "p", "deployment": "d"}
        ).json()["id"]
    watched = open_page(PHONE)
    page = watched.page
    page.goto(base + "/console/login")
    # Keyboard only: the form has the focus, Tab moves on, Enter sends.
    assert page.evaluate("document.activeElement.id") == "username"
    page.keyboard.type(user(users, "admin"))
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Devices")
    page.keyboard.press("Tab")  # the first stop of every page skips to its content
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    pages = {
        "devices-phone": "/console/devices",
        "device-phone": f"/console/devices/{device_id}",
        "templates-phone": "/console/templates",
        "template-phone": "/console/templates/thermostat",
        "device-new-phone": "/console/new-device",
        "tokens-phone": "/console/tokens",
        "users-phone": "/console/users",
    }
    for name, path in pages.items():
        page.goto(base + path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at phone width"
        # Lists stack their cells at this width: no table hides columns off to the side
        # (the raw "latest values" table, folded away by default, may scroll).
        hidden = page.evaluate(
            """[...document.querySelectorAll('.table-wrap')]
                .filter((wrap) => !wrap.closest('details'))
                .map((wrap) => wrap.scrollWidth - wrap.clientWidth)
                .filter((extra) => extra > 0)"""
        )
        assert not hidden, f"{path} has tables wider than the screen by {hidden}px"
        shots(page, name, full_page=True)
    # Every control of the device page is reachable with Tab and shows where focus is.
    page.goto(f"{base}/console/devices/{device_id}")
    focused: set[str] = set()
    for _ in range(60):
        page.keyboard.press("Tab")
        focused.add(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    assert {"range", "desired", "save-desired", "method-name", "call-method", "send-c2d"} <= focused
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    # A change by keyboard alone: Tab to the desired properties, type, Tab, Enter.
    page.goto(f"{base}/console/devices/{device_id}")
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "desired":
            break
    page.keyboard.press("Control+A")
    page.keyboard.type('{"fan": "auto"}')
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "save-desired"
    page.keyboard.press("Enter")
    expect(page.locator("#twin-result")).to_contain_text("Desired properties saved")
    # The outcome takes the focus, so a screen reader reads it.
    assert page.evaluate("!!document.activeElement.closest('#twin-result')")
    with server.client() as api:
        assert (
            api.get(f"/v1/devices/{device_id}/twin").json()["properties"]["desired"]["fan"]
            == "auto"
        )
    watched.assert_clean()


def test_every_action_works_without_javascript(
    server: ServerProcess, users: dict[str, str], browser: Browser, shots: Shots
) -> None:
    """Progressive enhancement: with JavaScript off, every change is a plain form post
    answered by a redirect to a page that shows its outcome."""
    base = server.http_url
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    try:
        watched = watch(context)
        page = watched.page
        sign_in(page, base, user(users, "admin"))
        expect(page.locator("h1")).to_have_text("Devices")
        device_id = f"nojs-{uuid.uuid4().hex[:8]}"
        page.click("#new-device")
        page.fill("#name", "No script")
        page.fill("#id", device_id)
        page.click("form.stack button[type=submit]")
        connection_string = page.inner_text("#connection-string").strip()
        page.click("#open-device")
        simulator = Simulator(server, connection_string)
        try:
            # The page does not update itself: reload until the device shows Connected.
            def connected() -> bool:
                page.reload()
                return page.inner_text("#device-state") == "Connected"

            _wait(connected, "the device to connect")
            page.fill("#desired", json.dumps({"mode": "eco"}))
            page.click("#save-desired")
            expect(page).to_have_url(re.compile(rf"/console/devices/{device_id}#twin$"))
            expect(page.locator("#twin-result")).to_contain_text("Desired properties saved")
            line = simulator.expect_line(rf"^desired {re.escape(device_id)} ")
            assert json.loads(line.split(" ", 2)[2])["mode"] == "eco"
            page.fill("#method-name", "reboot")
            page.click("#call-method")
            expect(page.locator("#method-result")).to_contain_text("reboot answered 200")
            page.fill("#c2d-body", "no script here")
            page.click("#send-c2d")
            expect(page.locator("#c2d-result")).to_contain_text("accepted")
            shots(page, "device-no-javascript", full_page=True)
            page.click("#toggle-enabled")
            expect(page.locator("#device-enabled")).to_have_text("no")
        finally:
            simulator.stop()
        page.goto(base + "/console/tokens")
        page.fill("#token-label", "no-js")
        page.click("#create-token")
        token_id = page.inner_text("#token-id").strip()
        page.goto(base + "/console/tokens")
        page.click(f'tr[data-token="{token_id}"] button')  # no confirm() without JavaScript
        expect(page.locator(f'tr[data-token="{token_id}"]')).to_have_count(0)
        page.goto(f"{base}/console/devices/{device_id}")
        page.click("#delete-device")
        page.click("#confirm-delete")
        expect(page.locator(".flash-ok")).to_contain_text(f"Device {device_id} deleted")
        page.click("header button.link")
        expect(page).to_have_url(re.compile(r"/console/login$"))
        watched.assert_clean()
    finally:
        context.close()


@pytest.mark.backend_agnostic
def test_a_cross_site_form_is_refused(
    server: ServerProcess, users: dict[str, str], open_page: Callable[..., Watched],
) -> None:  # fmt: skip
    base = server.http_url
    watched = open_page()
    page = watched.page
    sign_in(page, base, user(users, "admin"))
    expect(page.locator("h1")).to_have_text("Devices")
    name = f"forged-{uuid.uuid4().hex[:6]}"
    attacker = (
        "<!doctype html><title>win a prize</title>"
        f'<form id="f" method="post" action="{base}/console/devices">'
        f'<input name="name" value="{name}"><input name="csrf" value="guess"></form>'
        "<script>document.getElementById('f').submit()</script>"
    )
    page.route(
        "http://attacker.test/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=attacker),
    )
    with page.expect_response(lambda r: r.url == f"{base}/console/devices") as posted:
        page.goto("http://attacker.test/")
    assert posted.value.status == 403
    with server.client() as api:
        assert not [d for d in api.get("/v1/devices").json() if d["tags"]["name"] == name]


# -- security, over plain HTTP -------------------------------------------------------------


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, html[:500]
    return match.group(1)


def _login(http: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    form = http.get("/console/login")
    return http.post(
        "/console/login",
        data={"username": username, "password": password, "csrf": _csrf(form.text)},
    )


@pytest.mark.backend_agnostic
def test_cookie_flags_and_session_fixation(server: ServerProcess, users: dict[str, str]) -> None:
    with httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as http:
        form = http.get("/console/login")
        flags = form.headers["set-cookie"].lower()
        assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
        assert "secure" not in flags  # plain HTTP here
        before = http.cookies["thinghub_console"]
        signed_in = http.post(
            "/console/login",
            data={"username": user(users, "admin"), "password": PASSWORD,
                  "csrf": _csrf(form.text)},
        )  # fmt: skip
        assert signed_in.status_code == 303
        after = signed_in.cookies["thinghub_console"]
        assert after != before  # a new session id at login
        flags = signed_in.headers["set-cookie"].lower()
        assert "httponly" in flags and "samesite=strict" in flags
        # The id planted before login is worth nothing; the new one works.
        planted = httpx.get(server.http_url + "/console/devices",
                            cookies={"thinghub_console": before})  # fmt: skip
        assert planted.status_code == 303 and "/console/login" in planted.headers["location"]
        assert http.get("/console/devices").status_code == 200


@pytest.mark.backend_agnostic
def test_a_sign_in_with_another_cookies_form_token_is_refused(
    server: ServerProcess, users: dict[str, str]
) -> None:
    """The sign-in form stores nothing; its CSRF token is bound to its own cookie: posted
    with another browser's cookie (or none) it is refused, and nobody is signed in."""
    name = user(users, "admin")
    with (
        httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as mine,
        httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as theirs,
    ):
        their_token = _csrf(theirs.get("/console/login").text)
        my_token = _csrf(mine.get("/console/login").text)
        assert my_token != their_token
        fields = {"username": name, "password": PASSWORD}
        refused = mine.post("/console/login", data={**fields, "csrf": their_token})
        assert refused.status_code == 403, refused.text[:500]
        assert "thinghub_console" not in refused.headers.get("set-cookie", "")
        no_cookie = httpx.post(
            server.http_url + "/console/login", data={**fields, "csrf": my_token}
        )
        assert no_cookie.status_code == 403
        assert mine.get("/console/devices").status_code == 303  # not signed in
        signed_in = mine.post("/console/login", data={**fields, "csrf": my_token})
        assert signed_in.status_code == 303, signed_in.text[:500]
        assert mine.get("/console/devices").status_code == 200


@pytest.mark.backend_agnostic
def test_a_session_outlives_a_server_restart(start_server: Callable[..., ServerProcess]) -> None:
    """Sessions live in the database: a browser signed in before a restart is
    still signed in after it, with the same cookie; signing out then ends it for good.
    (SQLite by default; the PostgreSQL pass keeps one database across the restart too.)"""
    proc = start_server()
    with proc.client() as admin:
        made = admin.post("/v1/users", json={"username": "restarter", "password": PASSWORD,
                                             "role": "viewer"})  # fmt: skip
        assert made.status_code == 201, made.text
    with httpx.Client(base_url=proc.http_url, timeout=30, follow_redirects=False) as http:
        assert _login(http, "restarter").status_code == 303
        cookie = http.cookies["thinghub_console"]
    assert proc.stop() == 0
    again = start_server(data_dir=proc.data_dir, admin_token=proc.admin_token)
    with httpx.Client(
        base_url=again.http_url,
        timeout=30,
        follow_redirects=False,
        headers={"cookie": f"thinghub_console={cookie}"},
    ) as http:
        page = http.get("/console/devices")
        assert page.status_code == 200, page.text[:500]
        assert "restarter" in page.text
        out = http.post("/console/logout", data={"csrf": _csrf(page.text)})
        assert out.status_code == 303
    ended = httpx.get(again.http_url + "/console/devices", cookies={"thinghub_console": cookie})
    assert ended.status_code == 303 and "/console/login" in ended.headers["location"]


def _ux4iot_endpoint(html: str) -> str:
    match = re.search(r'id="ux4iot-endpoint">([^<]+)<', html)
    assert match is not None, html[:500]
    return match.group(1)


@pytest.mark.backend_agnostic
def test_a_console_on_its_own_port_shows_the_ux4iot_endpoint_that_works(
    start_server: Callable[..., ServerProcess],
) -> None:
    """With `--face-listen console=HOST:PORT` and no public URL, the ux4iot Endpoint the
    console shows is the shared HTTP port's (which serves /ux4iot), not the console's own
    port (which serves only the console); a ux4iot backend using it opens a session."""
    proc = start_server("--face-listen", "console=127.0.0.1:0")
    console_url = f"http://127.0.0.1:{proc.addresses['faces']['console']['port']}"
    with proc.client() as admin:
        made = admin.post("/v1/users", json={"username": "own-port", "password": PASSWORD,
                                             "role": "admin"})  # fmt: skip
        assert made.status_code == 201, made.text
        device_id = admin.post("/v1/devices", json={"name": "shown", "project": "p",
                                                    "deployment": "d"}).json()["id"]  # fmt: skip
    key = create_key(proc)["key"]
    expected = f"{proc.http_url}/ux4iot"
    for base in (console_url, proc.http_url):  # its own port, and the shared one
        with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as http:
            assert _login(http, "own-port").status_code == 303
            device_page = http.get(f"/console/devices/{device_id}")
            assert device_page.status_code == 200, device_page.text[:500]
            assert _ux4iot_endpoint(device_page.text) == expected, base
            tokens = http.get("/console/tokens")
            assert f"<code>{expected}</code>" in tokens.text, base
    assert console_url not in expected
    with Ux(expected, key, prefix="") as ux:  # the Endpoint as a ux4iot backend uses it
        assert ux.session()


@pytest.mark.backend_agnostic
def test_secure_cookie_behind_tls(start_server: Callable[..., ServerProcess]) -> None:
    proc = start_server(env={"THINGHUB_PUBLIC_URL": "https://iot.example.com"})
    try:
        with httpx.Client(base_url=proc.http_url, timeout=30) as http:
            flags = http.get("/console/login").headers["set-cookie"].lower()
        assert "secure" in flags and "httponly" in flags and "samesite=strict" in flags
    finally:
        assert proc.stop() == 0


@pytest.mark.backend_agnostic
def test_changes_need_the_csrf_token_and_this_site(
    server: ServerProcess, users: dict[str, str]
) -> None:
    with httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as http:
        assert _login(http, user(users, "operator")).status_code == 303
        csrf = _csrf(http.get("/console/devices").text)
        name = f"csrf-{uuid.uuid4().hex[:6]}"
        refused = [
            http.post("/console/devices", data={"name": name}),
            http.post("/console/devices", data={"name": name, "csrf": "x" + csrf}),
            http.post("/console/devices", data={"name": name, "csrf": csrf},
                      headers={"Origin": "http://evil.example"}),
            http.post("/console/devices", data={"name": name, "csrf": csrf},
                      headers={"Sec-Fetch-Site": "cross-site"}),
            http.post("/console/devices", content=json.dumps({"name": name, "csrf": csrf}),
                      headers={"Content-Type": "text/plain"}),
        ]  # fmt: skip
        assert [r.status_code for r in refused[:4]] == [403, 403, 403, 403]
        assert refused[4].status_code in (400, 403)
        with server.client() as api:
            assert not [d for d in api.get("/v1/devices").json() if d["tags"]["name"] == name]
        made = http.post("/console/devices", data={"name": name, "csrf": csrf},
                         headers={"Origin": server.http_url})  # fmt: skip
        assert made.status_code == 201


def test_no_key_or_token_is_shown_again(server: ServerProcess, users: dict[str, str]) -> None:
    from websocket import create_connection

    with httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as http:
        assert _login(http, user(users, "admin")).status_code == 303
        csrf = _csrf(http.get("/console/devices").text)
        created = http.post("/console/devices", data={"name": "keys once", "csrf": csrf})
        assert created.status_code == 201
        assert created.headers["cache-control"] == "no-store"
        keys = re.findall(r'id="(?:primary|secondary)-key" class="copy">([^<]+)<', created.text)
        assert len(keys) == 2
        device_id = re.search(r'id="created-id">([^<]+)<', created.text).group(1)  # type: ignore[union-attr]
        token = http.post("/console/tokens", data={"role": "viewer", "label": "once",
                                                   "csrf": csrf})  # fmt: skip
        secret = re.search(r'id="token-secret" class="copy">([^<]+)<', token.text).group(1)  # type: ignore[union-attr]
        ux4iot = http.post("/console/ux4iot-keys", data={"label": "once", "csrf": csrf})
        assert ux4iot.status_code == 201
        assert ux4iot.headers["cache-control"] == "no-store"
        shared_key = re.search(r'id="ux4iot-key" class="copy">([^<]+)<', ux4iot.text).group(1)  # type: ignore[union-attr]
        cookie = http.cookies["thinghub_console"]
        host = server.http_url.removeprefix("http://")
        socket = create_connection(
            f"ws://{host}/console/live?device={device_id}",
            cookie=f"thinghub_console={cookie}",
            origin=server.http_url,
            timeout=10,
        )
        try:
            toggled = http.post(f"/console/devices/{device_id}/enabled",
                                data={"enabled": "0", "csrf": csrf})  # fmt: skip
            assert toggled.status_code == 303
            frames = []
            while not any('"type":"device"' in f for f in frames):
                frames.append(socket.recv())
        finally:
            socket.close()
        pages = [
            http.get(path).text
            for path in ("/console/devices", f"/console/devices/{device_id}", "/console/tokens",
                         f"/console/devices/{device_id}/delete", "/console/users")
        ]  # fmt: skip
        for text in [*pages, *frames]:
            for value in [*keys, secret, shared_key]:
                assert value not in text


def test_the_live_channel_starts_with_the_present_state(
    server: ServerProcess, users: dict[str, str]
) -> None:
    """What changed between rendering a page and opening its channel is not missed: the
    channel first sends the present state."""
    from websocket import create_connection

    with server.client() as api:
        ids = [api.post("/v1/devices", json={"name": f"snap {i}", "project": "p",
                                             "deployment": "d"}).json()["id"]
               for i in range(2)]  # fmt: skip
    host = server.http_url.removeprefix("http://")
    with httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as http:
        assert _login(http, user(users, "viewer")).status_code == 303
        cookie = f"thinghub_console={http.cookies['thinghub_console']}"
        page = http.get(f"/console/devices/{ids[0]}").text
        assert 'id="device-enabled">yes<' in page
        # Changes after the page was rendered, before its channel opens.
        with server.client() as api:
            changed = api.put(f"/v1/devices/{ids[0]}", json={
                "provisioningStatus": "disabled", "properties": {"mode": "eco"}})  # fmt: skip
            assert changed.status_code == 200, changed.text

        def first_frames(query: str, count: int) -> list[dict[str, Any]]:
            socket = create_connection(f"ws://{host}/console/live?{query}", cookie=cookie,
                                       origin=server.http_url, timeout=10)  # fmt: skip
            try:
                return [json.loads(socket.recv()) for _ in range(count)]
            finally:
                socket.close()

        device_frames = first_frames(f"device={ids[0]}", 4)
        by_type = {(f["type"], f.get("section")): f for f in device_frames}
        assert by_type[("connection", None)]["connected"] is False
        assert by_type[("connection", None)]["snapshot"] is True
        assert by_type[("device", None)]["enabled"] is False
        assert by_type[("twin", "desired")]["properties"] == {"mode": "eco"}
        assert by_type[("twin", "reported")]["properties"] == {}
        list_frames = first_frames("devices=" + ",".join(ids), 2)
        assert sorted(f["device"] for f in list_frames) == sorted(ids)
        assert all(f["type"] == "connection" and f["connected"] is False for f in list_frames)


@pytest.mark.backend_agnostic
def test_live_channel_refuses_other_sites_and_no_session(
    server: ServerProcess, users: dict[str, str]
) -> None:
    from websocket import WebSocketBadStatusException, create_connection

    host = server.http_url.removeprefix("http://")
    with httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as http:
        assert _login(http, user(users, "viewer")).status_code == 303
        cookie = f"thinghub_console={http.cookies['thinghub_console']}"
    with pytest.raises(WebSocketBadStatusException) as refused:
        create_connection(f"ws://{host}/console/live?devices=", cookie=cookie,
                          origin="http://evil.example", timeout=10)  # fmt: skip
    assert refused.value.status_code == 403
    with pytest.raises(WebSocketBadStatusException) as anonymous:
        create_connection(f"ws://{host}/console/live?devices=", origin=server.http_url,
                          timeout=10)  # fmt: skip
    assert anonymous.value.status_code == 403


def test_the_list_is_searched_and_paged(server: ServerProcess, users: dict[str, str]) -> None:
    tag = f"paged-{uuid.uuid4().hex[:6]}"
    with server.client() as api:
        for i in range(PAGE_SIZE + 2):
            made = api.post("/v1/devices", json={"name": f"{tag} {i:02d}", "project": "p",
                                                 "deployment": "d"})  # fmt: skip
            assert made.status_code in (200, 201), made.text
    with httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as http:
        assert _login(http, user(users, "viewer")).status_code == 303
        first = http.get("/console/devices", params={"q": tag})
        assert f"{PAGE_SIZE + 2} devices matching" in first.text
        assert first.text.count(f">{tag} ") == PAGE_SIZE
        assert "Page 1 of 2" in first.text and 'rel="next"' in first.text
        second = http.get("/console/devices", params={"q": tag, "page": 2})
        assert second.text.count(f">{tag} ") == 2
        assert "Page 2 of 2" in second.text and 'rel="prev"' in second.text
        shown = set(re.findall(rf">({tag} \d\d)<", first.text + second.text))
        assert shown == {f"{tag} {i:02d}" for i in range(PAGE_SIZE + 2)}
        assert "0 devices matching" in http.get("/console/devices", params={"q": tag + "x"}).text


@pytest.mark.backend_agnostic
def test_failed_logins_are_limited(server: ServerProcess) -> None:
    name = f"target-{uuid.uuid4().hex[:6]}"
    with server.client() as api:
        assert api.post("/v1/users", json={"username": name, "password": PASSWORD,
                                           "role": "viewer"}).status_code == 201  # fmt: skip
    with httpx.Client(base_url=server.http_url, timeout=30, follow_redirects=False) as http:
        failed = [_login(http, name, "wrong password") for _ in range(5)]
        assert [r.status_code for r in failed] == [200] * 5
        assert all("Wrong user name or password" in r.text for r in failed)
        limited = _login(http, name)  # the right password, too late
        assert limited.status_code == 429
        assert "Too many failed sign-ins" in limited.text
