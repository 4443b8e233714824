"""The instrument ports: each keeps its transport open, fans bytes out, parses lines.

Theory of operation
-------------------
Every configured port with a byte stream gets one supervisor task (`port[N]`) in the
manager's TaskGroup. While the port's deviceConnection is on, the task opens the transport,
reads until it fails, and opens it again after RETRY_S. Each chunk read goes, unchanged, to
every listener (the WebSocket clients of /ws/port/N), then through the port's delimiter
splitter and parser; each parsed line is committed to the store-and-forward queue before the
next chunk is read (the pty or UART buffers meanwhile), one transaction per
chunk. Reconfiguring or disabling a port
cancels its task and, when it should run, starts a new one with the new settings.

A listener is a bounded byte queue: a WebSocket client that reads slower than the instrument
writes is closed (reason "too slow") rather than growing the edge's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from .parser import LineParser, LineSplitter, make_parser
from .port_config import PortSettings, effective
from .queue import ForwardQueue
from .state import EdgeState
from .transport import PortTransport, TransportError, open_transport

__all__ = [
    "MAX_LISTENER_BACKLOG_BYTES",
    "Listener",
    "Port",
    "PortManager",
    "PortNotConnectedError",
    "observation_body",
]

logger = logging.getLogger(__name__)

#: Seconds between attempts to open a port that failed or is not there yet.
RETRY_S = 1.0
#: Bytes a WebSocket listener may fall behind before it is closed.
MAX_LISTENER_BACKLOG_BYTES = 1024 * 1024


class PortNotConnectedError(Exception):
    """The port is not open (disabled, unconfigured, or its device is missing)."""


def observation_body(values: dict[str, float | int], read_at: float) -> bytes:
    """The telemetry body of one parsed line: the metrics, and when the line was read."""
    stamp = datetime.fromtimestamp(read_at, UTC).isoformat(timespec="milliseconds")
    return json.dumps({**values, "readAt": stamp.replace("+00:00", "Z")}).encode()


class Listener:
    """One WebSocket client's share of a port's bytes."""

    def __init__(self, max_backlog: int = MAX_LISTENER_BACKLOG_BYTES) -> None:
        self._chunks: deque[bytes] = deque()
        self._backlog = 0
        self._max = max_backlog
        self._ready = asyncio.Event()
        self.closed_reason: str | None = None

    def offer(self, data: bytes) -> None:
        if self.closed_reason is not None:
            return
        if self._backlog + len(data) > self._max:
            self.close("too slow: fell more than 1 MiB behind the instrument")
            return
        self._chunks.append(data)
        self._backlog += len(data)
        self._ready.set()

    def close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self._ready.set()

    async def get(self) -> bytes | None:
        """The next bytes, or None once closed (after what was queued before)."""
        while not self._chunks:
            if self.closed_reason is not None:
                return None
            self._ready.clear()
            await self._ready.wait()
        data = self._chunks.popleft()
        self._backlog -= len(data)
        return data


class Port:
    """One instrument port: settings, transport, listeners, counters."""

    def __init__(self, settings: PortSettings) -> None:
        self.settings = settings
        self.transport: PortTransport | None = None
        self.listeners: set[Listener] = set()
        self.lines = 0  # lines split from the stream
        self.unparsed = 0  # lines the parser found no value in
        self.last_error: str | None = None
        self._write_lock = asyncio.Lock()

    @property
    def number(self) -> int:
        return self.settings.number

    @property
    def is_open(self) -> bool:
        return self.transport is not None

    async def write(self, data: bytes) -> int:
        transport = self.transport
        if transport is None:
            why = f": {self.last_error}" if self.last_error else ""
            raise PortNotConnectedError(f"port {self.number} is not connected{why}")
        async with self._write_lock:  # whole messages, never interleaved
            try:
                await transport.write(data)
            except OSError as exc:
                raise PortNotConnectedError(f"port {self.number}: writing failed: {exc}") from exc
        return len(data)

    def close_listeners(self, reason: str) -> None:
        for listener in list(self.listeners):
            listener.close(reason)
        self.listeners.clear()


Observe = Callable[[Port, dict[str, float | int], float], Awaitable[None]]


class PortManager:
    """All ports: their settings (edge.toml + API changes), tasks and listeners."""

    def __init__(self, state: EdgeState, queue: ForwardQueue, clock: Callable[[], float]) -> None:
        self.state = state
        self.queue = queue
        self.clock = clock
        self.ports: dict[int, Port] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._group: asyncio.TaskGroup | None = None
        self.on_change: list[Callable[[], None]] = []  # the cloud link follows the modules
        for number in state.port_numbers():
            self.ports[number] = Port(effective(number, state.properties(number)))

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        """Supervise every port until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            try:
                for number in list(self.ports):
                    self._start(number)
                await asyncio.Event().wait()  # until cancelled
            finally:
                self._group = None
                for port in self.ports.values():
                    port.close_listeners("the edge is stopping")

    def _start(self, number: int) -> None:
        old = self._tasks.pop(number, None)
        if old is not None:
            old.cancel()
        port = self.ports.get(number)
        if port is None or self._group is None:
            return
        if port.settings.has_stream and self.state.device_connection(number):
            self._tasks[number] = self._group.create_task(
                self._supervise(port), name=f"port[{number}]"
            )

    # -- changes from the API --------------------------------------------------------------

    def apply(self, number: int) -> None:
        """Re-read port `number`'s properties and restart it (new settings, on or off)."""
        props = self.state.properties(number)
        old = self.ports.get(number)
        if not props:
            self.ports.pop(number, None)
            if old is not None:
                old.close_listeners(f"port {number} was removed")
        else:
            port = Port(effective(number, props))
            if old is not None:
                port.listeners = old.listeners
            self.ports[number] = port
        self._start(number)
        for callback in self.on_change:
            callback()

    def set_enabled(self, number: int, enabled: bool) -> None:
        self.state.set_device_connection(number, enabled)
        port = self.ports.get(number)
        if port is not None and not enabled:
            port.close_listeners(f"port {number}: deviceConnection set to false")
        self._start(number)

    # -- the port task ---------------------------------------------------------------------

    async def _supervise(self, port: Port) -> None:
        settings = port.settings
        parser = make_parser(settings.regex, settings.json_paths)
        while True:
            try:
                transport = await open_transport(settings)
            except TransportError as exc:
                if port.last_error != str(exc):
                    logger.warning("%s; retrying every %g s", exc, RETRY_S)
                port.last_error = str(exc)
                await asyncio.sleep(RETRY_S)
                continue
            logger.info("port %d: open (%s)", port.number, settings.where())
            port.last_error = None
            port.transport = transport
            try:
                await self._pump(port, transport, parser)
                port.last_error = "the instrument closed the connection"
            except OSError as exc:
                port.last_error = f"read failed: {exc}"
            finally:
                port.transport = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(transport.close())
            logger.warning("port %d: %s; reopening", port.number, port.last_error)
            await asyncio.sleep(RETRY_S)

    async def _pump(self, port: Port, transport: PortTransport, parser: LineParser | None) -> None:
        splitter = LineSplitter(port.settings.delimiters)
        while data := await transport.read():
            for listener in list(port.listeners):
                listener.offer(data)
                if listener.closed_reason is not None:
                    port.listeners.discard(listener)
            if parser is None:
                continue
            rows = []
            for line in splitter.feed(data):
                port.lines += 1
                values = parser.parse(line)
                if values is None:
                    port.unparsed += 1
                    continue
                read_at = self.clock()
                body = observation_body(values, read_at)
                rows.append((port.settings.module, port.number, body, read_at))
            # One commit per chunk read: the lines of a burst share one fsync.
            await self.queue.put_many(rows)

    def describe(self) -> dict[str, Any]:
        return {
            str(n): {
                "open": p.is_open,
                "enabled": self.state.device_connection(n),
                "module": p.settings.module,
                "lines": p.lines,
                "unparsed": p.unparsed,
                "listeners": len(p.listeners),
                "error": p.last_error,
            }
            for n, p in sorted(self.ports.items())
        }
