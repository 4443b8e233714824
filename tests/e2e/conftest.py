"""E2E fixtures: one real server per test module, plus a factory for tests that need their own."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import ServerProcess, running

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(ServerProcess(tmp_path_factory.mktemp("thinghub"))) as proc:
        yield proc


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, data_dir: Path | None = None, **kwargs: object) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path / f"srv{len(started)}", *args, **kwargs).start()  # type: ignore[arg-type]
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names per test, so tests sharing a server never collide."""
    return lambda prefix="x": f"{prefix}-{uuid.uuid4().hex[:10]}"
