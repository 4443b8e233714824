"""CancelOnDisconnect: a GET whose client leaves is cancelled; nothing else is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from thinghub.faces._disconnect import CancelOnDisconnect

Message = dict[str, Any]


class Client:
    """The server side of one request, as an ASGI server presents it."""

    def __init__(self, body: bytes = b"") -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})
        self.sent: list[Message] = []
        self.complete = False

    async def receive(self) -> Message:
        if self.complete:
            return {"type": "http.disconnect"}
        message = await self.inbox.get()
        return message

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
            self.inbox.put_nowait({"type": "http.disconnect"})

    def disconnect(self) -> None:
        self.inbox.put_nowait({"type": "http.disconnect"})


def scope(method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None) -> Message:
    return {"type": "http", "method": method, "path": "/v1/telemetries", "headers": headers or []}


class SlowApp:
    """A handler awaiting a long query; notes whether it finished or was cancelled."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self.started = asyncio.Event()
        self.cancelled = False
        self.finished = False
        self.first: Message | None = None

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.first = await receive()
        self.started.set()
        try:
            await asyncio.sleep(self.seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})
        self.finished = True


async def test_a_get_whose_client_leaves_is_cancelled() -> None:
    app, client = SlowApp(), Client()
    request = asyncio.create_task(CancelOnDisconnect(app)(scope(), client.receive, client.send))
    await app.started.wait()
    assert app.first == {"type": "http.request", "body": b"", "more_body": False}
    client.disconnect()
    async with asyncio.timeout(5):
        await request  # returns quietly: nobody is left to answer
    assert app.cancelled and not app.finished and client.sent == []
    assert not request.cancelled()


async def test_a_get_answered_is_not_cancelled_afterwards() -> None:
    app, client = SlowApp(0.01), Client()
    await CancelOnDisconnect(app)(scope("HEAD"), client.receive, client.send)
    assert app.finished and not app.cancelled
    assert [m["type"] for m in client.sent] == ["http.response.start", "http.response.body"]


@pytest.mark.parametrize(
    ("method", "headers"),
    [("POST", []), ("DELETE", []), ("GET", [(b"content-length", b"5")])],
    ids=["post", "delete", "get-with-body"],
)
async def test_requests_that_may_change_state_run_to_their_end(
    method: str, headers: list[tuple[bytes, bytes]]
) -> None:
    app, client = SlowApp(0.3), Client(b"hello")
    request = asyncio.create_task(
        CancelOnDisconnect(app)(scope(method, headers), client.receive, client.send)
    )
    await app.started.wait()
    client.disconnect()
    async with asyncio.timeout(5):
        await request
    assert app.finished and not app.cancelled


async def test_a_cancellation_from_outside_still_propagates() -> None:
    app, client = SlowApp(), Client()
    request = asyncio.create_task(CancelOnDisconnect(app)(scope(), client.receive, client.send))
    await app.started.wait()
    request.cancel()  # e.g. the server shutting down
    with pytest.raises(asyncio.CancelledError):
        await request
    assert app.cancelled
