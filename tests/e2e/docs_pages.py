"""The examples of the docs pages, taken from the pages and run as a reader would.

A page's example section is its fenced blocks under one heading (down to the next heading of
the same or a higher level). `sh` and `python` blocks run in page order in one bash (so shell
variables carry from block to block, as the pages say); a block that starts a
server (`thinghub serve`) is the reader's set-up and is left out, the test has its server.
The pages name the variables they read (THINGHUB_URL, THINGHUB_ADMIN_TOKEN, ...):
`example_env` points them at the test's server.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.itwin import ws_url
from tests.e2e.server import ServerProcess

DOCS = Path(__file__).resolve().parents[2] / "docs"
README = DOCS.parent / "README.md"
# Each example is a handful of requests (and a few `thinghub` commands) to a local server; a
# hung one fails, never blocks CI.
RUN_TIMEOUT_S = 60
# A fence, and whether the line before it is `<!-- docs-test: skip ... -->` (an example that
# cannot end by itself, such as a stream that runs until interrupted).
_FENCE = re.compile(r"(<!-- docs-test: skip[^>]*-->\n)?^```(\w*)\n(.*?)^```", re.S | re.M)


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block: its language (`sh`, `python`, `json`, or "") and its text."""

    language: str
    code: str


def section(page: Path, heading: str) -> str:
    """The text under `heading` (e.g. "## Quick start"), down to the next heading of the same
    or a higher level (a `#` line inside a fenced block is a comment, not a heading)."""
    lines = page.read_text(encoding="utf-8").splitlines(keepends=True)
    level = len(heading) - len(heading.lstrip("#"))
    start = lines.index(heading + "\n")
    in_fence = False
    for end in range(start + 1, len(lines)):
        line = lines[end]
        if line.startswith("```"):
            in_fence = not in_fence
        elif not in_fence and re.match(rf"#{{1,{level}}} ", line):
            return "".join(lines[start:end])
    return "".join(lines[start:])


def blocks(page: Path, heading: str | None = None) -> list[Block]:
    """Every fenced block of a section (of the whole page without `heading`), in page order,
    but those marked `docs-test: skip`."""
    text = section(page, heading) if heading else page.read_text(encoding="utf-8")
    return [Block(language, code) for skip, language, code in _FENCE.findall(text) if not skip]


def example_env(server: ServerProcess) -> dict[str, str]:
    """The environment the pages' examples read, pointed at `server`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("THINGHUB_")}
    return {
        **environment,
        "THINGHUB_URL": server.http_url,
        "THINGHUB_ADMIN_TOKEN": server.admin_token,
        "THINGHUB_TOKEN": server.admin_token,
        "THINGHUB_MQTT_PORT": str(server.mqtt_port),
        # `thinghub ca`, `thinghub token create`, ... as if run in the server's directory
        "THINGHUB_DATA_DIR": str(server.data_dir),
        **({"THINGHUB_DATABASE": server.database} if server.database else {}),
        "ITWIN_WS": ws_url(server),
        # `thinghub` as the server runs it (this checkout, this interpreter)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}",
    }


def run(examples: list[Block], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the `sh` and `python` blocks in page order, in one bash that stops at the first
    failing command: shell variables carry from block to block, and each `python` block is a
    script of its own that this shell runs (so it sees what the shell exported)."""
    lines = ["set -eo pipefail"]
    for number, block in enumerate(examples):
        if block.language == "sh" and "thinghub serve" not in block.code:
            lines.append(block.code)
        elif block.language == "python":
            script = cwd / f"example{number}.py"
            script.write_text(block.code, encoding="utf-8")
            lines.append(f"{shlex.quote(sys.executable)} {shlex.quote(script.name)}")
    return subprocess.run(
        ["bash", "-c", "\n".join(lines)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
