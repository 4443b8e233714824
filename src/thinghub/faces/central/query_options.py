"""OData query options under their 2022-10-31-preview names: that version of IoT Central's
REST API (its specification and its how-tos) writes `filter`, `orderby` and `maxpagesize`
without the `$` that 2022-07-31 and the API document use (`?maxpagesize=2`,
`?filter=contains(displayName, 'thermostat1')`). The routes read the `$` names; this ASGI
middleware gives a request's plain names their `$` (unless the `$` name is there too), so a
preview client's filter is applied, not silently ignored.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["PLAIN_OPTIONS", "PlainQueryOptions"]

# The plain names 2022-10-31-preview uses, and the `$` names the routes read.
PLAIN_OPTIONS = {"filter": "$filter", "orderby": "$orderby", "maxpagesize": "$maxpagesize"}
_PLAIN_BYTES = tuple(name.encode() for name in PLAIN_OPTIONS)


def with_dollar_names(query: bytes) -> bytes:
    """The query string with plain option names renamed (nothing else changes)."""
    if not any(name in query for name in _PLAIN_BYTES):
        return query
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    present = {key for key, _ in pairs}
    if not any(key in PLAIN_OPTIONS and PLAIN_OPTIONS[key] not in present for key in present):
        return query
    renamed = [
        (
            PLAIN_OPTIONS[key]
            if key in PLAIN_OPTIONS and PLAIN_OPTIONS[key] not in present
            else key,
            v,
        )
        for key, v in pairs
    ]
    return urlencode(renamed, encoding="latin-1").encode("latin-1")


class PlainQueryOptions:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("query_string"):
            query = with_dollar_names(scope["query_string"])
            if query is not scope["query_string"]:
                scope = {**scope, "query_string": query}
        await self.app(scope, receive, send)
