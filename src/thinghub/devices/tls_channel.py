"""A device socket driven by the event loop's reader and writer callbacks: proxy line, TLS, bytes.

Theory of operation. asyncio's TLS transport (sslproto) keeps, per connection, a protocol, a
transport, two memory BIOs, a read buffer and a StreamReader/StreamWriter pair on top of what
OpenSSL holds, and a task waits in every connection's read. A TlsChannel instead puts OpenSSL
directly on the accepted non-blocking socket (its socket BIO, as mosquitto does) and registers
callbacks with the loop (add_reader / add_writer); while a connection is idle it holds its
socket, OpenSSL's connection object, one reader registration and nothing else: no task, no
buffer. The `ssl.SSLSocket` wrapper is skipped: the context's `_wrap_socket`, which SSLSocket
itself calls, gives OpenSSL's object without the wrapper's attribute dictionary. OpenSSL
releases its record buffers between records (SSL_MODE_RELEASE_BUFFERS, which CPython sets).

The phases, each driven by callbacks, within `handshake_timeout_s` from the accept:
1. The first byte is peeked at. A `C` starts `CONNECT host:port HTTP/1.1` (what PySocks sends
   for a device behind a proxy): the header is taken up to its blank line, never past it (the
   TLS bytes after it stay in the socket), and answered `200` in one write. Anything else (a TLS
   record starts with 0x16) goes straight to 2.
2. The TLS handshake (do_handshake until done; TLS 1.2 and 1.3, as the context allows).
3. Records: what the socket holds is decrypted into one buffer shared by every channel and
   handed to the handler (`data_received`, which copies what it keeps: only a partial MQTT
   packet stays behind), up to READ_BATCH_BYTES per callback. The handler may pause reading
   (when it holds enough) and resume it; a paused channel still notices the peer's EOF
   (peeking at the raw socket) without reading its data. Writes go out at once; what
   the socket does not take waits (by packet) for the writer callback, and reading stays paused
   while more than WRITE_HIGH_WATER_BYTES wait, so a device that does not read cannot make us
   buffer for it.

Read-ahead. Without it OpenSSL's socket BIO reads each record in two system calls (its 5-byte
header, then its body) and a wake ends with one more read that finds nothing: a device's
PUBLISH is a record of its own, so two `read`s per message, about a fifth of the event loop's
time under load. `enable_read_ahead` turns OpenSSL's read-ahead on for a context (CPython has
no API for it: see there), so one `read` takes every record the socket holds (up to OpenSSL's
record buffer, released again once empty, as before). Records read ahead are inside OpenSSL,
where `pending()` (the decrypted bytes of the current record) does not see them and the
socket will not signal them: wherever reading resumes without the socket's signal (after the
handshake, after a pause, after a full batch) the reader is called once unconditionally.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import socket
import ssl
import sys
from collections.abc import Callable
from typing import Any, Protocol

__all__ = [
    "PROXY_HEADER_MAX_BYTES",
    "READ_BATCH_BYTES",
    "WRITE_HIGH_WATER_BYTES",
    "ChannelHandler",
    "TlsChannel",
    "enable_read_ahead",
]

logger = logging.getLogger(__name__)

#: The longest proxy CONNECT header accepted, in bytes.
PROXY_HEADER_MAX_BYTES = 8192
#: Decrypted bytes handed to the handler per reader callback at most, in bytes (one shared
#: buffer of this size serves every channel).
READ_BATCH_BYTES = 65_536
#: Reading pauses while more than this many bytes wait to be sent to the peer.
WRITE_HIGH_WATER_BYTES = 65_536
#: A channel closed with bytes still unsent gets this long (seconds) to send them, then it is
#: aborted, so a peer that stopped reading cannot hold its socket.
CLOSE_ABORT_S = 2.0

_READ_BUFFER = bytearray(READ_BATCH_BYTES)
_READ_VIEW = memoryview(_READ_BUFFER)
_PROXY_OK = b"HTTP/1.1 200 Connection established\r\n\r\n"
_PROXY_BAD = b"HTTP/1.1 400 Bad Request\r\n\r\n"

# CPython versions whose SSLContext object holds its SSL_CTX pointer first after the object
# header (Modules/_ssl.c, PySSLContext); others are left without read-ahead.
_SSL_CTX_FIRST = ((3, 11), (3, 12), (3, 13))

# OpenSSL's SSL_CTX_ctrl commands (ssl.h: SSL_CTRL_GET_READ_AHEAD, SSL_CTRL_SET_READ_AHEAD).
_CTRL_GET_READ_AHEAD = 40
_CTRL_SET_READ_AHEAD = 41


def enable_read_ahead(context: ssl.SSLContext) -> bool:
    """Turn OpenSSL's read-ahead on for the connections `context` makes from now on; True
    when it is on (False: left as it was, reads work as before, only dearer).

    CPython's ssl module has no call for SSL_CTX_set_read_ahead, so it is made through ctypes
    on the libssl that `_ssl` itself is linked with, on the SSL_CTX that CPython keeps as the
    first field after the object header of an SSLContext. That address is used only once it
    is shown to be the context's own: OpenSSL's options read through it must equal
    `context.options` (a 64-bit value), and the read-ahead read back must be on.
    """
    if sys.implementation.name != "cpython" or sys.version_info[:2] not in _SSL_CTX_FIRST:
        return False  # a layout not read here: the address would be a guess
    try:
        ssl_module = importlib.import_module("_ssl")
        lib = ctypes.CDLL(getattr(ssl_module, "__file__", None))
        ctrl = lib.SSL_CTX_ctrl
        get_options = lib.SSL_CTX_get_options
    except (OSError, AttributeError, ImportError) as exc:
        logger.info("TLS read-ahead not available: %s", exc)
        return False
    ctrl.restype = ctypes.c_long
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    get_options.restype = ctypes.c_uint64
    get_options.argtypes = [ctypes.c_void_p]
    address = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not address or get_options(address) != int(context.options):
        logger.info("TLS read-ahead not available: this Python's SSLContext layout differs")
        return False
    ctrl(address, _CTRL_SET_READ_AHEAD, 1, None)
    return bool(ctrl(address, _CTRL_GET_READ_AHEAD, 0, None) == 1)


# Phases.
_PEEK, _PROXY, _HANDSHAKE, _OPEN, _CLOSING, _CLOSED = range(6)


class ChannelHandler(Protocol):
    """What a channel tells once its TLS is up."""

    def data_received(self, data: memoryview) -> None:
        """Decrypted bytes; valid only during the call (copy what is kept)."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The peer closed (EOF, exc None) or the socket failed; called once."""


