"""HTTP connection limits: uvicorn's httptools protocol with bounded heads, timeouts and a cap.

Theory of operation. uvicorn (with httptools) reads whatever a client sends: httptools joins
the pieces of a header value with `bytes +=` until the header ends, so one endless header costs
memory and quadratic CPU, and nothing times out a request whose head never ends (slowloris).
`LimitedHttpProtocol` is uvicorn's protocol plus five checks, each a named setting
(docs/limits.md, "HTTP limits"):

- Head size and count. The request line and header lines of one request may hold at most
  `max_head_bytes` bytes and `max_headers` headers. The parser callbacks count them exactly
  (on_url, on_header); while a head is still incomplete, every chunk read is counted too, so a
  head that never ends is cut off after at most one read (256 KiB) past the limit instead of
  being buffered forever. Over either limit: 431 and close.
- Head timeout. A head must be complete `head_timeout_s` after the connection opened (first
  request) or after its first byte arrived (later requests on a keep-alive connection):
  otherwise 408 and close (a connection that never sent a byte is just closed).
- Body timeout. Once the head is complete, the whole body must arrive within
  `body_timeout_s`: otherwise 408 (when no response has started) and close; the application
  sees the client as gone.
- Idle keep-alive. uvicorn's own timer (`timeout_keep_alive`) closes a connection that sends
  nothing for that long after a response.
- Connection cap. At most `max_connections` connections per listener. A new connection over
  the cap closes the longest-idle connection that has no request in progress (an idle
  keep-alive connection or an unfinished head, which is what a slowloris holds); when every
  connection is busy with a request, the new one is answered 503 and closed at once.

Refusals (431, 408) are written with `Connection: close`, then the write side is shut and what
the client still sends is read and dropped for at most LINGER_S (and LINGER_MAX_BYTES), so the
client reads the answer instead of a reset. A request answered before its body was read (401,
413) has the rest of its body parsed and dropped, up to DRAIN_MAX_BYTES and within the body
timeout; then the connection is usable again. The happy path costs two attribute checks per read
and one counter per header; no timer is armed for a request whose head and body arrive in one
read.

One write per answer. uvicorn writes a response's head and its body with a write (a send
system call, a TCP segment) each; the request's cycle writes to a `_HeldHead` instead, which
holds the head and sends it with the body's first bytes in one write. A head whose body does
not follow within the same step of the event loop (a stream waiting for its first event) goes
out alone at the next step, so no client waits longer for a head than before. What is written
and its order do not change.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

__all__ = ["HttpLimits", "LimitedHttpProtocol", "protocol_class"]

logger = logging.getLogger(__name__)

# After a refusal, read and drop the rest of what the client sends for at most this long and
# this much, so it sees the answer (closing with unread data makes the kernel send a reset).
LINGER_S = 1.0
LINGER_MAX_BYTES = 4 * 1024 * 1024
# A request answered before its body was read (401, 413) may still send that much of the body
# (clients send the whole body before reading the answer); the rest is parsed and dropped and
# the connection stays usable. More than this and the connection is closed.
DRAIN_MAX_BYTES = 16 * 1024 * 1024
HEADER_LINE_OVERHEAD_BYTES = 4  # ": " and CRLF of each header line


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """The limits of one HTTP listener (values come from the settings)."""

    max_head_bytes: int  # request line + header lines of one request
    max_headers: int  # header lines of one request
    head_timeout_s: float  # from connection open (or a request's first byte) to head complete
    body_timeout_s: float  # from head complete to the last byte of the body
    keepalive_timeout_s: float  # idle time after a response before the connection is closed
    max_connections: int  # open connections per listener


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limits."""


def _plain_response(status: bytes, text: bytes, extra: bytes = b"") -> bytes:
    return b"".join(
        [
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ",
            str(len(text)).encode("ascii"),
            b"\r\n",
            extra,
            b"connection: close\r\n\r\n",
            text,
        ]
    )


