"""The iTwin face's JSON-RPC reference page (HTML, at `/itwin/api/jsonrpc`): every socket
method with its kind, summary and params, from the method table itself (what `help` answers),
so the page never drifts from what a connection accepts."""

from __future__ import annotations

import html
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from thinghub.faces.itwin.methods import MethodTable

__all__ = ["REFERENCE_PATH", "jsonrpc_reference"]

REFERENCE_PATH = "/jsonrpc"  # under the face's prefix


def _params(params: list[dict[str, Any]]) -> str:
    if not params:
        return "none"
    return "<br>".join(
        f"<code>{html.escape(p['name'])}</code>{'' if p['required'] else ' (optional)'}: "
        f"{html.escape(str(p['type']))}"
        + (f": {html.escape(p['description'])}" if p.get("description") else "")
        for p in params
    )


def jsonrpc_reference(
    table: MethodTable[Any], *, tcp_port: int, ws_port: int
) -> Callable[[Request], Coroutine[Any, Any, HTMLResponse]]:
    """The endpoint: one table row per method of `table`."""

    async def endpoint(request: Request) -> HTMLResponse:
        rows = "".join(
            f"<tr><td><code>{html.escape(e['method'])}</code></td><td>{html.escape(e['kind'])}"
            f"</td><td>{html.escape(e['summary'])}</td><td>{_params(e['params'])}</td></tr>"
            for e in table.help_entries()
        )
        body = (
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            "<title>thinghub iTwin: JSON-RPC reference</title></head><body>"
            "<h1>iTwin socket API (JSON-RPC 2.0)</h1>"
            f"<p>Plain TCP on port {tcp_port} (concatenated JSON values), WebSocket on port "
            f"{ws_port} (path <code>/</code>) and on this HTTP port at <code>/itwin/ws</code>: "
            "one JSON-RPC request or response per value or message. Call "
            "<code>authenticate</code> first (an API token or an access token from "
            "<code>POST /connect/token</code>); <code>help</code> answers this table over the "
            "socket. The REST API is in <a href='docs'>Swagger UI</a>.</p>"
            "<table border='1' cellpadding='4'><tr><th>method</th><th>kind</th>"
            f"<th>what</th><th>params</th></tr>{rows}</table></body></html>"
        )
        return HTMLResponse(body)

    return endpoint