class TlsChannel:
    """One accepted device socket: proxy line, TLS handshake, then decrypted bytes in and out.

    Args:
        on_ready: Called once the TLS handshake is done; returns the handler for the bytes.
        on_failed: Called once if the channel closes before that (with the reason).
    """

    __slots__ = (
        "_context",
        "_fd",
        "_handler",
        "_is_reading",
        "_is_writing",
        "_loop",
        "_on_failed",
        "_on_ready",
        "_out",
        "_out_bytes",
        "_phase",
        "_proxy",
        "_sock",
        "_timer",
        "_tls",
        "_want_read",
        "peer",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        context: ssl.SSLContext,
        peer: str,
        *,
        handshake_timeout_s: float,
        on_ready: Callable[[TlsChannel], ChannelHandler],
        on_failed: Callable[[TlsChannel, str], None],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._tls: Any = None  # ssl's _SSLSocket (OpenSSL's SSL on the socket's fd), once TLS
        self._fd = sock.fileno()
        self._context = context
        self.peer = peer
        self._on_ready: Callable[[TlsChannel], ChannelHandler] | None = on_ready
        self._on_failed: Callable[[TlsChannel, str], None] | None = on_failed
        self._handler: ChannelHandler | None = None
        self._phase = _PEEK
        self._proxy: bytearray | None = None
        self._out: list[bytes] | None = None  # unsent, by write; the head is being retried
        self._out_bytes = 0
        self._is_reading = False  # the reader callback is registered
        self._is_writing = False
        self._want_read = True  # the handler has not paused reading
        self._timer: asyncio.TimerHandle | None = loop.call_later(
            handshake_timeout_s, self._handshake_expired
        )
        self._read()

    # -- inspection ---------------------------------------------------------------------------

    @property
    def socket(self) -> socket.socket:
        return self._sock

    def peer_certificate(self) -> bytes | None:
        """The verified client certificate (DER), or None when the client sent none."""
        if self._tls is None:
            return None
        cert: bytes | None = self._tls.getpeercert(True)
        return cert

    def tls_version(self) -> str | None:
        return None if self._tls is None else str(self._tls.version())

    def is_closing(self) -> bool:
        return self._phase >= _CLOSING

    # -- registration helpers -----------------------------------------------------------------

    def _read(self) -> None:
        """Register the reader callback (one for every phase: re-registering costs a poll
        handle and system calls, so it stays registered from accept to close)."""
        if not self._is_reading:
            self._loop.add_reader(self._fd, self._on_readable_any)
            self._is_reading = True

    def _unread(self) -> None:
        if self._is_reading:
            self._loop.remove_reader(self._fd)
            self._is_reading = False

    def _on_readable_any(self) -> None:
        phase = self._phase
        if phase == _OPEN:
            if self._want_read:
                self._on_readable()
            else:
                self._watch_eof()
        elif phase == _HANDSHAKE:
            self._handshake()
        elif phase < _HANDSHAKE:
            self._on_pre_tls()

    def _write_when_ready(self, callback: Callable[[], None]) -> None:
        if not self._is_writing:
            self._loop.add_writer(self._fd, callback)
            self._is_writing = True

    def _unwrite(self) -> None:
        if self._is_writing:
            self._loop.remove_writer(self._fd)
            self._is_writing = False

    # -- before TLS ---------------------------------------------------------------------------

    def _on_pre_tls(self) -> None:
        try:
            waiting = self._sock.recv(PROXY_HEADER_MAX_BYTES, socket.MSG_PEEK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"{exc}")
            return
        if not waiting:
            self._fail("closed before TLS")
            return
        if self._phase == _PEEK:
            if waiting[:1] != b"C":  # TLS starts with 0x16
                self._start_tls()
                return
            self._phase = _PROXY
            self._proxy = bytearray()
        self._take_proxy(waiting)

    def _take_proxy(self, waiting: bytes) -> None:
        """Take what waits of the CONNECT header, never past its blank line."""
        header = self._proxy
        assert header is not None
        room = PROXY_HEADER_MAX_BYTES - len(header)
        waiting = waiting[:room]
        tail = bytes(header[-3:])  # the blank line may straddle what we took and what waits
        end = (tail + waiting).find(b"\r\n\r\n")
        size = len(waiting) if end < 0 else end + 4 - len(tail)
        try:
            taken = self._sock.recv(size)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(f"{exc}")
            return
        header += taken
        if len(taken) < size or end < 0:
            if len(header) >= PROXY_HEADER_MAX_BYTES:
                self._fail("proxy CONNECT header too long")
            return  # the rest when the socket is readable again
        request_line = bytes(header).split(b"\r\n", 1)[0].decode("latin-1")
        self._proxy = None
        parts = request_line.split()
        if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
            with contextlib.suppress(OSError):
                self._sock.send(_PROXY_BAD)
            self._fail(f"bad proxy request line {request_line!r}")
            return
        try:
            sent = self._sock.send(_PROXY_OK)  # a fresh socket's buffer takes 39 bytes
        except OSError as exc:
            self._fail(f"{exc}")
            return
        if sent != len(_PROXY_OK):
            self._fail("proxy answer not sent")
            return
        self._start_tls()

    def _start_tls(self) -> None:
        try:
            # What ssl.SSLSocket does inside, without the wrapper (it holds the socket weakly;
            # the socket's timeout, 0, makes its calls non-blocking).
            self._tls = self._context._wrap_socket(self._sock, True, None)  # type: ignore[attr-defined]
        except (OSError, ValueError) as exc:
            self._fail(f"{exc}")
            return
        self._phase = _HANDSHAKE
        self._handshake()

    def _handshake(self) -> None:
        tls = self._tls
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            self._unwrite()
            return
        except ssl.SSLWantWriteError:
            self._write_when_ready(self._handshake)
            return
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._fail(f"{exc}")
            return
        self._unwrite()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = _OPEN
        on_ready = self._on_ready
        self._on_ready = self._on_failed = None
        assert on_ready is not None
        self._handler = on_ready(self)
        if self._phase == _OPEN:  # records read ahead with the handshake's (see above)
            self._loop.call_soon(self._on_readable)

    def _handshake_expired(self) -> None:
        self._timer = None
        self._fail("no TLS within the handshake timeout")

    def _fail(self, why: str) -> None:
        """Close before TLS is up: no handler exists yet."""
        on_failed = self._on_failed
        self._on_ready = self._on_failed = None
        self._teardown()
        if on_failed is not None:
            on_failed(self, why)

    # -- bytes in -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        if self._phase != _OPEN or not self._want_read:
            return
        tls = self._tls
        handler = self._handler
        assert handler is not None
        if self._out:  # a write may wait for what the peer sends (TLS renegotiation)
            self._send_pending()
        # Every record OpenSSL can give now, then the handler once: a device's records are
        # small (a PUBLISH each), and one call per read costs the handler less than one per
        # record.
        total = 0
        is_lost = False
        error: BaseException | None = None
        while total < READ_BATCH_BYTES:
            try:
                size = tls.read(READ_BATCH_BYTES - total, _READ_VIEW[total:])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            except (OSError, ValueError) as exc:  # SSLEOFError: closed without close_notify
                is_lost, error = True, None if isinstance(exc, ssl.SSLEOFError) else exc
                break
            if not size:
                is_lost = True
                break
            total += size
        if total:
            handler.data_received(_READ_VIEW[:total])
        if is_lost:
            if self._phase == _OPEN:
                self._lost(error)
            return
        if total >= READ_BATCH_BYTES and self._want_read and self._phase == _OPEN:
            self._loop.call_soon(self._on_readable)  # bytes in OpenSSL the fd will not signal

    def pause_reading(self) -> None:
        """Stop reading (the handler holds enough); a peer that closes meanwhile is still
        noticed: the reader callback stays, and only peeks below TLS (_watch_eof)."""
        self._want_read = False

    def resume_reading(self) -> None:
        if self._want_read and self._is_reading:
            return  # not paused: nothing waits unread in OpenSSL (_on_readable read it all)
        self._want_read = True
        self._start_reading()

    def _start_reading(self) -> None:
        if self._phase != _OPEN or self._out_bytes > WRITE_HIGH_WATER_BYTES:
            return
        self._read()
        self._loop.call_soon(self._on_readable)  # what OpenSSL holds: the fd will not signal

    def _watch_eof(self) -> None:
        """The socket is readable while paused: EOF says the peer is gone, data waits."""
        try:
            waiting = self._sock.recv(1, socket.MSG_PEEK)  # below TLS
        except BlockingIOError:
            return
        except OSError as exc:
            waiting = b""
            logger.debug("device %s: %r while paused", self.peer, exc)
        self._unread()  # level-triggered: never spin on unread data (resume registers again)
        if not waiting and self._handler is not None:
            self._handler.connection_lost(None)  # the bytes before the EOF are still read

    # -- bytes out ----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._phase != _OPEN or not data:
            return
        if self._out:
            self._out.append(data)
            self._out_bytes += len(data)
            return
        self._out = [data]
        self._out_bytes = len(data)
        self._send_pending()

    def _send_pending(self) -> None:
        out = self._out
        tls = self._tls
        while out:
            try:
                tls.write(out[0])  # OpenSSL writes all of it or asks to be called again
            except ssl.SSLWantWriteError:
                self._write_when_ready(self._send_pending)
                return
            except ssl.SSLWantReadError:
                self._unwrite()  # retried when the peer sends (see _on_readable)
                return
            except BlockingIOError:
                self._write_when_ready(self._send_pending)
                return
            except (OSError, ValueError) as exc:
                self._out = None
                self._out_bytes = 0
                self._lost(exc)
                return
            self._out_bytes -= len(out.pop(0))
        self._out = None
        self._out_bytes = 0
        self._unwrite()
        if self._phase == _CLOSING:
            self._teardown()
        elif self._want_read and not self._is_reading:
            self._start_reading()

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close: what waits to be sent goes first (within CLOSE_ABORT_S), then close_notify."""
        if self._phase >= _CLOSING:
            return
        if self._phase != _OPEN:
            self._fail("closed")
            return
        self._phase = _CLOSING
        self._unread()
        if not self._out:
            self._teardown()
            return
        self._timer = self._loop.call_later(CLOSE_ABORT_S, self.abort)

    def abort(self) -> None:
        """Close now, whatever waits to be sent."""
        self._teardown(notify=False)

    def _lost(self, exc: BaseException | None) -> None:
        handler = self._handler
        self._teardown(notify=False)
        if handler is not None:
            handler.connection_lost(exc)

    def _teardown(self, *, notify: bool = True) -> None:
        if self._phase == _CLOSED:
            return
        was_open = self._phase in (_OPEN, _CLOSING)
        self._phase = _CLOSED
        self._unread()
        self._unwrite()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._out = None
        self._out_bytes = 0
        if was_open and notify and self._tls is not None:
            # close_notify, without waiting for the peer's (a non-blocking shutdown)
            with contextlib.suppress(OSError, ValueError):
                self._tls.shutdown()
        self._tls = None
        self._sock.close()
        self._handler = None
