"""Tests for the package layering: imports point inward (docs/architecture.md, "Import rules").

Every module under src/thinghub is parsed with ast (nothing is imported), every import in it is
collected -- at module level, inside functions and under TYPE_CHECKING alike, since a lazy
import is still an arrow -- and each rule of RULES is checked against the whole graph.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "thinghub"

STDLIB = "<stdlib>"  # any module of the standard library
THIRD_PARTY = "<third-party>"  # any installed distribution outside thinghub


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # dotted name of the importing module
    target: str  # dotted name of what it imports (a submodule when `from pkg import mod`)
    line: int


@dataclass(frozen=True, slots=True)
class Rule:
    """`importers` (module prefixes) may import `only` the listed targets, or `never` them.

    A target is a dotted prefix, STDLIB or THIRD_PARTY. `exempt` lists importers the rule
    does not apply to. `apart` rules forbid one sub-package of `importers` importing a sibling,
    except the shared siblings named in `only`.
    """

    name: str
    importers: tuple[str, ...]
    kind: str  # "only" | "never" | "apart"
    targets: tuple[str, ...]
    why: str
    exempt: tuple[str, ...] = ()


# The layering, as data. Read a row as: modules under `importers` may import `only` these /
# `never` these. Concrete adapters (storage, bus) are picked in app.py and cli.py alone.
# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("domain-is-pure", ("thinghub.domain",), "only", (STDLIB, "thinghub.domain"),
         "domain/ is the core model: stdlib only, no framework, no other layer"),
    Rule("mqtt-is-pure", ("thinghub.mqtt",), "only", (STDLIB, "thinghub.mqtt"),
         "mqtt/ is a sans-IO codec: stdlib only, and not even the domain"),
    Rule("mqtt-is-sans-io", ("thinghub.mqtt",), "never", ("asyncio", "socket", "logging", "time"),
         "mqtt/ owns no sockets, tasks, logs or clocks; time is an argument"),
    Rule("ports-over-domain", ("thinghub.ports",), "only",
         (STDLIB, "thinghub.domain", "thinghub.ports"),
         "ports/ names interfaces in domain terms only"),
    Rule("http-errors-over-domain", ("thinghub.http_errors",), "only",
         (STDLIB, "thinghub.domain"),
         "the HTTP status of a domain error is shared by the REST faces (devices answer with "
         "devices/errors.py): it knows the domain only"),
    Rule("services-inward", ("thinghub.services",), "only",
         (STDLIB, THIRD_PARTY, "thinghub.domain", "thinghub.ports",
          "thinghub.security", "thinghub.services"),
         "services are use cases over ports: no faces, devices, storage, bus, config, app, cli"),
    Rule("services-not-adapters", ("thinghub.services",), "never",
         ("thinghub.bus", "thinghub.devices", "thinghub.faces", "thinghub.storage"),
         "services reach the bus, devices and storage through ports, never their adapters"),
    Rule("bus-inward", ("thinghub.bus",), "only",
         (STDLIB, THIRD_PARTY, "thinghub.domain", "thinghub.ports",
          "thinghub.services", "thinghub.bus"),
         "bus/ implements ports (bus, presence, locks, counter): it knows services, ports and "
         "the domain, never faces, devices or storage"),
    Rule("services-no-frameworks", ("thinghub.services",), "never",
         ("fastapi", "starlette", "pydantic", "uvicorn", "sqlalchemy", "alembic", "asyncpg",
          "click"),
         "services never take or return web or database framework types"),
    Rule("faces-apart", ("thinghub.faces",), "apart", ("_http", "face"),
         "faces share services, never each other; faces._http (plumbing) and faces.face "
         "(registration) are shared, and only the package itself lists every face (FACES)"),
    Rule("faces-not-storage", ("thinghub.faces",), "never", ("thinghub.storage",),
         "faces call services, never storage"),
    Rule("devices-not-storage", ("thinghub.devices",), "never", ("thinghub.storage",),
         "device adapters call services, never storage"),
    Rule("devices-not-faces", ("thinghub.devices",), "never", ("thinghub.faces",),
         "device adapters and API faces are both adapters over the services: neither imports "
         "the other"),
    Rule("storage-outward-only", ("thinghub.storage",), "never",
         ("thinghub.faces", "thinghub.devices", "thinghub.services", "thinghub.bus",
          "thinghub.app", "thinghub.cli"),
         "a backend implements a port; it knows the domain and ports, not its callers"),
    Rule("memory-store-has-no-database", ("thinghub.storage.memory",), "never",
         ("sqlite3", "asyncpg", "sqlalchemy", "alembic", "thinghub.storage.database",
          "thinghub.storage.sqlite", "thinghub.storage.postgres", "thinghub.storage.migrate"),
         "the memory backend is plain dicts: it shares the SQL row encoding, never a database"),
    Rule("edge-over-the-wire", ("thinghub.edge",), "never",
         ("thinghub.services", "thinghub.storage", "thinghub.faces", "thinghub.devices",
          "thinghub.domain", "thinghub.bus", "thinghub.app", "thinghub.config", "thinghub.cli",
          "thinghub.ports", "thinghub.http_server", "thinghub.simulator"),
         "thinghub edge is a device client of a cloud: it reaches the cloud over MQTT only, "
         "never through its services, storage, faces or device adapters"),
    Rule("edge-uses-public-mqtt", ("thinghub.edge",), "never",
         ("thinghub.mqtt._connection", "thinghub.mqtt.client", "thinghub.mqtt.codec",
          "thinghub.mqtt.errors", "thinghub.mqtt.events", "thinghub.mqtt.packets",
          "thinghub.mqtt.server", "thinghub.mqtt.states", "thinghub.mqtt.topics"),
         "the edge imports thinghub.mqtt's public names only, so its modules can move"),
    Rule("backends-wired-at-root", (PACKAGE,), "never", ("thinghub.storage", "thinghub.bus"),
         "app.py (and cli.py for offline commands) is the only place that picks adapters",
         exempt=("thinghub.app", "thinghub.cli", "thinghub.storage", "thinghub.bus")),
)
# fmt: on


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(source: str, module: str, known: set[str], is_package: bool = False) -> list[Import]:
    """Every import in `source`, as seen from `module`; `known` holds thinghub's modules."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(node, module, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(module, sub if sub in known else base, node.lineno))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append(Import(module, node.args[0].value, node.lineno))
    return found


