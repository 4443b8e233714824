"""Tests for thinghub.app: faces plug in through one registration, whatever they speak.

A test-only face with a WebSocket route, a route at the HTTP root and a TCP listener of its
own is registered next to the real ones, and the real composition root (ThingHub) serves it.
Unlike the other unit tests this one binds sockets: ephemeral ports on 127.0.0.1, for a few
seconds, because what is under test is that app.py mounts, binds and starts what a face
registers.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect

from thinghub.app import ThingHub
from thinghub.config import Settings
from thinghub.domain.errors import Error
from thinghub.faces import FACES
from thinghub.faces.face import Face, FaceContext, FaceParts

DEADLINE_S = 10.0


class EchoListener:
    """A TCP server of the face's own: answers each line with the line."""

    def __init__(self) -> None:
        self.started = 0
        self.closed = False
        self._server: asyncio.Server | None = None

    @property
    def name(self) -> str:
        return "echo_tcp"

    async def start(self) -> tuple[str, int]:
        self.started += 1
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"echo " + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def close(self) -> None:
        self.closed = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class EchoWorker:
    """Background work of the face: records when it ran, was stopped and was cancelled."""

    def __init__(self) -> None:
        self.running = asyncio.Event()
        self.events: list[str] = []

    @property
    def name(self) -> str:
        return "ticker"

    async def run(self) -> None:
        self.events.append("run")
        self.running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.events.append("cancelled")
            raise

    async def stop(self) -> None:
        self.events.append("stop")


def render_echo_error(error: Error, status: int) -> Response:
    return JSONResponse({"echoError": error.message}, status_code=status)


@dataclasses.dataclass
class EchoFace:
    """The registration and what its builds made (to look at afterwards)."""

    listeners: list[EchoListener] = dataclasses.field(default_factory=list)
    workers: list[EchoWorker] = dataclasses.field(default_factory=list)

    def build(self, context: FaceContext) -> FaceParts:
        async def echo(websocket: WebSocket) -> None:
            await websocket.accept()
            text = await websocket.receive_text()
            # the face reaches the core only through its context: services and settings
            account = await context.services.auth.ensure_account()
            await websocket.send_text(f"{text} from {account.name}")
            await websocket.close()

        async def hello(request: Request) -> Response:
            return PlainTextResponse(f"hello {context.settings.hub_hostname}")

        listener = EchoListener()
        self.listeners.append(listener)
        # one worker for every build: what the builds share lives in context.shared
        worker = context.shared.setdefault("echo", EchoWorker())
        self.workers.append(worker)
        return FaceParts(
            app=Starlette(routes=[Route("/hello", hello), WebSocketRoute("/ws", echo)]),
            root_routes=(WebSocketRoute("/echo-socket", echo),),
            listeners=(listener,),
            workers=(worker,),
        )

    def face(self) -> Face:
        return Face(
            name="echo",
            prefix="/echo",
            native_prefix="/native",
            build=self.build,
            render_error=render_echo_error,
            docs=None,
        )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[ThingHub, EchoFace]]:
    settings = dataclasses.replace(
        Settings.defaults(),
        data_dir=tmp_path,
        http_port=0,
        mqtt_port=0,
        itwin_ws_port=0,
        itwin_tcp_port=0,
        face_listen=("echo=127.0.0.1:0",),
        log_level="warning",
    )
    echo = EchoFace()
    async with asyncio.timeout(60), ThingHub(settings, faces=(*FACES, echo.face())) as hub:
        yield hub, echo
    assert all(listener.closed for listener in echo.listeners if listener.started)
    # stopped first (before the HTTP servers), cancelled with the loops
    assert echo.workers[0].events == ["run", "stop", "cancelled"]


async def ws_roundtrip(url: str, text: str) -> Any:
    async with asyncio.timeout(DEADLINE_S), connect(url) as ws:
        await ws.send(text)
        return await ws.recv()


