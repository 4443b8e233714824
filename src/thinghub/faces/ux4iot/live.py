"""The ux4iot live channel: Socket.IO (python-socketio, Engine.IO v4) bound to sessions.

Theory of operation
-------------------
The browser opens `/socket.io/?EIO=4&transport=polling|websocket&sessionId=<id>` and joins
namespace `/` (Endpoint without a path) or `/ux4iot` (Endpoint `http://host/ux4iot`, or
`/ux4iot/` when written with a trailing slash). It never emits; it only listens for `data`.
So the socket's one job is to be a mailbox for its session: on connect it joins the room
named by the session id, and the fan-out sends each payload to the rooms of the sessions that
should get it (fanout.plan).

Unknown or expired sessions: the client must see a *server* disconnect ("io server
disconnect"), because that is what makes both ux4iot-react 2.0.2 and 4.x open a new session
(`POST /session`) after their 5 s back-off. So the server is built with `always_connect=True`
(CONNECT is acknowledged before the handler runs) and the handler disconnects the socket
itself, which sends a bare DISCONNECT packet. The two tempting alternatives fail (checked
with ux4iot-react 2.0.2 and a 4.x replay over socket.io-client 4.8.4, server restarted):
- `return False` without always_connect sends CONNECT_ERROR: 2.0.2 re-inits only on
  "io server disconnect", so it stays without a session for good. (4.x recovers after a
  restart, since its transport-close handler already dropped the socket, but by its source
  not when the first connect of a fresh socket is refused: its retry skips while
  `this.socket` is set.)
- `return False` with always_connect makes python-socketio 5.18 send DISCONNECT *with* a
  payload, which socket.io-parser 4.2.7 rejects ("parse error"), so the client reconnects
  forever with the dead session id.

Deleting a session disconnects its sockets the same way, so the client starts over.

Mount `asgi()` at `/socket.io` next to the REST routes (Starlette `Mount("/socket.io", ...)`)
on the same port; call `shutdown()` when the server stops (python-engineio runs a service
task for ping timeouts).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from thinghub.faces.ux4iot.fanout import Emit, LiveEvent, plan
from thinghub.faces.ux4iot.store import SessionStore

__all__ = [
    "MAX_INBOUND_BYTES",
    "NAMESPACES",
    "PING_INTERVAL_S",
    "PING_TIMEOUT_S",
    "LiveChannel",
]

logger = logging.getLogger(__name__)

# `/` for an Endpoint without a path, `/ux4iot` for the face's prefix (connection_string.py),
# and `/ux4iot/` for that Endpoint written with a trailing slash: socket.io-client joins the
# URL's path as it stands, while axios still reaches the REST routes under `/ux4iot`.
NAMESPACES = ("/", "/ux4iot", "/ux4iot/")
# Engine.IO heartbeats: socket.io's own defaults, which both clients expect.
PING_INTERVAL_S = 25
PING_TIMEOUT_S = 20
# The clients never send anything but handshakes and pings; bound what a peer may post.
MAX_INBOUND_BYTES = 64 * 1024

# Called after a socket joined its session: (session id, namespace). The face pushes v2
# sessions' last values here, since 2.0.2 may grant before its socket is connected.
OnAttach = Callable[[str, str], Awaitable[None]]


class _Server(socketio.AsyncServer):  # type: ignore[misc]  # python-socketio is untyped
    """python-socketio's server, answering a long poll left open by a client that closes.

    A polling client that disconnects sends Engine.IO CLOSE while its last GET still waits;
    python-engineio then ends the socket without answering that GET, so it hangs until the
    client's poll timeout (ping interval + ping timeout: 30 s; python-socketio's
    `disconnect()` waits for it). Node's engine.io answers it, and so does this: a NOOP,
    after which the client's read loop ends.
    """

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        await super()._handle_eio_disconnect(eio_sid, reason)
        if reason != self.eio.reason.CLIENT_DISCONNECT:
            return
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and not socket.upgraded:
            socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))


class LiveChannel:
    """The Socket.IO server of the ux4iot face. Holds no session state of its own: rooms are
    session ids, and the store says who exists and who watches what."""

    def __init__(
        self,
        store: SessionStore,
        now: Callable[[], float],
        *,
        namespaces: Iterable[str] = NAMESPACES,
        cors_allowed_origins: str | list[str] = "*",
        on_attach: OnAttach | None = None,
    ) -> None:
        self._store = store
        self._now = now
        self._on_attach = on_attach
        self.namespaces = tuple(namespaces)
        # socket id -> session id, per namespace (a session may hold several sockets).
        self._sockets: dict[tuple[str, str], str] = {}
        self.server = _Server(
            async_mode="asgi",
            always_connect=True,
            namespaces=list(self.namespaces),
            # Sessions are capabilities in the URL, not cookies: any origin may connect.
            cors_allowed_origins=cors_allowed_origins,
            transports=["polling", "websocket"],
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            max_http_buffer_size=MAX_INBOUND_BYTES,
            logger=False,
            engineio_logger=False,
        )
        for namespace in self.namespaces:
            self._handle(namespace)

    def asgi(self) -> Any:
        """The ASGI app to mount at `/socket.io` (it serves every path under the mount)."""
        return socketio.ASGIApp(self.server, socketio_path=None)

    async def shutdown(self) -> None:
        """End every socket (`close_all`), then python-engineio's service task."""
        await self.close_all()
        await self.server.shutdown()

    async def close_all(self) -> int:
        """Disconnect every socket the way a deleted session is (a bare DISCONNECT, so the
        clients open new sessions when the server is back), then close the Engine.IO
        connections, so no long poll or WebSocket holds the server's shutdown up."""
        closed = 0
        for namespace in self.namespaces:
            for sid, _ in list(self.server.manager.get_participants(namespace, None)):
                await self.server.disconnect(sid, namespace=namespace)
                closed += 1
        # Not eio.disconnect(): it closes with wait=True, which waits for each socket's queue
        # to drain, i.e. for a long-polling client to come back for it; a client that is gone
        # (or a WebSocket whose writer already ended) made that wait for ever at shutdown.
        eio = self.server.eio
        for socket in list(eio.sockets.values()):
            await socket.close(wait=False)  # queues CLOSE for whoever still reads
        eio.sockets.clear()
        return closed

    @property
    def socket_count(self) -> int:
        """Open Engine.IO connections (for the status route and tests)."""
        return len(self.server.eio.sockets)

    # -- sending -------------------------------------------------------------------------------

    async def publish(self, event: LiveEvent) -> int:
        """Send one device event to every session watching it; how many payloads went out."""
        emits = plan(self._store, event)
        await self.send(emits)
        return len(emits)

    async def send(self, emits: Sequence[Emit]) -> None:
        for emit in emits:
            await self.send_to(emit.session_ids, emit.payload)

    async def send_to(self, session_ids: Sequence[str], payload: dict[str, Any]) -> int:
        """Emit `data` to these sessions' sockets; how many sockets it was queued for.

        The packet is encoded once per namespace and queued on each socket in turn. This is
        what `AsyncServer.emit(to=rooms)` does, minus the asyncio task it creates per
        recipient (11 us each, which at 1,000 sessions x 1,000 msgs/s is 11 s of CPU per
        second). Queuing is non-blocking: engineio's per-socket writer sends it.
        """
        if not session_ids:
            # AsyncServer.emit reads an empty recipient list as "everyone": never pass one.
            return 0
        manager = self.server.manager
        queued = 0
        for namespace in self.namespaces:
            if namespace not in manager.rooms:
                continue
            targets = [eio_sid for _, eio_sid in manager.get_participants(namespace, session_ids)]
            if not targets:
                continue
            encoded = self.server.packet_class(
                sio_packet.EVENT, namespace=namespace, data=["data", payload]
            ).encode()
            message = eio_packet.Packet(eio_packet.MESSAGE, encoded)
            for eio_sid in targets:
                await self.server.eio.send_packet(eio_sid, message)
            queued += len(targets)
        return queued

    async def close_session(self, session_id: str) -> int:
        """Disconnect every socket of a (deleted) session; the client opens a new one."""
        closed = 0
        for namespace in self.namespaces:
            sids = [sid for sid, _ in self.server.manager.get_participants(namespace, session_id)]
            for sid in sids:
                await self.server.disconnect(sid, namespace=namespace)
                closed += 1
        return closed

    # -- connections ---------------------------------------------------------------------------

    def _handle(self, namespace: str) -> None:
        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            return await self._connect(namespace, sid, environ)

        async def disconnect(sid: str, reason: Any = None) -> None:
            await self._disconnect(namespace, sid)

        self.server.on("connect", connect, namespace=namespace)
        self.server.on("disconnect", disconnect, namespace=namespace)

    async def _connect(self, namespace: str, sid: str, environ: dict[str, Any]) -> bool:
        session_id = session_of(environ)
        info = await self._store.attach(session_id, self._now()) if session_id else None
        if info is None:
            # Acknowledged already (always_connect); a bare DISCONNECT makes the client open a
            # new session. Not `return False`: see the module docstring.
            logger.info("ux4iot socket %s refused: unknown or expired session", sid)
            await self.server.disconnect(sid, namespace=namespace)
            return True
        self._sockets[(namespace, sid)] = info.id
        await self.server.enter_room(sid, info.id, namespace=namespace)
        logger.debug("ux4iot socket %s joined session %s on %s", sid, info.id, namespace)
        if self._on_attach is not None:
            try:
                await self._on_attach(info.id, namespace)
            except Exception:  # a failed push must not break the socket; the data comes later
                logger.exception("ux4iot on_attach failed for session %s", info.id)
        return True

    async def _disconnect(self, namespace: str, sid: str) -> None:
        session_id = self._sockets.pop((namespace, sid), None)
        if session_id is not None:
            await self._store.detach(session_id, self._now())
            logger.debug("ux4iot socket %s left session %s", sid, session_id)


def session_of(environ: dict[str, Any]) -> str | None:
    """The `sessionId` query parameter of the Engine.IO handshake (None when absent)."""
    values = parse_qs(environ.get("QUERY_STRING", ""), max_num_fields=32).get("sessionId")
    return values[0] if values else None
