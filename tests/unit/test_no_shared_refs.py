"""The repository stands alone: nothing in src/, tests/, docs/, README.md or CHANGELOG.md
points at design notes or protocol write-ups kept outside it. The wire facts the code relies
on are written into docs/ (for devices: docs/faces/device-mqtt.md, "Wire details").

The pattern is put together from pieces, so this file does not match it itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED_DIRS = ("src", "tests", "docs")
SCANNED_FILES = ("README.md", "CHANGELOG.md")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".ini", ".json", ".yaml", ".yml",
                 ".sh", ".js", ".ts", ".html", ".sql", ".pyi"}  # fmt: skip

_SHARED = "sha" + "red/"
_OUTSIDE = "|".join(["DE" + "SIGN", "ST" + "YLE", "sp" + "ecs", "se" + "eds"])
_WRITEUP = "sp" + "ecs/" + "[a-z-]+" + r"\.md"
FORBIDDEN = re.compile(rf"(\.\./)?{_SHARED}({_OUTSIDE})|{_WRITEUP}")


def _scanned() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for folder in SCANNED_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if (
                path.is_file()
                and path.suffix in TEXT_SUFFIXES
                and "node_modules" not in path.parts
                and "__pycache__" not in path.parts
            ):
                files.append(path)
    return files


@pytest.mark.parametrize(
    "text",
    [
        "see ../" + _SHARED + "DE" + "SIGN.md",
        "as " + _SHARED + "ST" + "YLE.md says",
        "(`" + _SHARED + "se" + "eds/000`)",
        "sp" + "ecs/azure-device-protocol.md §2",
    ],
)
def test_the_pattern_catches_every_form(text: str) -> None:
    assert FORBIDDEN.search(text)


def test_nothing_points_outside_the_repository() -> None:
    files = _scanned()
    assert len(files) > 100  # the walk found the tree
    assert Path(__file__).resolve() in {f.resolve() for f in files}  # and scans itself
    hits = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert hits == [], "references to files outside the repository:\n" + "\n".join(hits)
