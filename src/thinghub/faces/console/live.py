"""The console's live channel: one WebSocket per page, fed by services.live.

Theory of operation: a page opens `/console/live` once, with `?device=ID` (a device's page)
or `?devices=ID,ID,...` (the devices shown on a page of the list). The handshake must come
from this site (Origin) with a live session; then the channel holds ONE `watch_for` of the
caller's principal (so it sees what the caller sees, on whichever node an event was
published) and turns each event into a small JSON message:

| message | when | fields |
| --- | --- | --- |
| `connection` | a device connected or disconnected | `device`, `connected`, `time` |
| `activity` | a device sent telemetry (at most once a second per device) | `device`, `time` |
| `telemetry` | (device page) a message with numbers | `ts`, `time`, `values` |
| `twin` | (device page) a twin section changed | `section`, `version`, `properties`, ... |
| `event` | (device page) an event was stored | `time`, `eventType`, `summary` |
| `device` | a device was created, updated or deleted | `device`, `operation`, `enabled` |

A channel first sends the present state of what its page shows (each device's `connection`,
with its last activity as `time` and `snapshot: true`; on a device's page also `device` and
both twin sections), read after it subscribed, so nothing that changed between rendering the
page and opening the channel is missed.

Three tasks run under one TaskGroup: the pump (events to messages), the reader (notices the
browser leaving) and the session check (every SESSION_CHECK_S; a logged-out or expired
session closes the channel with code 4401, and the page goes to the login form). When one
ends, the others are cancelled and the bus subscription is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from thinghub.domain.errors import NotFound
from thinghub.domain.ids import parse_id
from thinghub.domain.live import (
    ConnectionChanged,
    DeviceChanged,
    EventRecorded,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
)
from thinghub.domain.model import Principal
from thinghub.faces.console.views import event_summary, numeric_values, show_time
from thinghub.faces.console.web import Caller, Console, LoginRequired

__all__ = ["ACTIVITY_EVERY_S", "SESSION_CHECK_S", "routes"]

logger = logging.getLogger(__name__)

# A signed-out (or deleted user's) session's channels close within this, on every node: each
# open channel reads its session from the database this often (one primary-key lookup).
SESSION_CHECK_S = 1.0
ACTIVITY_EVERY_S = 1.0  # `activity` messages per device at most this often
MAX_LIST_DEVICES = 100  # ids a list page may watch (a page shows 25)
CLOSE_SESSION_ENDED = 4401
CLOSE_REFUSED = 4403
CLOSE_NOT_FOUND = 4404


class _Watch:
    """What one channel watches and how it turns events into messages."""

    def __init__(self, console: Console, principal: Principal, device: str | None,
                 devices: frozenset[str]) -> None:  # fmt: skip
        self.console = console
        self.principal = principal
        self.device = device  # a device's page
        self.devices = devices  # a list page's devices
        self._activity: dict[str, float] = {}

    def stream(self) -> AsyncGenerator[LiveEvent, None]:
        live = self.console.services.live
        if self.device is not None:
            return live.watch_for(self.principal, device_id=self.device)
        return live.watch_for(self.principal, kinds=("connection", "telemetry", "device"))

    def watched(self) -> list[str]:
        return [self.device] if self.device is not None else sorted(self.devices)

    async def snapshot(self) -> list[dict[str, Any]]:
        """The present state of what the page shows live, read after the stream subscribed:
        what changed between rendering the page and opening this channel is not missed (a
        later change also arrives as an event; applying both is harmless)."""
        services = self.console.services
        out: list[dict[str, Any]] = []
        for device_id in self.watched():
            try:
                device = await services.registry.get_device(self.principal, device_id)
            except NotFound:
                continue  # deleted meanwhile: its `device` event says so
            connected = await services.registry.is_connected(device_id)
            out.append({"type": "connection", "device": device_id, "connected": connected,
                        "time": show_time(device.last_activity_at), "snapshot": True})  # fmt: skip
            if self.device is not None:
                out.append({"type": "device", "device": device_id, "operation": "updated",
                            "mine": True, "enabled": device.enabled})  # fmt: skip
                twin = await services.twins.get(device)
                for name, section in (("desired", twin.desired), ("reported", twin.reported)):
                    out.append({"type": "twin", "section": name, "version": section.version,
                                "twinVersion": twin.version, "properties": section.properties,
                                "time": show_time(section.last_updated)})  # fmt: skip
        return out

    def _activity_due(self, device_id: str) -> bool:
        now = time.monotonic()
        if now - self._activity.get(device_id, -ACTIVITY_EVERY_S) < ACTIVITY_EVERY_S:
            return False
        self._activity[device_id] = now
        return True

    async def messages(self, event: LiveEvent) -> list[dict[str, Any]]:
        device_id = event.device_id
        mine = device_id == self.device or device_id in self.devices
        if isinstance(event, ConnectionChanged):
            if not mine:
                return []
            return [{"type": "connection", "device": device_id, "connected": event.connected,
                     "time": show_time(event.ts)}]  # fmt: skip
        if isinstance(event, TelemetryReceived):
            if not mine:
                return []
            out: list[dict[str, Any]] = []
            if self._activity_due(device_id):
                out.append({"type": "activity", "device": device_id, "time": show_time(event.ts)})
            if self.device is not None:
                values = numeric_values(
                    event.account_id, device_id, event.ts, event.body, event.component
                )
                if values:
                    out.append({"type": "telemetry", "ts": event.ts, "time": show_time(event.ts),
                                "values": values})  # fmt: skip
            return out
        if isinstance(event, TwinChanged):
            return [await self._twin(event)]
        if isinstance(event, EventRecorded):
            return [{"type": "event", "time": show_time(event.event.ts),
                     "eventType": event.event.type.value,
                     "summary": event_summary(event.event)}]  # fmt: skip
        if isinstance(event, DeviceChanged):
            enabled = None
            if event.operation != "deleted" and mine:
                try:
                    found = await self.console.services.registry.get_device(
                        self.principal, device_id
                    )
                except NotFound:
                    found = None
                enabled = None if found is None else found.enabled
            return [{"type": "device", "device": device_id, "operation": event.operation,
                     "mine": mine, "enabled": enabled}]  # fmt: skip
        return []

    async def _twin(self, event: TwinChanged) -> dict[str, Any]:
        services = self.console.services
        device = await services.registry.get_device(self.principal, event.device_id)
        twin = await services.twins.get(device)
        section = twin.desired if event.section == "desired" else twin.reported
        return {
            "type": "twin",
            "section": event.section,
            "version": section.version,
            "twinVersion": twin.version,
            "properties": section.properties,
            "time": show_time(section.last_updated),
        }


def _list_ids(text: str) -> frozenset[str]:
    ids = [part for part in text.split(",") if part][:MAX_LIST_DEVICES]
    return frozenset(parse_id(part, "devices") for part in ids)


async def live(websocket: WebSocket) -> None:
    console: Console = websocket.app.state.console
    if not console.same_origin(websocket):
        await websocket.close(code=CLOSE_REFUSED)
        return
    try:
        caller = await console.caller(websocket)
    except LoginRequired:
        await websocket.close(code=CLOSE_SESSION_ENDED)
        return
    params = websocket.query_params
    device = params.get("device")
    try:
        devices = _list_ids(params.get("devices", ""))
        if device is not None:
            await console.services.registry.get_device(caller.principal, device)
    except Exception:  # an unknown or malformed id: nothing to watch
        await websocket.close(code=CLOSE_NOT_FOUND)
        return
    await websocket.accept()
    watch = _Watch(console, caller.principal, device, devices)
    async with asyncio.TaskGroup() as tasks:
        running = [
            tasks.create_task(_pump(websocket, watch), name="console.live.pump"),
            tasks.create_task(_read(websocket), name="console.live.read"),
            tasks.create_task(_check(console, caller, websocket), name="console.live.session"),
        ]
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
        for task in running:
            task.cancel()


async def _pump(websocket: WebSocket, watch: _Watch) -> None:
    stream = watch.stream()  # subscribed from here on
    try:
        for message in await watch.snapshot():
            await websocket.send_text(orjson.dumps(message).decode())
        async for event in stream:
            for message in await watch.messages(event):
                await websocket.send_text(orjson.dumps(message).decode())
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the browser left while we were sending
    except NotFound:
        pass  # the device was deleted while we looked it up
    finally:
        await stream.aclose()


async def _read(websocket: WebSocket) -> None:
    """Wait for the browser to leave (it sends nothing else that matters)."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError):
        return


async def _check(console: Console, caller: Caller, websocket: WebSocket) -> None:
    """Close the channel once its session has ended (logout, expiry, deleted user)."""
    while True:
        await asyncio.sleep(SESSION_CHECK_S)
        session = await console.store.get(caller.session.id, console.now())
        alive = session is not None and session.access_token is not None
        if alive and session is not None and session.access_token is not None:
            try:
                await console.services.auth.authenticate_bearer(session.access_token)
            except Exception:
                alive = False
        if not alive:
            with contextlib.suppress(RuntimeError, OSError):
                await websocket.close(code=CLOSE_SESSION_ENDED)
            return


def routes() -> list[BaseRoute]:
    return [WebSocketRoute("/live", live)]
