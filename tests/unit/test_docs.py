"""The docs stand alone: links resolve inside the repository, nothing points at files outside
it, headings say what they measure; the README's install line is the one CI runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Paths of the project's working material, which is not part of the repository.
OUTSIDE = re.compile(
    r"\.\./shared|\bshared/(seeds|specs|DESIGN|STYLE)|\bspecs/[\w-]+\.md|\bseeds/\d"
)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    inside_code = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            inside_code = not inside_code
        elif not inside_code and line.startswith("#"):
            found.add(_slug(line.lstrip("#")))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_reference_to_files_outside_the_repository(page: Path) -> None:
    for number, line in enumerate(page.read_text().splitlines(), 1):
        assert not OUTSIDE.search(line), f"{page.relative_to(ROOT)}:{number}: {line}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # https://..., mailto:
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        assert resolved.exists(), f"{page.relative_to(ROOT)}: {target} does not exist"
        assert ROOT in resolved.parents or resolved == ROOT, f"{target} leaves the repository"
        if anchor and resolved.suffix == ".md":
            assert anchor in _anchors(resolved), f"{page.relative_to(ROOT)}: no #{anchor}"


def test_performance_headings_name_what_they_measure() -> None:
    headings = [
        line
        for line in (ROOT / "docs" / "performance.md").read_text().splitlines()
        if line.startswith("#")
    ]
    assert headings
    for heading in headings:
        assert not re.search(r"\(issue \d+\)", heading), heading


def _block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    after = text.split(f"<!-- readme-check: {name} -->", 1)[1]
    return after.split("```", 2)[1].removeprefix("sh\n").strip()


def test_the_readme_installs_into_a_virtual_environment_and_states_the_python_version() -> None:
    install = _block("install")
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install .")
    assert "thinghub serve" in install
    assert "make test" in _block("test")
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    version = required.removeprefix(">=")
    assert f"Python {version} or newer" in (ROOT / "README.md").read_text()
    # CI runs exactly these lines (scripts/readme-check.sh reads them from the README).
    assert "scripts/readme-check.sh" in (ROOT / ".ci" / "run").read_text()
    assert "readme-check: install" in (ROOT / "scripts" / "readme-check.sh").read_text()