async def test_a_registered_face_is_mounted_at_its_prefix(
    served: tuple[ThingHub, EchoFace],
) -> None:
    hub, _ = served
    base = hub.addresses["http"]["url"]
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE_S) as http:
        assert (await http.get("/echo/hello")).text == "hello localhost"
        index = (await http.get("/")).json()
        assert index["faces"] == {
            "st": "/v1",
            "central": "/central/api",
            "ioto": "/ioto/api",
            "ux4iot": "/ux4iot",
            "itwin": "/itwin/api",
            "echo": "/echo",
        }
        assert index["docs"] == {
            "st": "/v1/docs",
            "central": "/central/api/docs",
            "ioto": "/ioto/api/docs",
            "ux4iot": "/ux4iot/docs",
            "itwin": "/itwin/api/docs",
        }
        # a path under its prefix that never reaches its app (a control character: no mount
        # takes it) is answered in the face's own error shape
        missing = await http.get("/echo/a%0Ab")
        assert missing.status_code == 404
        assert list(missing.json()) == ["echoError"]
        # ... and the other faces keep theirs
        assert "error" in (await http.get("/v1/a%0Ab")).json()
    ws = base.replace("http://", "ws://")
    assert await ws_roundtrip(f"{ws}/echo/ws", "hi") == "hi from default"
    assert await ws_roundtrip(f"{ws}/echo-socket", "root") == "root from default"


async def test_its_listener_is_started_and_named_in_the_ready_line(
    served: tuple[ThingHub, EchoFace],
) -> None:
    hub, echo = served
    address = hub.addresses["echo_tcp"]
    assert address["host"] == "127.0.0.1" and address["port"] > 0
    async with asyncio.timeout(DEADLINE_S):
        reader, writer = await asyncio.open_connection(address["host"], address["port"])
        writer.write(b"ping\n")
        assert await reader.readline() == b"echo ping\n"
        writer.close()
        await writer.wait_closed()
    # built twice (the shared port, its own port), its listener started once
    assert [listener.started for listener in echo.listeners] == [1, 0]


async def test_its_worker_runs_once_whatever_the_builds(served: tuple[ThingHub, EchoFace]) -> None:
    _, echo = served
    assert len(echo.workers) == 2 and echo.workers[0] is echo.workers[1]
    async with asyncio.timeout(DEADLINE_S):
        await echo.workers[0].running.wait()
    assert echo.workers[0].events == ["run"]


async def test_face_listen_serves_it_at_the_root_and_its_native_prefix(
    served: tuple[ThingHub, EchoFace],
) -> None:
    hub, _ = served
    own = hub.addresses["faces"]["echo"]["url"]
    async with httpx.AsyncClient(base_url=own, timeout=DEADLINE_S) as http:
        assert (await http.get("/hello")).text == "hello localhost"
        assert (await http.get("/native/hello")).text == "hello localhost"
        assert (await http.get("/v1/devices")).status_code == 404  # other faces are not here
        missing = await http.get("/a%0Ab")  # nothing takes it: the face's error shape
        assert missing.status_code == 404
        assert list(missing.json()) == ["echoError"]
    ws = own.replace("http://", "ws://")
    assert await ws_roundtrip(f"{ws}/ws", "own") == "own from default"
    assert await ws_roundtrip(f"{ws}/echo-socket", "own root") == "own root from default"


async def test_a_listener_may_not_take_a_ready_line_key(tmp_path: Path) -> None:
    class Taken(EchoListener):
        @property
        def name(self) -> str:
            return "http"

    face = Face("bad", "/bad", "", lambda _: FaceParts(listeners=(Taken(),)))
    settings = dataclasses.replace(
        Settings.defaults(),
        data_dir=tmp_path,
        http_port=0,
        mqtt_port=0,
        itwin_ws_port=0,
        itwin_tcp_port=0,
        log_level="warning",
    )
    with pytest.raises(ValueError, match="listener name 'http' is taken"):
        async with asyncio.timeout(60), ThingHub(settings, faces=(*FACES, face)):
            pass