HEAD_TOO_LARGE = _plain_response(
    b"431 Request Header Fields Too Large", b"Request header fields too large\n"
)
REQUEST_TIMEOUT = _plain_response(b"408 Request Timeout", b"Request timeout\n")
OVER_CAPACITY = _plain_response(
    b"503 Service Unavailable", b"Too many connections\n", b"retry-after: 1\r\n"
)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above. Use `protocol_class(limits)`."""

    limits: HttpLimits
    # The connections of this listener with no request in progress, oldest first: the ones
    # a new connection over the cap may close. Shared by the listener's protocol instances.
    evictable: dict[LimitedHttpProtocol, None]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_open = False  # a request head has begun and is not complete
        self._body_open = False  # the head is complete, the body is not
        self._head_size = 0  # bytes of the current head, counted by the parser callbacks
        self._head_read = 0  # bytes read while the current head was incomplete
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._dropping = -1  # >= 0 once refused: bytes read and dropped since
        self._drain_left = -1  # >= 0 while the body of an answered request is dropped

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self.limits
        if len(self.connections) > limits.max_connections and not self._evict_one():
            logger.debug(
                "refused an HTTP connection from %s: %d connections, all busy",
                self.client,
                limits.max_connections,
            )
            self.connections.discard(self)
            transport.write(OVER_CAPACITY)
            transport.close()
            return
        self.evictable[self] = None
        self._head_timer = self.loop.call_later(limits.head_timeout_s, self._head_timed_out)

    def _evict_one(self) -> bool:
        """Close the longest-idle connection with no request in progress, if there is one."""
        for victim in self.evictable:
            del self.evictable[victim]
            logger.debug("closed an idle HTTP connection of %s (connection cap)", victim.client)
            victim._cancel_timers()
            victim.transport.close()
            # Not counted any more: connection_lost comes later, but the place is free now.
            victim.connections.discard(victim)
            return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.evictable.pop(self, None)
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # -- reading ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._dropping >= 0:
            self._dropping += len(data)
            if self._dropping > LINGER_MAX_BYTES:
                self.transport.close()
            return
        if self._drain_left >= 0:
            self._drain_left -= len(data)
            if self._drain_left < 0:
                logger.debug("closed HTTP connection of %s: body of an answered request "
                             "over %d bytes", self.client, DRAIN_MAX_BYTES)  # fmt: skip
                self.transport.close()
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._refuse(HEAD_TOO_LARGE, "431", str(exc.__context__))
                return
            self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._head_open:
            # The head is still incomplete: httptools holds all of it, so bound it by the
            # bytes read (the callbacks only see a header once it is whole).
            self._head_read += len(data)
            if self._head_read > self.limits.max_head_bytes:
                self._refuse(HEAD_TOO_LARGE, "431", f"head over {self._head_read} bytes")
                return
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(
                    self.limits.head_timeout_s, self._head_timed_out
                )
        elif self._body_open:
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(
                    self.limits.body_timeout_s, self._body_timed_out
                )
        elif self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            # Bytes that begin no request (blank lines) still may not hold the connection.
            self._head_timer = self.loop.call_later(
                self.limits.head_timeout_s, self._head_timed_out
            )

    def _bad_request(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self._cancel_timers()
        self.send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open = True
        self._head_size = 0
        self._head_read = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._head_size += len(url)
        if self._head_size > self.limits.max_head_bytes:
            raise _HeadTooLarge(f"request line over {self.limits.max_head_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + HEADER_LINE_OVERHEAD_BYTES
        if self._head_size > self.limits.max_head_bytes:
            raise _HeadTooLarge(f"head over {self.limits.max_head_bytes} bytes")
        if len(self.headers) >= self.limits.max_headers:
            raise _HeadTooLarge(f"more than {self.limits.max_headers} headers")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._body_open = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.evictable.pop(self, None)  # busy until its response is complete
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:
            cycle.transport = _HeldHead(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._body_open = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if self._drain_left >= 0:  # the dropped body of an answered request is over
            self._drain_left = -1
            if not self.transport.is_closing() and not self.pipeline:
                self.evictable[self] = None
                self._unset_keepalive_if_required()
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if self._body_open:
            # Answered before the body was read in full (413, 401): the rest is parsed and
            # dropped, up to DRAIN_MAX_BYTES and until the body timeout.
            self._drain_left = DRAIN_MAX_BYTES
        elif not self.pipeline:
            self.evictable[self] = None  # idle again: last in line to be evicted

    def handle_websocket_upgrade(self) -> None:
        # The WebSocket protocol takes the connection over; these limits are for HTTP only.
        self.evictable.pop(self, None)
        self._cancel_timers()
        self._head_open = self._body_open = False
        super().handle_websocket_upgrade()

    # -- timeouts and refusals -------------------------------------------------------------

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is still being written (the next head is the slow one): finish
            # it, read nothing more, then close.
            self.cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if self._head_open:
            self._refuse(REQUEST_TIMEOUT, "408", "request head timed out")
        else:
            self.transport.close()  # nothing of a request arrived: no answer to give

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._body_open:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            cycle.disconnected = True  # the application's answer is not sent any more
            cycle.message_event.set()
            logger.debug("HTTP 408 to %s: request body timed out", self.client)
            self.transport.write(REQUEST_TIMEOUT)
            self._linger()
        else:
            if cycle is not None:
                cycle.disconnected = True
                cycle.message_event.set()
            self.transport.close()

    def _refuse(self, response: bytes, status: str, why: str) -> None:
        """Answer a request head with `response` (it says Connection: close), then linger and
        close. `self.cycle`, if any, is an earlier request's."""
        logger.debug("HTTP %s to %s: %s", status, self.client, why)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A pipelined request broke the rules while earlier ones are still being answered:
            # their answers go out whole and in order, then the connection closes.
            self._cancel_timers()
            self._head_open = self._body_open = False
            self.evictable.pop(self, None)
            cycle.keep_alive = False
            self._dropping = 0
            return
        self.transport.write(response)
        self._linger()

    def _linger(self) -> None:
        """Shut the write side, then read and drop what comes for a while before closing."""
        self._cancel_timers()
        self._head_open = self._body_open = False
        self.evictable.pop(self, None)
        self._dropping = 0
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()


class _HeldHead:
    """The transport one request's cycle writes to: its first write (the response head) is
    held and sent with the next one (the body) in one write; if no write follows within this
    step of the event loop, it goes out alone at the next. Everything else is the transport's.
    """

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = b""  # b"": nothing written yet; None: held no more

    def write(self, data: bytes) -> None:
        held = self._held
        if held is None:
            self._transport.write(data)
        elif held:
            self._held = None
            self._transport.write(held + data)
        else:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        held = self._held
        self._held = None
        if held and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def protocol_class(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """A protocol class for one listener (pass it as uvicorn.Config(http=...)): the limits
    and the registry of evictable connections belong to that listener."""

    class Listener(LimitedHttpProtocol):
        pass

    Listener.limits = limits
    Listener.evictable = {}
    return Listener