def _all_imports() -> list[Import]:
    modules = _modules()
    known = set(modules)
    out: list[Import] = []
    for name, path in modules.items():
        out += imports_of(path.read_text(), name, known, path.name == "__init__.py")
    return out


def _matches(target: str, spec: str) -> bool:
    top = target.split(".")[0]
    if spec == STDLIB:
        return top in sys.stdlib_module_names or top == "__future__"
    if spec == THIRD_PARTY:
        return top != PACKAGE and top not in sys.stdlib_module_names and top != "__future__"
    return _under(target, spec)


def _face_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == [PACKAGE, "faces"] else None


def violations(rule: Rule, imports: list[Import]) -> list[str]:
    """What breaks `rule`, one line per import: `module:line imports target`."""
    bad: list[Import] = []
    for imp in imports:
        if not any(_under(imp.importer, p) for p in rule.importers):
            continue
        if any(_under(imp.importer, p) for p in rule.exempt):
            continue
        if rule.kind == "only":
            if not any(_matches(imp.target, t) for t in rule.targets):
                bad.append(imp)
        elif rule.kind == "never":
            if any(_matches(imp.target, t) for t in rule.targets):
                bad.append(imp)
        elif rule.kind == "apart":
            if imp.importer in rule.importers:  # the package itself registers its members
                continue
            mine, theirs = _face_of(imp.importer), _face_of(imp.target)
            if theirs is not None and theirs != mine and theirs not in rule.targets:
                bad.append(imp)
        else:
            raise ValueError(f"unknown rule kind {rule.kind!r}")
    return [f"{i.importer}:{i.line} imports {i.target}" for i in bad]


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    return _all_imports()


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_rule_holds(rule: Rule, graph: list[Import]) -> None:
    broken = violations(rule, graph)
    assert not broken, f"{rule.name}: {rule.why}\n  " + "\n  ".join(broken)


def test_the_walk_sees_the_whole_package(graph: list[Import]) -> None:
    modules = _modules()
    for expected in (
        "thinghub.domain.twin",
        "thinghub.services.core",
        "thinghub.app",
        "thinghub.faces.st.app",
        "thinghub.config",
    ):
        assert expected in modules
    edges = {(i.importer, i.target) for i in graph}
    # A module-level import, a lazy one inside a function, and a `from pkg import module`.
    assert ("thinghub.services.twins", "thinghub.domain.twin") in edges
    assert ("thinghub.cli._common", "thinghub.app") in edges
    assert ("thinghub.faces", "thinghub.faces.st") in edges


# -- the checker itself: each kind of rule catches what it should -----------------------------

KNOWN = {
    "thinghub.faces.st",
    "thinghub.faces.st.app",
    "thinghub.faces.central",
    "thinghub.faces.central.app",
    "thinghub.faces._http",
    "thinghub.mqtt.codec",
    "thinghub.mqtt.packets",
    "thinghub.domain.errors",
}


def _check(rule_name: str, module: str, source: str, is_package: bool = False) -> list[str]:
    rule = next(r for r in RULES if r.name == rule_name)
    return violations(rule, imports_of(source, module, KNOWN, is_package))


def test_only_rule_flags_third_party_and_other_layers() -> None:
    assert _check("domain-is-pure", "thinghub.domain.x", "import orjson") == [
        "thinghub.domain.x:1 imports orjson"
    ]
    assert _check("domain-is-pure", "thinghub.domain.x", "\n\nfrom thinghub.ports import Stores")
    assert _check("domain-is-pure", "thinghub.domain.x", "from thinghub.mqtt import codec")
    assert not _check(
        "domain-is-pure",
        "thinghub.domain.x",
        "from __future__ import annotations\nimport json\n"
        "from thinghub.domain.errors import Invalid",
    )


