"""The edge process: the composition root that builds the parts and runs them together.

`async with Edge(settings) as edge:` opens the queue, the state and the board, binds the
local API (port 0 = ephemeral; `edge.addresses` has what was bound), and runs in one
TaskGroup: the port supervisors, the cloud link and the HTTP/WebSocket server. Leaving the
block stops the server first (no new requests), then the cloud link and the ports, then
closes the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from thinghub import __version__

from .api import EdgeApi, build_app
from .board import Board, BoardError
from .board_linux import LinuxBoard
from .board_sim import SimulatedBoard
from .cloud import CloudLink, ModuleSpec
from .config import EdgeSettings
from .ports import PortManager, PortNotConnectedError
from .queue import ForwardQueue
from .schemas import MAX_MESSAGE_BYTES
from .state import EdgeState
from .update import Updater

__all__ = ["Edge", "make_board", "write_ready_file"]

logger = logging.getLogger(__name__)

#: Seconds the HTTP server gets to finish requests at shutdown.
SHUTDOWN_GRACE_S = 3.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the CLI owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def make_board(settings: EdgeSettings) -> Board:
    if settings.board == "simulated":
        return SimulatedBoard(settings.simulated)
    options = dict(settings.board_options)
    return LinuxBoard(
        sysfs=Path(options.get("sysfs_root", "/sys")),
        serial_number=options.get("serial_number"),
        thermal_zone=options.get("thermal_zone"),
        led=options.get("led"),
        led_green=options.get("led_green"),
        led_red=options.get("led_red"),
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def write_ready_file(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class Edge:
    """The running edge. Use as an async context manager."""

    def __init__(self, settings: EdgeSettings) -> None:
        self.settings = settings
        self.addresses: dict[str, Any] = {}
        self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Edge:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._exit.aclose()

    async def _start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = EdgeState(s.data_dir / "state.json", s.ports)
        self.queue = await self._exit.enter_async_context(
            ForwardQueue(s.data_dir / "queue.sqlite", s.queue_max_items)
        )
        self.board = make_board(s)
        self.ports = PortManager(self.state, self.queue, self._clock)
        self.updater = Updater(s.update, s.data_dir, self.state)
        self.cloud = CloudLink(
            s.cloud,
            self.queue,
            modules=self._modules,
            reported=self._reported,
            on_method=self._method,
            enabled=self.state.cloud_connection,
        )
        self.ports.on_change.append(self.cloud.modules_changed)
        api = EdgeApi(
            board=self.board,
            state=self.state,
            ports=self.ports,
            queue=self.queue,
            cloud=self.cloud,
            updater=self.updater,
        )
        sock = _bind(s.listen_host, s.listen_port)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        config = uvicorn.Config(
            build_app(api, s.api_token),
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            ws_max_size=MAX_MESSAGE_BYTES,
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        )
        server = _Server(config)

        tasks = asyncio.TaskGroup()
        await tasks.__aenter__()
        self._exit.push_async_exit(tasks.__aexit__)
        background = [
            tasks.create_task(self.ports.run(), name="edge.ports"),
            tasks.create_task(self.cloud.run(), name="edge.cloud"),
        ]
        serving = tasks.create_task(server.serve(sockets=[sock]), name="edge.http")

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_GRACE_S * 2):
                    await asyncio.wait([serving])
            for task in background:
                task.cancel()

        self._exit.push_async_callback(stop)
        async with asyncio.timeout(30):
            while not server.started:
                if serving.done():
                    raise OSError(f"the local API did not start on {host}:{port}")
                await asyncio.sleep(0.01)
        self.addresses = {
            "http": {"host": host, "port": port, "url": f"http://{shown}:{port}"},
            "version": __version__,
            "pid": os.getpid(),
            "data_dir": str(s.data_dir.resolve()),
            "board": self.board.name,
            "gateway": s.cloud.connection.device_id if s.cloud.connection else None,
            "ports": sorted(self.ports.ports),
            "token_required": s.api_token is not None,
        }
        logger.info("edge api on http://%s:%d (board %s)", shown, port, self.board.name)

    def _clock(self) -> float:
        try:
            return float(self.board.now())
        except BoardError:
            return time.time()

    def _modules(self) -> list[ModuleSpec]:
        return [
            ModuleSpec(p.settings.module, p.settings.module_key, n)
            for n, p in sorted(self.ports.ports.items())
            if p.settings.has_stream
        ]

    def _reported(self) -> dict[str, Any]:
        try:
            serial = self.board.serial_number()
        except BoardError:
            serial = None
        return {
            "version": self.state.installed_version or __version__,
            "board": self.board.name,
            "serialNumber": serial,
            "ports": {
                str(n): {"module": p.settings.module, "commType": p.settings.comm_type}
                for n, p in sorted(self.ports.ports.items())
            },
        }

    async def _method(self, module: str | None, name: str, payload: Any) -> tuple[int, Any]:
        """Direct methods: `getInfo` on the gateway, `write` on a port's module."""
        if module is None:
            if name == "getInfo":
                return 200, {**self._reported(), "queue": self.queue.stats().as_json()}
            return 404, {"message": f"the gateway has no method {name!r}; it has getInfo"}
        if name != "write":
            return 404, {"message": f"module {module!r} has no method {name!r}; it has write"}
        port = next((p for p in self.ports.ports.values() if p.settings.module == module), None)
        message = payload.get("message") if isinstance(payload, dict) else None
        if port is None or not isinstance(message, str):
            return 400, {"message": 'write takes {"message": "text"}'}
        try:
            written = await port.write(message.encode("utf-8"))
        except PortNotConnectedError as exc:
            return 409, {"message": str(exc)}
        return 200, {"portNumber": port.number, "written": written}
