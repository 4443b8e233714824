"""The quick start of docs/faces/itwin.md runs as printed against a real server.

The Python script and the curl command are taken from the page (its "Quick start" section),
run as a user would (a subprocess each), pointed at the test server through the variables the
page names (ITWIN_WS, THINGHUB_TOKEN, THINGHUB_URL), and their output is what the page says.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.itwin import ws_url
from tests.e2e.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.backend_agnostic]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "faces" / "itwin.md"
RUN_TIMEOUT_S = 60


def quick_start_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block of the Quick start section."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index("\n## Quick start\n")
    end = text.index("\n## ", start + 1)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:end], re.S)


def test_the_quick_start_runs_as_printed(server: ServerProcess, tmp_path: Path) -> None:
    blocks = quick_start_blocks()
    [script] = [code for language, code in blocks if language == "python"]
    [curl] = [code for language, code in blocks if language == "sh" and "curl" in code]
    path = tmp_path / "quickstart.py"
    path.write_text(script, encoding="utf-8")
    env = {
        **os.environ,
        "ITWIN_WS": ws_url(server),
        "THINGHUB_TOKEN": server.admin_token,
        "THINGHUB_URL": server.http_url,
    }

    def run_script() -> list[str]:
        done = subprocess.run(
            [sys.executable, str(path)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    first = run_script()
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
    second = run_script()
    assert "already exists" in second[1]
    assert second[2:] == first[2:]

    listed = subprocess.run(
        ["bash", "-c", curl],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    sensors = json.loads(listed.stdout)
    [water] = [s for s in sensors if s["id"] == "/quickstart/A1/node/probe/A1/device/water/sensor"]
    assert water["type"] == "TEMP" and water["props"]["NAME"] == "Water"
    assert water["props"]["LAST_OBSERVATION"]["values"] == [22.0]
