"""Byte streams to instruments: a serial device (pyserial) or a TCP socket, per COMM_TYPE.

Both are used the same way: `await read()` returns the next bytes (b"" when the far end is
gone), `await write(data)` writes all of it, `await close()`. The serial device is opened and
configured by pyserial (baud rate, data bits, parity, stop bits, raw mode, exclusive lock),
then read and written without blocking through the loop's file-descriptor watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import termios
from typing import Protocol

import serial

from .port_config import PortSettings

__all__ = ["PortTransport", "SerialTransport", "TcpTransport", "TransportError", "open_transport"]

#: Bytes read from an instrument at a time.
READ_BYTES = 4096
#: TCP instruments must accept the connection within this.
TCP_CONNECT_TIMEOUT_S = 10.0

_PARITY = {
    "NONE": serial.PARITY_NONE,
    "ODD": serial.PARITY_ODD,
    "EVEN": serial.PARITY_EVEN,
    "MARK": serial.PARITY_MARK,
    "SPACE": serial.PARITY_SPACE,
}
_STOP_BITS = {
    1.0: serial.STOPBITS_ONE,
    1.5: serial.STOPBITS_ONE_POINT_FIVE,
    2.0: serial.STOPBITS_TWO,
}


class TransportError(OSError):
    """The port cannot be opened (missing device, refused connection, bad settings)."""


class PortTransport(Protocol):
    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class SerialTransport:
    """A configured serial device (or a pseudo-terminal), read and written non-blocking."""

    def __init__(self, device: serial.Serial) -> None:
        self._serial = device
        self._fd = device.fileno()
        os.set_blocking(self._fd, False)
        # pyserial leaves VMIN = VTIME = 0, where a read of an idle line returns b"" (as at
        # end of file). VMIN = 1: an idle line is EAGAIN, and b"" means the line hung up.
        attrs = termios.tcgetattr(self._fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, settings: PortSettings) -> SerialTransport:
        path = settings.device
        if not path:
            raise TransportError(f"port {settings.number}: no DEVICE configured")

        def open_device() -> serial.Serial:
            return serial.Serial(
                port=path,
                baudrate=settings.baud_rate,
                bytesize=settings.data_bits,
                parity=_PARITY[settings.parity],
                stopbits=_STOP_BITS[settings.stop_bits],
                timeout=0,
                write_timeout=0,
                exclusive=True,
            )

        try:
            device = await asyncio.to_thread(open_device)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise TransportError(f"port {settings.number}: opening {path}: {exc}") from exc
        return cls(device)

    async def _wait(self, add: str) -> None:
        future: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not future.done():
                future.set_result(None)

        if add == "read":
            self._loop.add_reader(self._fd, ready)
        else:
            self._loop.add_writer(self._fd, ready)
        try:
            await future
        finally:
            if add == "read":
                self._loop.remove_reader(self._fd)
            else:
                self._loop.remove_writer(self._fd)

    async def read(self) -> bytes:
        while True:
            try:
                return os.read(self._fd, READ_BYTES)
            except BlockingIOError:
                await self._wait("read")
            except OSError as exc:
                if exc.errno == errno.EIO:  # the other end hung up (a pty whose master closed)
                    return b""
                raise

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await self._wait("write")
                continue
            view = view[written:]

    async def close(self) -> None:
        with contextlib.suppress(OSError, serial.SerialException):
            self._serial.close()


class TcpTransport:
    """An instrument reached over TCP (COMM_TYPE TCP, or USB with HOST and PORT)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, settings: PortSettings) -> TcpTransport:
        if not settings.host or not settings.tcp_port:
            raise TransportError(f"port {settings.number}: HOST and PORT are needed for TCP")
        try:
            async with asyncio.timeout(TCP_CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(settings.host, settings.tcp_port)
        except (OSError, TimeoutError) as exc:
            where = f"{settings.host}:{settings.tcp_port}"
            raise TransportError(f"port {settings.number}: connecting to {where}: {exc}") from exc
        return cls(reader, writer)

    async def read(self) -> bytes:
        return await self._reader.read(READ_BYTES)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self._writer.wait_closed()


async def open_transport(settings: PortSettings) -> PortTransport:
    """Open what the port's COMM_TYPE names."""
    if settings.is_tcp:
        return await TcpTransport.open(settings)
    return await SerialTransport.open(settings)
