"""Tests for thinghub.http_server: the HTTP limits, on the protocol with a fake transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from thinghub.http_server import HttpLimits, LimitedHttpProtocol, protocol_class

LIMITS = HttpLimits(
    max_head_bytes=4096,
    max_headers=10,
    head_timeout_s=0.05,
    body_timeout_s=0.05,
    keepalive_timeout_s=5.0,
    max_connections=2,
)
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.writes: list[bytes] = []  # each write, as it came
        self.closed = False
        self.eof = False
        self.protocol: LimitedHttpProtocol | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)
        self.writes.append(bytes(data))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8080) if name in ("peername", "sockname") else default


class Wait:
    """An ASGI app: `/wait` answers once `release` is set, `/early` answers 413 without reading
    the body, anything else 200 at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/stream":  # the head at once, the body once released
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await self.release.wait()
            await send({"type": "http.response.body", "body": b"late"})
            return
        if scope["path"] == "/wait":
            await self.release.wait()
        status = 413 if scope["path"] == "/early" else 200
        if status == 200 and scope["method"] == "POST":
            while (await receive()).get("more_body"):
                pass
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", b"2")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def app() -> Wait:
    return Wait()


@pytest.fixture
def listener(app: Wait) -> Any:
    config = uvicorn.Config(app, http=protocol_class(LIMITS), lifespan="off", log_config=None)
    config.load()
    state = ServerState()

    def open_connection() -> tuple[LimitedHttpProtocol, FakeTransport]:
        protocol = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=state, app_state={}
        )
        assert isinstance(protocol, LimitedHttpProtocol)
        transport = FakeTransport()
        transport.protocol = protocol
        protocol.connection_made(transport)
        return protocol, transport

    return open_connection


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_honest_request_is_served_and_the_connection_kept(listener: Any) -> None:
    protocol, transport = listener()
    protocol.data_received(GET)
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert not transport.closed


async def test_an_answer_is_one_write_of_its_head_and_body(listener: Any) -> None:
    protocol, transport = listener()
    protocol.data_received(GET + GET)
    await settle()
    assert len(transport.writes) == 2  # two answers, one write each
    for write in transport.writes:
        assert write.startswith(b"HTTP/1.1 200 ") and write.endswith(b"\r\n\r\nok")


async def test_a_head_whose_body_is_not_ready_goes_out_alone(listener: Any, app: Wait) -> None:
    protocol, transport = listener()
    protocol.data_received(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await settle()
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 ")
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    app.release.set()
    await settle()
    assert transport.written.endswith(b"4\r\nlate\r\n0\r\n\r\n")
    assert not transport.closed


async def test_too_many_headers_get_431_then_a_lingering_close(listener: Any) -> None:
    protocol, transport = listener()
    lines = b"".join(b"X-%d: 1\r\n" % i for i in range(10))
    protocol.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in transport.written
    assert transport.eof and not transport.closed  # lingering: reads and drops what follows
    protocol.data_received(b"x" * 1000)
    assert transport.written.count(b"HTTP/1.1") == 1


async def test_a_head_that_never_ends_is_cut_off_after_one_read_past_the_limit(
    listener: Any,
) -> None:
    protocol, transport = listener()
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: ")
    fed = 0
    while not transport.written and fed < 100_000:
        protocol.data_received(b"a" * 1000)
        fed += 1000
    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert fed <= LIMITS.max_head_bytes + 1000


async def test_a_slow_head_gets_408_at_the_deadline_however_it_trickles(listener: Any) -> None:
    protocol, transport = listener()
    protocol.data_received(b"GET / HTTP/1.1\r\n")
    for _ in range(10):
        if transport.written:
            break
        protocol.data_received(b"X")
        await asyncio.sleep(0.01)
    await asyncio.sleep(LIMITS.head_timeout_s)
    assert transport.written.startswith(b"HTTP/1.1 408 ")


async def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    listener: Any,
) -> None:
    _, transport = listener()
    await asyncio.sleep(LIMITS.head_timeout_s * 2)
    assert transport.closed and transport.written == b""


async def test_a_stalled_body_gets_408(listener: Any) -> None:
    protocol, transport = listener()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
    await asyncio.sleep(LIMITS.body_timeout_s * 2)
    assert transport.written.startswith(b"HTTP/1.1 408 ")


async def test_over_the_cap_the_longest_idle_connection_is_closed(listener: Any) -> None:
    _, first = listener()
    second_protocol, second = listener()
    second_protocol.data_received(b"GET / HTTP/1.1\r\n")  # an unfinished head: evictable too
    _, third = listener()
    assert first.closed and not second.closed and not third.closed
    _, fourth = listener()
    assert second.closed and not fourth.closed


async def test_over_the_cap_with_every_connection_busy_the_new_one_gets_503(
    listener: Any, app: Wait
) -> None:
    busy = []
    for _ in range(2):
        protocol, transport = listener()
        protocol.data_received(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
        busy.append(transport)
    _, refused = listener()
    assert refused.written.startswith(b"HTTP/1.1 503 ") and refused.closed
    app.release.set()
    await settle()
    assert all(t.written.startswith(b"HTTP/1.1 200 ") and not t.closed for t in busy)


async def test_the_body_of_a_request_answered_early_is_dropped_and_the_connection_kept(
    listener: Any,
) -> None:
    protocol, transport = listener()
    protocol.data_received(b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n")
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 413 ")
    protocol.data_received(b"z" * 3000)  # the rest of the body: read and dropped
    protocol.data_received(GET)
    await settle()
    assert transport.written.count(b"HTTP/1.1 200 ") == 1
    assert not transport.closed


async def test_a_pipelined_head_over_the_limits_lets_earlier_answers_finish_first(
    listener: Any, app: Wait
) -> None:
    protocol, transport = listener()
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(20))
    protocol.data_received(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\n" + many)
    await settle()
    assert transport.written == b""  # no 431 before the first answer
    app.release.set()
    await settle()
    assert transport.written.startswith(b"HTTP/1.1 200 ")
    assert b"431" not in transport.written
    assert transport.closed
