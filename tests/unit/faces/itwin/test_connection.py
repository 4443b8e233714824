"""Tests for thinghub.faces.itwin.connection: one JSON-RPC connection over a transport.

A small method table stands in for the API: requests run in order, a stream's chunks come
before its separate `finished`, subscriptions run beside later requests and stop when
unsubscribed (nothing after the answer), frame errors close TCP but not WebSocket, repeated
authentication failures close, our own bugs are answered -32603 and the connection goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import Field

from tests.unit.faces.itwin.conftest import FakeTransport
from thinghub.domain import errors
from thinghub.faces.itwin.connection import Call, RpcConnection
from thinghub.faces.itwin.framing import FrameError
from thinghub.faces.itwin.jsonrpc import INVALID_REQUEST, PARSE_ERROR
from thinghub.faces.itwin.methods import ACKNOWLEDGED, MethodTable
from thinghub.faces.itwin.params import NoParams, RpcParams, UnsubscribeParams
from thinghub.faces.itwin.utility import MAX_AUTH_FAILURES, add_utility_methods


class EchoParams(RpcParams):
    value: int = Field(default=0)


def table(log: list[str], pushes: asyncio.Queue[int]) -> MethodTable[Call]:
    methods: MethodTable[Call] = MethodTable()

    async def authenticate(call: Call, code: str) -> None:
        if code != "key":
            call.session.auth_failures += 1
            raise errors.Unauthorized("wrong code")
        call.session.principal = object()  # type: ignore[assignment]

    add_utility_methods(methods, authenticate=authenticate, now=lambda: 0.0)

    @methods.call("slow", EchoParams, summary="answers after the others queued behind it")
    async def slow(call: Call, params: EchoParams) -> int:
        log.append(f"slow {params.value} start")
        await asyncio.sleep(0.01)
        log.append(f"slow {params.value} end")
        return params.value

    @methods.stream("count", EchoParams, summary="value chunks")
    async def count(call: Call, params: EchoParams) -> AsyncIterator[Any]:
        for i in range(params.value):
            log.append(f"chunk {i}")
            yield {"data": {str(i): i}}

    @methods.subscription("watch", NoParams, summary="pushes what the test puts")
    async def watch(call: Call, params: NoParams) -> AsyncIterator[Any]:
        try:
            yield ACKNOWLEDGED
            while True:
                yield {"data": await pushes.get()}
        finally:
            log.append(f"watch {call.request_id} ended")

    @methods.call("unwatch", UnsubscribeParams, summary="ends a watch")
    async def unwatch(call: Call, params: UnsubscribeParams) -> bool:
        if not await call.session.unsubscribe(params.id, frozenset({"watch"})):
            raise errors.NotFound("no such subscription", field="id")
        log.append(f"unwatched {params.id}")
        return True

    @methods.call("bug", NoParams, summary="our own bug")
    async def bug(call: Call, params: NoParams) -> None:
        raise KeyError("boom")

    return methods


def req(method: str, request_id: Any = None, **params: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "params": params}
    if request_id is not None:
        out["id"] = request_id
    return out


async def feed(values: list[Any]) -> AsyncIterator[Any]:
    for value in values:
        yield value


async def test_requests_run_in_order_and_streams_end_with_a_separate_finished() -> None:
    log: list[str] = []
    transport = FakeTransport()
    connection = RpcConnection(table(log, asyncio.Queue()), transport)
    await connection.serve(
        feed([req("authenticate", 0, code="key"), req("slow", 1, value=1), req("count", 2, value=2),
              req("slow", "3", value=3)]),
        close_on_frame_error=True,
    )  # fmt: skip
    assert log == ["slow 1 start", "slow 1 end", "chunk 0", "chunk 1", "slow 3 start", "slow 3 end"]
    assert [(m["id"], m.get("result")) for m in transport.sent] == [
        (0, {"nextId": 1}),
        (1, 1),
        (2, {"data": {"0": 0}}),
        (2, {"data": {"1": 1}}),
        (2, {"requestStatus": "finished"}),
        (3, 3),
    ]


class Client:
    """Requests a test sends while the connection runs; `end()` is the client leaving."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()

    def send(self, value: Any) -> None:
        self._queue.put_nowait(value)

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def values(self) -> AsyncIterator[Any]:
        while (value := await self._queue.get()) is not None:
            yield value


