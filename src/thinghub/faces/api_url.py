"""Where clients reach this server's API faces: the base URL a face writes into what it hands
out for other programs to use (the ux4iot Endpoint of a key, shown by the console and
answered by `POST /v1/ux4iot/keys`).

The shared HTTP port (the ready line's `http`) serves every face under its prefix; a face on
a port of its own (`--face-listen NAME=HOST:PORT`) serves only that face, so a URL built from
the port a request came in on is wrong there. The order:

1. `public_url`, when set (TLS or a proxy in front: the only address known to work);
2. a request on the shared HTTP port: that port, with the host the client used;
3. a request on another port: the shared HTTP port, with the HTTP listener's address when it
   is bound to one, else the host the client used (the same machine answers on every port).

"The host the client used" is the Host header (`trust_host`, for a browser's own pages: it
is what the browser's machine knows the server by, ports mapped by a container included),
or else the address of the socket the request reached (API answers: never a value the
client sent, like nextLink).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import HTTPConnection

from thinghub.config import Settings

__all__ = ["WILDCARDS", "api_base_url"]

WILDCARDS = ("", "0.0.0.0", "::")  # listener addresses that are every address of the machine


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def api_base_url(
    conn: HTTPConnection,
    settings: Settings,
    addresses: Mapping[str, Any],
    *,
    trust_host: bool = False,
) -> str:
    """This server's base URL for the API faces as `conn`'s client reaches it, without a
    trailing slash (see the module docstring)."""
    if settings.public_url:
        return settings.public_url.rstrip("/")
    http = addresses.get("http")
    server = conn.scope.get("server")
    host_header = conn.headers.get("host", "") if trust_host else ""
    if not http or server is None or int(server[1]) == int(http["port"]):  # the shared port
        if host_header:
            return f"{conn.url.scheme}://{host_header}"
        host, port = server or (settings.host, settings.http_port)
        return f"http://{_shown(str(host))}:{int(port)}"
    bound = str(http["host"])
    if bound not in WILDCARDS:
        host = bound
    elif host_header:
        host = conn.url.hostname or "127.0.0.1"
    else:
        host = str(server[0])
    return f"http://{_shown(host)}:{int(http['port'])}"
