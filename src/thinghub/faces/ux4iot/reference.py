"""The ux4iot face's Socket.IO reference page (HTML, served by thinghub at
`/ux4iot/socketio`): what its OpenAPI document cannot say about the live channel."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import HTMLResponse

from thinghub.faces.ux4iot.live import (
    MAX_INBOUND_BYTES,
    NAMESPACES,
    PING_INTERVAL_S,
    PING_TIMEOUT_S,
)

__all__ = ["REFERENCE_PATH", "socketio_reference"]

REFERENCE_PATH = "/socketio"  # under the face's prefix

# (kind, the property that tells it, the payload of the `data` event)
PAYLOADS = (
    ("telemetry", "telemetry", '{"deviceId", "timestamp", "telemetry": {"temperature": 21.5}}'),
    (
        "connection state",
        "connectionState (v2 sessions: connected)",
        '{"deviceId", "timestamp", "connectionState": true}',
    ),
    (
        "twin",
        "deviceTwin",
        '{"deviceId", "timestamp", "deviceTwin": {"version", "properties": {...}}}',
    ),
    ("device-to-cloud message", "message", '{"deviceId", "timestamp", "message": <the body>}'),
)


async def socketio_reference(request: Request) -> HTMLResponse:
    rows = "".join(
        f"<tr><td>{html.escape(kind)}</td><td><code>{html.escape(key)}</code></td>"
        f"<td><code>{html.escape(payload)}</code></td></tr>"
        for kind, key, payload in PAYLOADS
    )
    namespaces = ", ".join(f"<code>{html.escape(n)}</code>" for n in NAMESPACES)
    body = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<title>thinghub ux4iot: Socket.IO reference</title></head><body>"
        "<h1>ux4iot live channel (Socket.IO)</h1>"
        "<p>Connect to <code>/socket.io/?EIO=4&amp;transport=polling|websocket&amp;"
        "sessionId=SESSION</code> (Socket.IO protocol 5 over Engine.IO 4) and join namespace "
        f"{namespaces} (<code>/ux4iot</code> for an Endpoint ending in <code>/ux4iot</code>). "
        "Create the session first with <code>POST /ux4iot/session</code> (header "
        "<code>Shared-Access-Key</code>), then grant and subscribe over REST "
        "(<a href='docs'>Swagger UI</a>).</p>"
        "<p>The client never emits; everything arrives as the event <code>data</code> with one "
        "JSON object, whose property tells its kind:</p>"
        "<table border='1' cellpadding='4'><tr><th>kind</th><th>property</th>"
        f"<th>payload</th></tr>{rows}</table>"
        "<p>A socket whose session is unknown, expired or deleted is accepted and at once "
        "disconnected by the server (&quot;io server disconnect&quot;), so the client opens a "
        f"new session. Heartbeats: ping every {PING_INTERVAL_S} s, timeout {PING_TIMEOUT_S} s; "
        f"a client may post at most {MAX_INBOUND_BYTES // 1024} KiB at once.</p>"
        "</body></html>"
    )
    return HTMLResponse(body)
