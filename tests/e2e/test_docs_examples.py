"""Every docs page's example runs as printed against a real server, and prints what the page
shows.

Each test takes one page's example section(s) (tests/e2e/docs_pages.py), runs its `sh` and
`python` blocks in page order as a reader would, pointed at a fresh server through the
variables the page names (THINGHUB_URL, THINGHUB_ADMIN_TOKEN, THINGHUB_MQTT_PORT, ITWIN_WS),
and checks the status codes and fields the page prints. A page whose example breaks fails here.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.docs_pages import DOCS, README, Block, blocks, example_env, run
from tests.e2e.server import ServerProcess, running

pytestmark = [pytest.mark.e2e, pytest.mark.backend_agnostic]

FACES = DOCS / "faces"
CONCEPTS = DOCS / "concepts"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: the pages' fixed names (device001, TH0001, the thermostat
    product) are each one page's."""
    with running(ServerProcess(tmp_path_factory.mktemp("docs"))) as proc:
        yield proc


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of the test's own, for a page whose names another page also uses (alice)."""
    with running(ServerProcess(tmp_path / "server")) as proc:
        yield proc


def run_ok(server: ServerProcess, cwd: Path, examples: list[Block]) -> str:
    """Run the examples; they exit 0 and print no traceback. Their stdout."""
    assert examples, "the page lost its example"
    done = run(examples, example_env(server), cwd)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def printed(out: str) -> list[Any]:
    """What the examples printed, one item each: a JSON value (curl's answers end with no
    newline, so they run into what comes next), else the text up to the end of its line."""
    items: list[Any] = []
    decoder = json.JSONDecoder()
    at = 0
    while at < len(out):
        if out[at].isspace():
            at += 1
            continue
        try:
            value, at = decoder.raw_decode(out, at)
        except json.JSONDecodeError:
            end = out.find("\n", at)
            end = len(out) if end < 0 else end
            value, at = out[at:end], end
        items.append(value)
    return items


# -- faces ---------------------------------------------------------------------------------


def test_st_every_example_runs_in_order(server: ServerProcess, tmp_path: Path) -> None:
    out = run_ok(server, tmp_path, [b for b in blocks(FACES / "st.md") if b.language == "sh"])
    items = printed(out)
    device = items[0]
    assert device["tags"]["name"] == "example smart thermostat" and device["idScope"]
    assert '"code":"DeviceNotOnline"' in out  # the method call on a device not connected
    assert '"moduleId":"filter"' in out and '"enrollmentGroupId":"thermostats"' in out
    assert '"access_token"' in out and '"token_type":"Bearer"' in out
    retention = [x for x in items if isinstance(x, dict) and "telemetryDays" in x]
    assert retention[0]["server"] == {"telemetryDays": 0.0, "eventsDays": 0.0, "filesDays": 0.0}
    assert retention[1]["telemetryDays"] == 7.0
    # the data of a device is deleted before the device is, as the page orders it
    assert '{"deleted":0}' in out and "NotFound" not in out
    assert items[-2:] == [204, 204]  # the gateway, then the device


def test_st_python(server: ServerProcess, tmp_path: Path) -> None:
    [script] = [b for b in blocks(FACES / "st.md", "## Python (httpx)") if b.language == "python"]
    lines = run_ok(server, tmp_path, [script]).splitlines()
    assert lines[0].startswith("created ")
    assert lines[1].startswith("desired {'targetTemperature': 22.5")
    assert lines[2] == "method failed: DeviceNotOnline"
    assert "viewer sees keys: None" in lines
    assert lines[-1].startswith("400 {'code': ")


def test_central_quick_tour(server: ServerProcess, tmp_path: Path) -> None:
    out = run_ok(server, tmp_path, blocks(FACES / "central.md", "## Quick tour (curl)"))
    items = printed(out)
    assert items[0]["state"] == "Running"
    assert items[1]["token"].startswith("SharedAccessSignature ")
    assert '"displayName":"Updated Sensor Alpha"' in out
    assert '"body":{"temperature":25.5,"humidity":60.2}' in out
    assert '"status":"Pending"' in out and '{"value":21.5,' in out
    assert "has no value yet" in out  # firmwareVersion: 404 until the device reports it


def test_device_http_curl_and_python(server: ServerProcess, tmp_path: Path) -> None:
    out = run_ok(server, tmp_path, blocks(FACES / "device-http.md", "## curl"))
    assert out.startswith("HTTP/1.1 204 No Content")
    assert '"body":{"temperature":21.5,"humidity":40}' in out
    out = run_ok(server, tmp_path, blocks(FACES / "device-http.md", "## Python"))
    assert [m["body"] for m in ast.literal_eval(out)] == [  # the page prints a Python repr
        {"temperature": 22},
        {"temperature": 21},
        {"temperature": 20},
    ]


def test_device_mqtt_connection_string_and_x509(server: ServerProcess, tmp_path: Path) -> None:
    page = FACES / "device-mqtt.md"
    out = run_ok(
        server,
        tmp_path,
        blocks(page, "## Connection string") + blocks(page, "## X.509 certificates"),
    )
    twin = out.splitlines()[-1]
    assert "'reported': {'maxTempSinceLastReboot': 30.1" in twin and "'desired'" in twin
    device_id = json.loads((tmp_path / "device.json").read_text())["id"]
    with server.client() as api:
        sent = api.get("/v1/telemetries", params={"deviceID": device_id}).json()
    assert [m["body"] for m in sent] == [{"temperature": 21.5}] * 2  # SAS key, then X.509


