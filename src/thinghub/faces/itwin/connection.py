"""One JSON-RPC connection of the iTwin socket API, whatever carries it (TCP, WebSocket).

Theory of operation. The adapter (transports.py) reads its socket and hands this class the
decoded values in order (framing.FrameDecoder on TCP, one value per WebSocket message), or a
FrameError for bytes that are no JSON value. `serve` handles them one at a time, so requests
on one connection run in the order they came (a client may send authenticate and getData
back to back, as the documented Python TCP client does):

- a call's one answer, and every chunk of a stream, is sent with `Transport.send`, which
  waits until the socket's buffer has room: the next request is read (and a stream's next
  batch read from the store) only after that, so a slow reader slows its own connection;
- a subscription runs beside later requests, in the connection's TaskGroup, under the id of
  its subscribe request (which unsubscribe* names); its pushes are written by the fan-out
  (fanout.py) with `Transport.push`, which never waits and drops what a full buffer cannot
  take. Unsubscribing cancels the subscription and waits for it to end before answering,
  so no push follows the answer;
- a bad request gets its JSON-RPC error and the connection goes on. A FrameError is
  answered (id null); the adapter says whether the connection then closes (TCP: there is no
  resync in a byte stream) or goes on (WebSocket: the next message is a new value);
- after MAX_AUTH_FAILURES failed authenticate calls the connection closes;
- anything a handler raises that is not a domain error is our bug: logged, answered with
  -32603 (the message says nothing more) and the connection goes on.

When the values end (the client left, or the adapter closes) every subscription is
cancelled, and serve returns once they have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from thinghub.domain.metrics import Metric
from thinghub.domain.model import Principal
from thinghub.faces.itwin import jsonrpc
from thinghub.faces.itwin.framing import FrameError, encode_frame, encode_message
from thinghub.faces.itwin.jsonrpc import RequestId, RpcError
from thinghub.faces.itwin.methods import Invocation, MethodKind, MethodTable
from thinghub.faces.itwin.utility import MAX_AUTH_FAILURES

__all__ = [
    "MAX_REMEMBERED_METRICS",
    "Call",
    "RpcConnection",
    "Session",
    "Transport",
    "TransportClosed",
]

logger = logging.getLogger(__name__)

# getMetrics answers are remembered per connection so that getUnits can answer for a
# sensor's own metrics (its free-form ones are in no catalog): at most this many.
MAX_REMEMBERED_METRICS: Final = 4096


class TransportClosed(Exception):
    """The peer is gone: nothing more can be sent on this connection."""


class Transport(Protocol):
    """The socket under a connection."""

    @property
    def peer(self) -> str: ...

    @property
    def delimits_messages(self) -> bool:
        """True when the transport carries each message in its own frame (WebSocket): then a
        message is written without framing.encode_frame's brace escaping, which only a
        reader counting braces in a byte stream (TCP) needs."""

    async def send(self, frame: bytes) -> None:
        """Write one encoded message; return once the socket's buffer has room again.

        Raises:
            TransportClosed: the peer is gone.
        """

    def push(self, frame: bytes) -> bool:
        """Write one encoded message without waiting; False (and it is dropped) when the
        buffer is over its bound or the socket is closing."""

    async def close(self) -> None: ...


@dataclass(slots=True, eq=False)
class Session:
    """What one connection knows: who it is, its live subscriptions, what getMetrics said."""

    transport: Transport
    principal: Principal | None = None
    auth_failures: int = 0
    # subscribe request id -> (subscribe method, its task)
    subscriptions: dict[RequestId, tuple[str, asyncio.Task[None]]] = field(default_factory=dict)
    metrics: dict[str, Metric] = field(default_factory=dict)

    def remember(self, metrics: list[Metric]) -> None:
        if len(self.metrics) + len(metrics) > MAX_REMEMBERED_METRICS:
            self.metrics.clear()
        for metric in metrics:
            self.metrics[metric.id] = metric

    async def unsubscribe(self, request_id: RequestId, methods: frozenset[str]) -> bool:
        """Cancel the subscription made by request `request_id` with one of `methods` and wait
        for it to end; False when there is none."""
        found = self.subscriptions.get(request_id)
        if found is None or found[0] not in methods:
            return False
        del self.subscriptions[request_id]
        task = found[1]
        task.cancel()
        await asyncio.wait([task])
        return True


@dataclass(frozen=True, slots=True)
class Call:
    """What a method handler gets: the connection's session and the request's id."""

    session: Session
    request_id: RequestId


class RpcConnection:
    def __init__(self, table: MethodTable[Call], transport: Transport) -> None:
        self.table = table
        self.transport = transport
        self.session = Session(transport)
        self._encode = encode_message if transport.delimits_messages else encode_frame

    async def serve(self, values: AsyncIterator[Any], *, close_on_frame_error: bool) -> None:
        """Handle `values` (decoded JSON values, or FrameError) in order until they end, a
        FrameError closes the connection, or authentication failed too often."""
        async with asyncio.TaskGroup() as tasks:
            try:
                await self._serve(values, tasks, close_on_frame_error)
            except TransportClosed:
                pass  # the client left: nothing more to answer
            finally:
                for _, task in self.session.subscriptions.values():
                    task.cancel()
                self.session.subscriptions.clear()

    async def _serve(
        self, values: AsyncIterator[Any], tasks: asyncio.TaskGroup, close_on_frame_error: bool
    ) -> None:
        async for value in values:
            if isinstance(value, FrameError):
                await self._send(jsonrpc.error_message(RpcError(value.code, _frame_message(value))))
                if close_on_frame_error:
                    return
                continue
            if not await self._handle(value, tasks):
                return

    async def _send(self, message: dict[str, Any]) -> None:
        await self.transport.send(self._encode(message))

    async def _handle(self, value: Any, tasks: asyncio.TaskGroup) -> bool:
        """Handle one request; False when the connection must close."""
        try:
            request = jsonrpc.parse_request(value)
        except RpcError as exc:
            await self._send(jsonrpc.error_message(exc))
            return True
        session = self.session
        invocation = self.table.invoke(
            Call(session, request.id), request, is_authenticated=session.principal is not None
        )
        if invocation.kind is MethodKind.SUBSCRIPTION and invocation.error is None:
            if request.is_notification:
                return True  # nothing could be delivered (methods.py)
            if request.id in session.subscriptions:
                await self._send(
                    jsonrpc.error_message(
                        RpcError(
                            jsonrpc.INVALID_REQUEST,
                            f"Invalid Request: subscription {request.id!r} is live; "
                            "unsubscribe it or use another id",
                            id=request.id,
                        )
                    )
                )
                return True
            task = tasks.create_task(
                self._subscription(invocation), name=f"itwin.subscription[{self.transport.peer}]"
            )
            session.subscriptions[request.id] = (request.method, task)
            task.add_done_callback(lambda done: self._forget(request.id, done))
            return True
        failures = session.auth_failures
        await self._run(invocation)
        return not (session.auth_failures > failures and session.auth_failures >= MAX_AUTH_FAILURES)

    def _forget(self, request_id: RequestId, task: asyncio.Task[None]) -> None:
        found = self.session.subscriptions.get(request_id)
        if found is not None and found[1] is task:
            del self.session.subscriptions[request_id]

    async def _subscription(self, invocation: Invocation[Call]) -> None:
        with contextlib.suppress(TransportClosed):  # the client left; serve() ends the rest
            await self._run(invocation)

    async def _run(self, invocation: Invocation[Call]) -> None:
        request = invocation.request
        try:
            async for message in invocation.messages():
                await self._send(message)
        except (asyncio.CancelledError, TransportClosed):
            raise
        except Exception:
            logger.exception("itwin: %s from %s failed", request.method[:64], self.transport.peer)
            if not request.is_notification:
                await self._send(jsonrpc.internal_error(request.id))


def _frame_message(error: FrameError) -> str:
    prefix = "Parse error" if error.code == jsonrpc.PARSE_ERROR else "Invalid Request"
    return f"{prefix}: {error.message}"
