"""The forms of a request the ST AIoT Craft IoT API's host takes that FastAPI would not.

The ST API runs as an Azure Function; its host routes like ASP.NET Core, so:

- a trailing slash names the same route (`POST /v1/devices/` creates a device). FastAPI
  would answer `307` with an empty body and a `Location` built from the `Host` header, which
  a client that does not follow redirects (httpx's default) reads as a failed call;
- query parameter names match in any case (`?deviceId=` filters as `?deviceID=` does).
  Unmatched, a filter in another case would be ignored: the whole account's telemetry
  would come back as if it were that device's.

This middleware rewrites the request into the form the routes declare; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["RequestForms"]


class RequestForms:
    """Strips one trailing slash from the path and gives query names their declared case."""

    def __init__(self, app: ASGIApp, query_names: Iterable[str]) -> None:
        self.app = app
        self.names = {name.lower(): name for name in query_names}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self._rewrite(scope)
        await self.app(scope, receive, send)

    def _rewrite(self, scope: Scope) -> Scope:
        changes: dict[str, object] = {}
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if path.endswith("/") and len(path) > len(root) + 1:  # never the face's own root
            changes["path"] = path[:-1]
            raw: bytes | None = scope.get("raw_path")
            if raw is not None and raw.endswith(b"/"):
                changes["raw_path"] = raw[:-1]
        query: bytes = scope.get("query_string", b"")
        if query:
            fixed = self._query(query)
            if fixed != query:
                changes["query_string"] = fixed
        return {**scope, **changes} if changes else scope

    def _query(self, query: bytes) -> bytes:
        parts = []
        for part in query.split(b"&"):
            key, eq, value = part.partition(b"=")
            name = unquote(key.decode("latin-1").replace("+", " "))
            declared = self.names.get(name.lower())
            if declared is not None and declared != name:
                key = declared.encode("ascii")
            parts.append(key + eq + value)
        return b"&".join(parts)