def test_ioto_device_api(server: ServerProcess, tmp_path: Path) -> None:
    page = FACES / "ioto.md"
    out = run_ok(
        server,
        tmp_path,
        blocks(page, "## The device API") + blocks(page, "## Products and files on `/v1`"),
    )
    items = printed(out)
    assert items[0] == {"id": "TH0001", "registered": True}
    assert items[1]["product"] == "thermostat"  # claimed
    assert items[2]["data"][0]["id"] == "TH0001"  # find
    assert items[3]["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    assert items[3]["id"] == "TH0001"
    assert items[4] == 1  # the S3 object the Python example put
    assert items[5][0]["name"] == "logs/today.csv"  # the file uploaded to its signed URL
    assert items[6]["name"] == "sprinkler" and items[-1] == 204


def test_ux4iot_quick_start(server: ServerProcess, tmp_path: Path) -> None:
    out = run_ok(server, tmp_path, blocks(FACES / "ux4iot.md", "## Quick start (curl)"))
    assert printed(out)[0] == 204
    assert printed(out)[1]["data"] is False
    assert printed(out)[2:] == [403]


def test_itwin_quick_start(server: ServerProcess, tmp_path: Path) -> None:
    quick_start = blocks(FACES / "itwin.md", "## Quick start")
    [script] = [b for b in quick_start if b.language == "python"]
    [curl] = [b for b in quick_start if b.language == "sh" and "curl" in b.code]

    first = run_ok(server, tmp_path, [script]).splitlines()
    assert first[0] == "{'nextId': 1}"
    created = first[1]
    assert "'NAME': 'Water'" in created and "'type': 'TEMP'" in created
    # What the page's comments promise, line by line.
    assert first[2:] == [
        "{'successfullyProcessedObs': 2}",
        "['dT', 'T']",
        "{'data': {'2024-06-24T18:00:00.000Z': 70.7, '2024-06-24T18:01:00.000Z': 71.6}}",
        "{'requestStatus': 'finished'}",
    ]
    # Run again, as the page says: the sensor exists, the rest answers the same.
    second = run_ok(server, tmp_path, [script]).splitlines()
    assert "already exists" in second[1]
    assert second[2:] == first[2:]

    sensors = json.loads(run_ok(server, tmp_path, [curl]))
    [water] = [s for s in sensors if s["id"] == "/quickstart/A1/node/probe/A1/device/water/sensor"]
    assert water["type"] == "TEMP" and water["props"]["NAME"] == "Water"
    assert water["props"]["LAST_OBSERVATION"]["values"] == [22.0]


# -- concepts, the index, the README -------------------------------------------------------


def test_accounts_access_tokens(own_server: ServerProcess, tmp_path: Path) -> None:
    page = CONCEPTS / "accounts-and-security.md"
    out = run_ok(own_server, tmp_path, blocks(page, "## Access tokens: `POST /v1/auth/token`"))
    items = printed(out)
    assert items[0]["username"] == "alice"
    grants = [x for x in items if "access_token" in x]
    assert [(g["token_type"], g["expires_in"]) for g in grants] == [("Bearer", 3600)] * 2


@pytest.mark.parametrize(
    ("page", "heading", "printed"),
    [
        ("devices.md", "## Example", ["200", "InvalidInput moduleId", "isIoTEdgeCapable", "204"]),
        ("twins.md", "## Example", ['{"a":{"b":1,"c":3,"d":4},"$version":3}']),
        ("events.md", "## Example", ['["change_event",2]', '{"operation":"createDevice"}']),
        ("telemetry.md", "## Example", ["[22.5,22]", "[21.5]"]),
        ("commands.md", "## Example", ["DeviceNotOnline", "202"]),
        (
            "device-errors.md",
            "## Example",
            [
                '{"Message":"ErrorCode:IotHubUnauthorizedAccess;missing Authorization header",'
                '"ExceptionMessage":""} 401',
                '{"Message":"ErrorCode:IotHubUnauthorizedAccess;unknown device or bad credentials",'
                '"ExceptionMessage":""} 401',
            ],
        ),
        (
            "storage.md",
            "### Example: acknowledged after the commit",
            ["204", '[{"temperature":21.5}]', "thinghub_telemetry_commit_seconds_count "],
        ),
    ],
)
def test_concept_example_prints_what_the_page_shows(
    server: ServerProcess, tmp_path: Path, page: str, heading: str, printed: list[str]
) -> None:
    lines = run_ok(server, tmp_path, blocks(CONCEPTS / page, heading)).splitlines()
    # Each line as the page prints it (a counter's line: its name; the server is shared).
    assert len(lines) == len(printed), lines
    assert all(line.startswith(shown) for line, shown in zip(lines, printed, strict=True)), lines


def test_index_is_it_up(server: ServerProcess, tmp_path: Path) -> None:
    out = run_ok(server, tmp_path, blocks(DOCS / "index.md", "## Is it up?"))
    assert out.startswith('{"status":"ok"}href="/v1/docs"\n')
    assert 'href="/central/api/docs"' in out and 'href="/ux4iot/docs"' in out


def test_readme_first_steps(server: ServerProcess, tmp_path: Path) -> None:
    out = run_ok(server, tmp_path, blocks(README, "## First steps"))
    device = printed(out)[0]
    assert device["tags"] == device["tags"] | {"name": "thermostat", "project": "demo"}
    listed = [line.split() for line in out.splitlines() if "thermostat" in line and " lab " in line]
    assert len(listed) == 2  # the device made with curl and the one made with the CLI