def test_lazy_and_type_checking_imports_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fastapi\n"
        "def f():\n    from thinghub.storage import sqlite\n"
    )
    assert _check("services-inward", "thinghub.services.x", source) == [
        "thinghub.services.x:5 imports thinghub.storage"
    ]
    assert _check("services-no-frameworks", "thinghub.services.x", source) == [
        "thinghub.services.x:3 imports fastapi"
    ]
    assert _check(
        "services-inward",
        "thinghub.services.x",
        "import importlib\nimportlib.import_module('thinghub.faces.st')",
    )


def test_relative_imports_resolve() -> None:
    assert not _check("mqtt-is-pure", "thinghub.mqtt.server", "from .codec import encode")
    assert not _check("mqtt-is-pure", "thinghub.mqtt", "from . import packets", is_package=True)
    assert _check("mqtt-is-pure", "thinghub.mqtt.server", "from ..domain import errors") == [
        "thinghub.mqtt.server:1 imports thinghub.domain.errors"
    ]
    assert _check("mqtt-is-sans-io", "thinghub.mqtt.server", "import time") == [
        "thinghub.mqtt.server:1 imports time"
    ]


def test_faces_apart_allows_own_face_and_http_only() -> None:
    module = "thinghub.faces.central.app"
    assert not _check("faces-apart", module, "from thinghub.faces._http import install_errors")
    assert not _check("faces-apart", module, "from thinghub.faces.central import app")
    assert _check("faces-apart", module, "from thinghub.faces import st") == [
        f"{module}:1 imports thinghub.faces.st"
    ]
    assert _check("faces-apart", "thinghub.faces._http", "from thinghub.faces.st import app")


def test_the_edge_reaches_the_cloud_over_the_wire_only() -> None:
    assert (
        _check("edge-over-the-wire", "thinghub.edge.cloud", "from thinghub.mqtt import Publish")
        == []
    )
    assert _check("edge-over-the-wire", "thinghub.edge.x", "from thinghub.services import core")
    assert _check(
        "edge-uses-public-mqtt",
        "thinghub.edge.x",
        "from thinghub.mqtt.client import ClientSession",
    )
    assert _check("edge-uses-public-mqtt", "thinghub.edge.x", "from thinghub.mqtt.states import X")


def test_exempt_modules_may_wire_backends() -> None:
    source = "from thinghub.storage.sqlite import SqliteDatabase"
    assert not _check("backends-wired-at-root", "thinghub.app", source)
    assert not _check("backends-wired-at-root", "thinghub.storage.sql.devices", source)
    assert _check("backends-wired-at-root", "thinghub.devices.x", source) == [
        "thinghub.devices.x:1 imports thinghub.storage.sqlite"
    ]


def test_the_memory_backend_may_share_rows_but_not_a_database() -> None:
    module = "thinghub.storage.memory.telemetry"
    assert not _check(
        "memory-store-has-no-database", module, "from thinghub.storage.sql._rows import to_us"
    )
    assert _check("memory-store-has-no-database", module, "import sqlite3") == [
        f"{module}:1 imports sqlite3"
    ]
    assert _check(
        "memory-store-has-no-database", module, "from thinghub.storage.sqlite import X"
    ) == [f"{module}:1 imports thinghub.storage.sqlite"]


def test_faces_apart_lets_the_package_list_its_faces() -> None:
    assert not _check("faces-apart", "thinghub.faces", "from thinghub.faces.st import FACE")
    assert not _check("faces-apart", "thinghub.faces.st", "from thinghub.faces.face import Face")
    assert _check("faces-apart", "thinghub.faces.face", "from thinghub.faces import st") == [
        "thinghub.faces.face:1 imports thinghub.faces.st"
    ]


def test_services_never_reach_adapters() -> None:
    for source in (
        "from thinghub.bus.memory import MemoryBus",
        "from thinghub.devices.links import LocalLinks",
        "from thinghub.faces import FACES",
    ):
        assert _check("services-not-adapters", "thinghub.services.x", source)
    assert not _check(
        "services-not-adapters", "thinghub.services.x", "from thinghub.ports import Bus"
    )
    assert not _check(
        "services-inward", "thinghub.services.x", "from thinghub.ports.cluster import Presence"
    )


def test_bus_and_devices_rules() -> None:
    assert not _check("bus-inward", "thinghub.bus.memory", "from thinghub.ports import Clock")
    assert _check("bus-inward", "thinghub.bus.memory", "from thinghub.devices import hub")
    assert _check("bus-inward", "thinghub.bus.memory", "from thinghub.faces import st")
    assert _check("devices-not-faces", "thinghub.devices.hub", "from thinghub.faces import _http")
    assert not _check("devices-not-faces", "thinghub.devices.hub", "from thinghub.ports import Bus")
