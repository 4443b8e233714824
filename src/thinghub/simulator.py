"""The device simulator: N devices over MQTT/TLS with thinghub's own codec (no paho).

Each simulated device connects (optionally through an HTTP CONNECT proxy line), subscribes
to direct methods, publishes telemetry at a fixed rate and answers every method with 200.
It measures PUBACK latency, so it is also the load generator of the MQTT benchmarks; the
same client runs against any MQTT 3.1.1 broker given a username/password per device.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from thinghub.mqtt import (
    ClientSession,
    ClientState,
    Connacked,
    PubackReceived,
    PublishReceived,
    SubackReceived,
)

__all__ = ["DeviceSpec", "SimStats", "SimulatedDevice", "connect_all", "run_devices"]

CONNECT_TIMEOUT_S = 30.0
KEEPALIVE_S = 60
DRAIN_GRACE_S = 5.0  # a run bounded in time waits this long past it for the last PUBACKs
CLOSE_TIMEOUT_S = 2.0  # a bounded run's DISCONNECT and close, per device


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    client_id: str
    username: str
    password: str | None
    topic: str  # where telemetry goes
    methods: bool = True  # subscribe to $iothub/methods/POST/# and answer


@dataclass
class SimStats:
    connected: int = 0
    failed: int = 0
    lost: int = 0  # connections the server closed (or that broke) while the run went on
    sent: int = 0
    acked: int = 0
    methods: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class SimulatedDevice:
    def __init__(
        self,
        spec: DeviceSpec,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        stats: SimStats,
        *,
        server_hostname: str = "localhost",
        qos: int = 1,
        proxy: bool = False,
        body: Callable[[int], bytes] | None = None,
    ) -> None:
        self.spec = spec
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.server_hostname = server_hostname
        self.stats = stats
        self.qos = qos
        self.proxy = proxy
        self.body = body or (
            lambda n: json.dumps(
                {"temperature": round(random.uniform(10, 40), 2), "seq": n}
            ).encode()
        )
        self.session = ClientSession()
        self._writer: asyncio.StreamWriter | None = None
        self._sent_at: dict[int, float] = {}
        self._connacked = asyncio.Event()
        self._window = asyncio.Semaphore(20)  # paho's default in-flight limit
        self._closing = False  # close() was called: the connection's end is ours
        self.is_accepted = False  # CONNACK 0 came
        self.lost = False  # the connection ended while the device was not closing it

    async def connect(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        if self.proxy:
            writer.write(
                f"CONNECT {self.server_hostname}:8883 HTTP/1.1\r\n"
                f"Host: {self.server_hostname}\r\n\r\n".encode()
            )
            await writer.drain()
            reply = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in reply.split(b"\r\n", 1)[0]:
                raise ConnectionError(f"proxy refused: {reply[:60]!r}")
        await writer.start_tls(self.ssl_context, server_hostname=self.server_hostname)
        self._writer = writer
        self._reader_task = asyncio.create_task(
            self._read(reader), name=f"sim[{self.spec.client_id}].read"
        )
        password = None if self.spec.password is None else self.spec.password.encode()
        self.session.connect(
            self.spec.client_id,
            username=self.spec.username,
            password=password,
            keepalive_s=KEEPALIVE_S,
            clean_session=False,
        )
        self.flush()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await self._connacked.wait()
        if self.spec.methods:
            self.session.subscribe([("$iothub/methods/POST/#", 1)])
            self.flush()

    def flush(self) -> None:
        """Write whatever the session has queued."""
        data = self.session.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                self.session.receive_data(data)
                while (event := self.session.next_event()) is not None:
                    self._on_event(event)
                self.flush()
        except (ConnectionError, ssl.SSLError) as exc:
            self.stats.errors.append(f"{self.spec.client_id}: {exc!r}")
        finally:
            if self.is_accepted and not self._closing:
                self.lost = True
                self.stats.lost += 1
                self.stats.errors.append(f"{self.spec.client_id}: the server closed the connection")
            self._connacked.set()
            for _ in range(20):
                self._window.release()

    def _on_event(self, event: Any) -> None:
        if isinstance(event, Connacked):
            if event.return_code == 0:
                self.is_accepted = True
                self.stats.connected += 1
            else:
                self.stats.failed += 1
                self.stats.errors.append(f"{self.spec.client_id}: CONNACK {event.return_code}")
            self._connacked.set()
        elif isinstance(event, PubackReceived):
            sent = self._sent_at.pop(event.packet_id, None)
            if sent is not None:
                self.stats.acked += 1
                self.stats.latencies.append(time.perf_counter() - sent)
                self._window.release()
        elif isinstance(event, PublishReceived):
            topic = event.publish.topic
            if topic.startswith("$iothub/methods/POST/"):
                rid = topic.rpartition("$rid=")[2]
                self.stats.methods += 1
                self.session.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"ok": true}', 1)
        elif isinstance(event, SubackReceived):
            pass

    async def send(self, n: int) -> None:
        if self.qos:
            await self._window.acquire()
        packet_id = self.session.publish(self.spec.topic, self.body(n), self.qos)
        self.stats.sent += 1
        if self.qos and packet_id is not None:
            self._sent_at[packet_id] = time.perf_counter()
        self.flush()

    async def run(
        self, rate_per_s: float, duration_s: float, count: int | None, until: float | None = None
    ) -> None:
        """Publish at `rate_per_s` for `duration_s` (and not past `until`, a perf_counter
        time), at most `count` messages; a lost connection ends it early."""
        interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
        start = time.perf_counter()
        end = start + duration_s if until is None else min(start + duration_s, until)
        n = 0
        while (count is None or n < count) and not self.lost and time.perf_counter() < end:
            await self.send(n)
            n += 1
            if interval:
                await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
            elif n % 64 == 0:
                await asyncio.sleep(0)

    async def drain(self, timeout_s: float = 30.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._sent_at and not self.lost:  # noqa: ASYNC110 - acks arrive on the reader task
                    await asyncio.sleep(0.01)

    def keep_alive(self) -> None:
        """Send a PINGREQ if connected (the server drops clients silent for 1.5 x keep-alive)."""
        if self.session.state is ClientState.CONNECTED:
            self.session.ping()
            self.flush()

    async def close(self) -> None:
        self._closing = True
        if self._writer is not None and not self._writer.is_closing():
            # A session the server already closed (refused, or a violation) has nothing to
            # say; disconnect() on it would be our own misuse (LocalProtocolError).
            if self.session.state in (ClientState.AWAIT_CONNACK, ClientState.CONNECTED):
                self.session.disconnect()
                self.flush()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await self._writer.drain()
            self._writer.close()
        if hasattr(self, "_reader_task"):
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, ssl.SSLError):
                await self._reader_task


async def connect_all(
    devices: Sequence[SimulatedDevice],
    stats: SimStats,
    concurrency: int,
    until: float | None = None,
) -> list[SimulatedDevice]:
    """Connect the devices, at most `concurrency` handshakes at a time, none past `until` (a
    perf_counter time); the ones that made it.

    A device that cannot connect is counted in `stats.failed` with its error, not raised.
    """
    gate = asyncio.Semaphore(concurrency)

    async def connect(device: SimulatedDevice) -> bool:
        async with gate:
            try:
                left = None if until is None else max(0.0, until - time.perf_counter())
                async with asyncio.timeout(left):
                    await device.connect()
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                stats.failed += 1
                stats.errors.append(f"{device.spec.client_id}: {exc!r}")
                return False
        return True

    ok = await asyncio.gather(*(connect(d) for d in devices))
    return [d for d, good in zip(devices, ok, strict=True) if good]


async def run_devices(
    specs: Sequence[DeviceSpec],
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    *,
    rate_per_s: float,
    duration_s: float,
    count: int | None = None,
    qos: int = 1,
    proxy: bool = False,
    server_hostname: str = "localhost",
    connect_concurrency: int = 100,
    on_progress: Callable[[SimStats], None] | None = None,
    bounded: bool = False,
) -> SimStats:
    """Connect every device, run them all, drain acks, disconnect. Returns the stats.

    With `bounded`, `duration_s` bounds the whole run from this call (connecting included),
    and the last PUBACKs and the disconnects get DRAIN_GRACE_S and CLOSE_TIMEOUT_S more; a
    connection the server closes ends that device's run (`stats.lost`), so a server that goes
    away ends the run early.
    """
    stats = SimStats()
    until = time.perf_counter() + duration_s if bounded else None
    devices = [
        SimulatedDevice(
            s, host, port, ssl_context, stats, qos=qos, proxy=proxy, server_hostname=server_hostname
        )
        for s in specs
    ]
    live = await connect_all(devices, stats, connect_concurrency, until)
    stop = asyncio.Event()

    async def progress() -> None:
        last_ping = time.monotonic()
        while not stop.is_set():
            if on_progress is not None:
                on_progress(stats)
            if time.monotonic() - last_ping > KEEPALIVE_S / 2:
                last_ping = time.monotonic()
                for device in live:
                    device.keep_alive()
            await asyncio.sleep(0.5)

    reporter = asyncio.create_task(progress(), name="sim.progress")
    stats_start = time.perf_counter()
    await asyncio.gather(*(d.run(rate_per_s, duration_s, count, until) for d in live))
    drain_s = DRAIN_GRACE_S if bounded else 30.0
    await asyncio.gather(*(d.drain(drain_s) for d in live))
    elapsed = time.perf_counter() - stats_start
    stop.set()
    await reporter
    if on_progress is not None:
        on_progress(stats)

    async def close(device: SimulatedDevice) -> None:
        if not bounded:
            await device.close()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await device.close()

    await asyncio.gather(*(close(d) for d in live))
    stats.elapsed_s = elapsed
    return stats
