"""The ux4iot connection string `Endpoint=<url>;SharedAccessKey=<key>`, built and parsed as
the real client parses it (ux4iot-react lib/ux4iot-shared.js parseConnectionString).

The client uses Endpoint both as its REST base URL and as its Socket.IO URL, and
socket.io-client takes the URL's path as the *namespace* (the Engine.IO path stays
`/socket.io/`). So `Endpoint=http://h:8080/ux4iot` sends REST to `/ux4iot/...` and joins
namespace `/ux4iot`; an Endpoint without a path joins `/`. A trailing slash joins
`/ux4iot/`, another namespace (served too: live.NAMESPACES); the builder never writes one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from thinghub.domain.errors import Invalid

__all__ = [
    "ConnectionString",
    "build_connection_string",
    "parse_connection_string",
    "socket_namespace",
]


@dataclass(frozen=True, slots=True)
class ConnectionString:
    endpoint: str
    shared_access_key: str

    def __str__(self) -> str:
        return f"Endpoint={self.endpoint};SharedAccessKey={self.shared_access_key}"

    @property
    def namespace(self) -> str:
        return socket_namespace(self.endpoint)


def build_connection_string(endpoint: str, shared_access_key: str) -> str:
    """`Endpoint=<endpoint without trailing slash>;SharedAccessKey=<key>`.

    Raises:
        ValueError: the endpoint is not an http(s) URL, or a part holds `;` (the separator).
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the endpoint must be an http(s) URL, got {endpoint!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"the endpoint must have no query or fragment, got {endpoint!r}")
    if ";" in endpoint or ";" in shared_access_key or not shared_access_key:
        raise ValueError("neither part may hold ';' and the key must not be empty")
    return str(ConnectionString(endpoint.rstrip("/"), shared_access_key))


def parse_connection_string(text: str) -> ConnectionString:
    """Split on `;`, then each part on its first `=`; other keys are ignored, the last of a
    repeated key wins (as in the client).

    Raises:
        Invalid: Endpoint or SharedAccessKey is missing or empty (field `connectionString`).
    """
    parsed: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            parsed[key] = value
    endpoint, key = parsed.get("Endpoint", ""), parsed.get("SharedAccessKey", "")
    if not endpoint or not key:
        raise Invalid(
            'Invalid Connection String: make sure "Endpoint=..." and "SharedAccessKey=..." is '
            "present in your connection string.",
            field="connectionString",
        )
    return ConnectionString(endpoint, key)


def socket_namespace(endpoint: str) -> str:
    """The Socket.IO namespace a client with this Endpoint joins: the URL path, or `/`."""
    return urlsplit(endpoint).path or "/"
