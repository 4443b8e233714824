"""Listening sockets bound before anything is created, and a busy port named by its listener.

`thinghub serve` binds every port it will listen on first (the HTTP port, each
`--face-listen` port, the MQTT port) and checks the ports faces' own listeners will take;
only then does it create the data directory, the CA, the account and the database. A port it
cannot have ends start-up with a `PortUnavailable` that names the listener, the address and
the setting that moves it, and nothing has been written.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

__all__ = ["LISTEN_BACKLOG", "ListenAddress", "PortUnavailable", "bind", "probe"]

LISTEN_BACKLOG = 2048  # connections the kernel queues before the accept loop takes them


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where one listener binds, and what moves it."""

    listener: str  # "HTTP", "MQTT over TLS", "face st", "itwin_tcp"
    host: str
    port: int
    setting: str  # the setting that moves it: "http_port", "face_listen"

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class PortUnavailable(Exception):
    """A listener cannot bind its address; `str()` names the listener, the address, the
    reason and the setting that moves it."""

    def __init__(self, address: ListenAddress, error: OSError) -> None:
        self.address = address
        self.errno = error.errno
        self.in_use = error.errno == errno.EADDRINUSE
        super().__init__(self.message())

    def message(self, flag: str | None = None) -> str:
        """The message, with `flag` (the command-line flag of the setting, if any) named
        before the environment variable."""
        a = self.address
        if self.in_use:
            what = f"{a.listener} port {a.shown} is in use (another thinghub?)"
        else:
            reason = _REASONS.get(self.errno or 0, f"error {self.errno}")
            what = f"{a.listener} port {a.shown} cannot be bound: {reason}"
        env = f"THINGHUB_{a.setting.upper()}"
        where = f"{flag} or {env}" if flag else f"{env} or `{a.setting}` in the config file"
        return f"{what}; choose another with {where}"


_REASONS = {
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
    errno.EADDRNOTAVAIL: "the address is not one of this machine's",
}


def _socket(host: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def bind(address: ListenAddress, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A listening, non-blocking socket on `address` (port 0: one the system picks).

    Raises:
        PortUnavailable: the address is in use or cannot be bound.
    """
    sock = _socket(address.host)
    try:
        sock.bind((address.host, address.port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise PortUnavailable(address, exc) from exc
    sock.setblocking(False)
    return sock


def probe(address: ListenAddress) -> None:
    """Check that `address` can be bound now, for a listener that binds it later itself
    (a face's own listener). Port 0 always can.

    Raises:
        PortUnavailable: the address is in use or cannot be bound.
    """
    if address.port == 0:
        return
    bind(address).close()