async def test_a_subscription_runs_beside_later_requests_until_unsubscribed() -> None:
    log: list[str] = []
    pushes: asyncio.Queue[int] = asyncio.Queue()
    transport = FakeTransport()
    connection = RpcConnection(table(log, pushes), transport)
    client = Client()
    served = asyncio.create_task(connection.serve(client.values(), close_on_frame_error=False))
    for value in (req("authenticate", 0, code="key"), req("watch", 70_001), req("time", 2)):
        client.send(value)
    messages = await transport.wait_for(3)
    by_id = {m["id"]: m["result"] for m in messages}
    assert by_id[70_001] == {"requestStatus": "acknowledged"} and "time" in by_id[2]
    await pushes.put(5)
    messages = await transport.wait_for(4)
    assert messages[3]["id"] == 70_001 and messages[3]["result"] == {"data": 5}
    # Unsubscribing (by the subscribe request's id, a string here) waits for the end: nothing
    # of the subscription follows the answer.
    client.send(req("unwatch", 3, id="70001"))
    messages = await transport.wait_for(5)
    assert messages[4] == {"jsonrpc": "2.0", "id": 3, "result": True}
    assert log[-2:] == ["watch 70001 ended", "unwatched 70001"]
    await pushes.put(6)
    client.send(req("time", 4))
    messages = await transport.wait_for(6)
    assert messages[5]["id"] == 4
    assert all(m.get("result") != {"requestStatus": "finished"} for m in messages)
    client.send(req("unwatch", 5, id=70_001))  # gone
    messages = await transport.wait_for(7)
    assert messages[6]["error"]["code"] == -32004
    client.end()
    await served
    assert all(m.get("result") != {"data": 6} for m in transport.messages())


async def test_the_end_of_the_connection_cancels_its_subscriptions() -> None:
    log: list[str] = []
    transport = FakeTransport()
    connection = RpcConnection(table(log, asyncio.Queue()), transport)
    client = Client()
    served = asyncio.create_task(connection.serve(client.values(), close_on_frame_error=True))
    for value in (req("authenticate", 0, code="key"), req("watch", 1), req("watch", 2)):
        client.send(value)
    await transport.wait_for(3)  # both acknowledged: running
    client.send(req("watch", 2))  # an id in use is refused
    messages = await transport.wait_for(4)
    assert messages[3]["id"] == 2 and messages[3]["error"]["code"] == INVALID_REQUEST
    client.end()
    await asyncio.wait_for(served, 5)
    assert sorted(line for line in log if "ended" in line) == ["watch 1 ended", "watch 2 ended"]
    assert connection.session.subscriptions == {}


async def test_frame_errors_close_tcp_but_not_websocket() -> None:
    for close, expected in ((True, 1), (False, 2)):
        transport = FakeTransport()
        connection = RpcConnection(table([], asyncio.Queue()), transport)
        await connection.serve(
            feed([FrameError("invalid JSON: x"), req("authenticate", 0, code="key")]),
            close_on_frame_error=close,
        )
        assert len(transport.sent) == expected
        assert transport.sent[0] == {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": PARSE_ERROR, "message": "Parse error: invalid JSON: x"},
        }


async def test_repeated_authentication_failures_close_the_connection() -> None:
    transport = FakeTransport()
    connection = RpcConnection(table([], asyncio.Queue()), transport)
    wrong = [req("authenticate", i, code="nope") for i in range(MAX_AUTH_FAILURES + 2)]
    await connection.serve(feed(wrong), close_on_frame_error=False)
    assert [m["error"]["code"] for m in transport.sent] == [-32002] * MAX_AUTH_FAILURES


async def test_our_bugs_are_answered_and_the_connection_goes_on(caplog: Any) -> None:
    transport = FakeTransport()
    connection = RpcConnection(table([], asyncio.Queue()), transport)
    await connection.serve(
        feed([req("authenticate", 0, code="key"), req("bug", 1), req("bug"), req("time", 2)]),
        close_on_frame_error=True,
    )
    assert transport.sent[1] == {
        "jsonrpc": "2.0",
        "id": 1,
        "error": {"code": -32603, "message": "Internal error"},
    }
    assert transport.sent[2]["id"] == 2 and "time" in transport.sent[2]["result"]
    assert "boom" in caplog.text  # logged with its traceback, never sent


async def test_a_client_gone_mid_stream_ends_the_connection_quietly() -> None:
    transport = FakeTransport()
    connection = RpcConnection(table([], asyncio.Queue()), transport)
    transport.is_closed = True
    await connection.serve(
        feed([req("time", 1), req("count", 2, value=3)]), close_on_frame_error=True
    )
    assert transport.sent == []


async def test_braces_in_strings_are_escaped_on_a_byte_stream_only() -> None:
    """A TCP client counts braces to find a message's end, so its answers escape the braces
    inside strings (here the id's); a WebSocket frame delimits the message, so there they
    are written as they are. Both parse to the same message."""
    frames = {}
    for delimits in (False, True):
        transport = FakeTransport(delimits_messages=delimits)
        connection = RpcConnection(table([], asyncio.Queue()), transport)
        await connection.serve(
            feed([req("authenticate", "{a}", code="key"), req("count", "{b}", value=1)]),
            close_on_frame_error=True,
        )
        frames[delimits] = transport.frames
        assert [(m["id"], m["result"]) for m in transport.sent] == [
            ("{a}", {"nextId": 1}),
            ("{b}", {"data": {"0": 0}}),
            ("{b}", {"requestStatus": "finished"}),
        ]
    assert all(f.count(b"{") == f.count(b"}") and b'"{' not in f for f in frames[False])
    assert all(b'"id":"{b}"' in f for f in frames[True][1:])
