"""`GET /v1/devices/{id}/stream`: a device's live telemetry and events as Server-Sent Events.

Theory of operation: the route authenticates like every /v1 route and looks the device up
for the caller (another account's device, or one outside a project-limited token's project,
is 404), then opens one live subscription (`services.live.watch_for`, one bus subscription)
before it answers, so nothing published after the `ready` event is missed. A pump task moves
events from the subscription into a bounded queue; the response reads the queue and writes a
comment line every KEEPALIVE_S while it is quiet, so proxies keep the connection and a gone
client is noticed. The stream ends when the client goes, when the server shuts down (the bus
closes its subscriptions) or when the device is deleted.

A client that reads slower than events come loses the oldest (the bus drops them for a
subscriber that is far behind, and so does the queue): this is what is happening now, the
store is the record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import AfterValidator
from starlette.responses import StreamingResponse

from thinghub.domain.clock import format_ts
from thinghub.domain.errors import Invalid
from thinghub.domain.live import (
    ConnectionChanged,
    DeviceChanged,
    EventRecorded,
    LiveEvent,
    TelemetryReceived,
    TwinChanged,
)
from thinghub.domain.model import Principal
from thinghub.faces._http import principal_of, services_of
from thinghub.services.live import KINDS

__all__ = ["KEEPALIVE_S", "QUEUE_EVENTS", "event_json", "router"]

KEEPALIVE_S = 15.0  # a comment line this often while nothing happens
QUEUE_EVENTS = 1000  # events waiting for a slow client; then the oldest go

router = APIRouter()


def event_json(event: LiveEvent) -> dict[str, Any]:
    """One live event as the stream's JSON (the `data:` of an SSE event named `kind`)."""
    out: dict[str, Any] = {"kind": event.kind, "deviceId": event.device_id}
    if isinstance(event, TelemetryReceived):
        out.update(
            timestamp=format_ts(event.ts),
            body=event.body,
            properties=event.properties,
            component=event.component,
            source=event.source,
            messageId=event.message_id,
        )
    elif isinstance(event, ConnectionChanged):
        out.update(
            connectionState="Connected" if event.connected else "Disconnected",
            timestamp=format_ts(event.ts),
        )
    elif isinstance(event, TwinChanged):
        out.update(section=event.section, patch=event.patch, version=event.version)
    elif isinstance(event, EventRecorded):
        out.update(
            eventType=event.event.type.value,
            timestamp=format_ts(event.event.ts),
            body=event.event.body,
        )
    elif isinstance(event, DeviceChanged):
        out.update(operation=event.operation)
    return out


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _kinds(value: str | None) -> frozenset[str]:
    if not value:
        return KINDS
    wanted = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = wanted - KINDS
    if unknown or not wanted:
        raise Invalid(
            f"kinds must name some of {', '.join(sorted(KINDS))}; got {value!r}", field="kinds"
        )
    return wanted


async def _pump(source: AsyncIterator[LiveEvent], queue: asyncio.Queue[LiveEvent | None]) -> None:
    try:
        async for event in source:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
    finally:
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(None)  # the subscription ended (shutdown): end the response


async def _events(
    device_id: str, subscribe: Callable[[], AsyncGenerator[LiveEvent, None]]
) -> AsyncGenerator[bytes, None]:
    # Subscribed when the response starts, before `ready`: a response never started (the
    # client left at once) holds no subscription.
    source = subscribe()
    queue: asyncio.Queue[LiveEvent | None] = asyncio.Queue(QUEUE_EVENTS)
    pump = asyncio.create_task(_pump(source, queue), name=f"st.stream[{device_id}].pump")
    try:
        yield _sse("ready", {"deviceId": device_id})
        while True:
            try:
                async with asyncio.timeout(KEEPALIVE_S):
                    event = await queue.get()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event is None:
                return
            yield _sse(event.kind, event_json(event))
            if isinstance(event, DeviceChanged) and event.operation == "deleted":
                return
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await source.aclose()


Kinds = Annotated[str | None, Query(), AfterValidator(lambda value: value or None)]
Caller = Annotated[Principal, Depends(principal_of())]


@router.get(
    "/devices/{device_id}/stream",
    tags=["devices"],
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `ready`, then `telemetry`, `connection`, "
            "`twin`, `event` and `device` events, each a JSON object",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_device(
    device_id: Annotated[str, Path(), AfterValidator(str.strip)],
    request: Request,
    caller: Caller,
    kinds: Kinds = None,
) -> StreamingResponse:
    """A device's live telemetry, connection changes, twin changes, events and record
    changes, as Server-Sent Events, until the client goes away or the device is deleted.

    `kinds` (comma-separated: telemetry, connection, twin, event, device) picks some.
    """
    services = services_of(request)
    wanted = _kinds(kinds)
    device = await services.registry.get_device(caller, device_id)

    def subscribe() -> AsyncGenerator[LiveEvent, None]:
        return services.live.watch_for(caller, kinds=wanted, device_id=device.id)

    return StreamingResponse(
        _events(device.id, subscribe),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
