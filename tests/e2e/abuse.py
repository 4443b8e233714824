"""The abuse suite's tools: watch a live server from outside while clients attack it.

- `RssSampler`: the server process's VmRSS (/proc/PID/status) every 50 ms, in a thread.
- `Monitor`: a real device (the raw TLS MQTT client, SAS) in a thread of its own, publishing
  small QoS 1 messages at a steady rate and timing every PUBACK.
- `Prober` and `served_within`: an HTTP client that is not attacking: `GET /healthz` and an
  authenticated `/v1` GET, each on a fresh connection, timed.
- `json_attacks` and `mqtt_attacks`: seeded generators of malformed and adversarial JSON
  bodies and MQTT packets (the same seed gives the same inputs, so a failure reproduces).
- `AttackLoop`: an asyncio loop in a thread, for attacks written as coroutines.

Nothing here knows the server's code: everything goes over 127.0.0.1 sockets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import math
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.e2e.mqtt_client import RawDevice, credentials
from tests.e2e.server import ServerProcess
from thinghub.mqtt import (
    ClientSession,
    Connacked,
    Disconnect,
    Pingreq,
    Puback,
    Publish,
    Pubrel,
    Subscribe,
    Unsubscribe,
    encode,
)

T = TypeVar("T")
MIB = 1024 * 1024

# -- the server process, from outside ----------------------------------------------------------


def pid_of(server: ServerProcess) -> int:
    return int(server.addresses["pid"])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class RssSampler:
    """The server's resident memory every `period_s`, from when it is started."""

    def __init__(self, server: ServerProcess, period_s: float = 0.05) -> None:
        self.pid = pid_of(server)
        self.period_s = period_s
        self.start_mib = rss_mib(self.pid)
        self.peak_mib = self.start_mib
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def __enter__(self) -> RssSampler:
        self.start_mib = rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # the process is gone: the test will say so
                self.samples.append(rss_mib(self.pid))
                self.peak_mib = max(self.peak_mib, self.samples[-1])
            self._stop.wait(self.period_s)

    @property
    def growth_mib(self) -> float:
        return self.peak_mib - self.start_mib

    def __str__(self) -> str:
        return f"RSS {self.start_mib:.0f} -> peak {self.peak_mib:.0f} MiB"


def log_since(server: ServerProcess, offset: int) -> str:
    """What the server logged since `offset` (a byte count of its log file)."""
    with server.log_path.open("rb") as log:
        log.seek(offset)
        return log.read().decode("utf-8", "replace")


def log_size(server: ServerProcess) -> int:
    return server.log_path.stat().st_size


def assert_clean(log: str) -> None:
    """No traceback and no ERROR line (warnings about refused clients are expected)."""
    assert "Traceback" not in log, log[-6000:]
    errors = [line for line in log.splitlines() if " ERROR " in line or " CRITICAL " in line]
    assert not errors, "\n".join(errors[:20])


def assert_alive(server: ServerProcess) -> None:
    assert server.proc is not None and server.proc.poll() is None, (
        f"the server died:\n{server.log()}"
    )


# -- a well-behaved device, timing its PUBACKs ---------------------------------------------------


class _Stamped(set[int]):
    """RawDevice.acked that calls back as each PUBACK arrives (to time it)."""

    def __init__(self, on_add: Callable[[int], None]) -> None:
        super().__init__()
        self.on_add = on_add

    def add(self, item: int) -> None:
        self.on_add(item)
        super().add(item)


class Monitor:
    """A device publishing `{"monitor": n}` with QoS 1 every `interval_s`, without waiting for
    PUBACKs (so a stalled server shows as growing latencies, not as fewer samples), in a thread
    with its own event loop (so the attacks in the test's other threads do not delay it)."""

    def __init__(self, server: ServerProcess, device: dict[str, Any], interval_s: float = 0.05):
        self.server = server
        self.device = device
        self.interval_s = interval_s
        self.latencies: list[float] = []
        self.acked_seqs: list[int] = []
        self.sent = 0
        self.connack: int | None = None
        self.disconnected = False
        self.unacked = 0
        self._sent_at: dict[int, tuple[float, int]] = {}
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self._error: BaseException | None = None
        self._drain_s = 10.0

    def __enter__(self) -> Monitor:
        self._thread.start()
        assert self._started.wait(30), "the monitor did not connect in 30 s"
        assert self.connack == 0, f"the monitor's CONNACK was {self.connack}"
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self, drain_s: float = 10.0) -> None:
        """Stop publishing; wait up to `drain_s` for the PUBACKs still due."""
        self._drain_s = drain_s
        self._stop.set()
        self._thread.join(drain_s + 15)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self._error = exc
        finally:
            self._started.set()

    def _on_puback(self, packet_id: int) -> None:
        sent = self._sent_at.pop(packet_id, None)
        if sent is not None:
            self.latencies.append(time.monotonic() - sent[0])
            self.acked_seqs.append(sent[1])

    async def _main(self) -> None:
        raw = RawDevice(self.server.mqtt_port, self.server.ca_file)
        raw.acked = _Stamped(self._on_puback)
        username, password = credentials(self.device)
        self.connack = await raw.connect(self.device["id"], username, password, clean=True)
        self._started.set()
        if self.connack != 0:
            await raw.close()
            return
        topic = f"devices/{self.device['id']}/messages/events/"
        next_at = time.monotonic()
        while not self._stop.is_set() and not raw.closed.is_set():
            start = time.monotonic()
            packet_id = raw.publish(topic, b'{"monitor": %d}' % self.sent, 1)
            assert packet_id is not None
            self._sent_at[packet_id] = (start, self.sent)
            self.sent += 1
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        deadline = time.monotonic() + self._drain_s
        while self._sent_at and not raw.closed.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self.disconnected = raw.closed.is_set()
        self.unacked = len(self._sent_at)
        await raw.close()

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return math.inf
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    def __str__(self) -> str:
        return (
            f"monitor: {self.sent} sent, {len(self.latencies)} acked, PUBACK p50 "
            f"{self.quantile(0.5) * 1000:.0f} ms, p99 {self.quantile(0.99) * 1000:.0f} ms, max "
            f"{max(self.latencies, default=math.inf) * 1000:.0f} ms"
        )

    def assert_served(self, *, p99_s: float, max_s: float, min_sent: int) -> None:
        """Connected throughout, every message acknowledged, PUBACKs within the bounds."""
        assert not self.disconnected, f"the monitor device was disconnected; {self}"
        assert self.sent >= min_sent, f"the monitor sent only {self.sent}; {self}"
        assert self.unacked == 0, f"{self.unacked} of the monitor's messages got no PUBACK"
        assert self.quantile(0.99) < p99_s, str(self)
        assert max(self.latencies) < max_s, str(self)

    def assert_stored(self, api: httpx.Client) -> None:
        """Every acknowledged message is stored (nothing acknowledged is lost)."""
        response = api.get("/v1/telemetries", params={"deviceID": self.device["id"], "limit": 1000})
        assert response.status_code == 200, response.text
        stored = {item["body"]["monitor"] for item in response.json()}
        missing = set(self.acked_seqs) - stored
        assert not missing, f"acknowledged but not stored: {sorted(missing)[:20]}"


# -- another client: is it served? ---------------------------------------------------------------


def _get(server: ServerProcess, path: str, headers: dict[str, str], timeout: float) -> int:
    """One GET on a fresh connection (`Connection: close`); its status."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.addresses["http"]["port"]), timeout)
    try:
        conn.request("GET", path, headers={**headers, "Connection": "close"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def probe(server: ServerProcess, device_id: str, timeout: float = 20.0) -> float:
    """`GET /healthz` and an authenticated `GET /v1/devices/{id}`, each on a new connection;
    the seconds both took (AssertionError unless both are 200)."""
    start = time.monotonic()
    assert _get(server, "/healthz", {}, timeout) == 200
    auth = {"Authorization": f"Bearer {server.admin_token}"}
    assert _get(server, f"/v1/devices/{device_id}", auth, timeout) == 200
    return time.monotonic() - start


def served_within(server: ServerProcess, device_id: str, bound_s: float) -> float:
    took = probe(server, device_id, timeout=bound_s + 5)
    assert took < bound_s, f"served in {took:.2f} s, over {bound_s} s"
    return took


class Prober:
    """`probe` every `period_s` in a thread; every answer's time (inf for a failure)."""

    def __init__(self, server: ServerProcess, device_id: str, period_s: float = 0.25) -> None:
        self.server = server
        self.device_id = device_id
        self.period_s = period_s
        self.times: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.times.append(probe(self.server, self.device_id))
            except (OSError, AssertionError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                self.times.append(math.inf)
            self._stop.wait(self.period_s)

    def __str__(self) -> str:
        worst = max(self.times, default=math.inf)
        return f"HTTP probes: {len(self.times)}, worst {worst * 1000:.0f} ms"

    def assert_served(self, max_s: float) -> None:
        assert self.times, "no probe ran"
        assert not self.failures, self.failures[:5]
        assert max(self.times) < max_s, str(self)


# -- an event loop in a thread, for attacks written as coroutines --------------------------------


class AttackLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="attack", daemon=True)

    def __enter__(self) -> AttackLoop:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        async def cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.submit(cancel_rest()).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


async def open_tls(
    server: ServerProcess, proxy_line: bytes | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TLS connection to the device port; with `proxy_line`, after that HTTP CONNECT header
    (which must be answered 200)."""
    context = ssl.create_default_context(cafile=server.ca_file)
    if proxy_line is None:
        return await asyncio.open_connection(
            "127.0.0.1", server.mqtt_port, ssl=context, server_hostname="localhost"
        )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.mqtt_port)
    writer.write(proxy_line)
    answer = await reader.readuntil(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    await writer.start_tls(context, server_hostname="localhost")
    return reader, writer


class Flooder:
    """A device writing QoS 0 PUBLISHes of `body` as fast as its socket takes them."""

    def __init__(self, server: ServerProcess, device: dict[str, Any]) -> None:
        self.server = server
        self.device = device
        self.sent = 0

    async def run(self, until: threading.Event, body: bytes) -> None:
        reader, writer = await open_tls(self.server)
        session = ClientSession()
        username, password = credentials(self.device)
        session.connect(self.device["id"], username, password.encode(), 60, True)
        writer.write(session.data_to_send())
        async with asyncio.timeout(10):
            while True:
                data = await reader.read(65536)
                assert data, "the flooder was closed before its CONNACK"
                session.receive_data(data)
                event = session.next_event()
                if isinstance(event, Connacked):
                    assert event.return_code == 0, event
                    break
        packet = encode(Publish(f"devices/{self.device['id']}/messages/events/", body, 0))
        try:
            while not until.is_set():
                writer.write(packet)
                self.sent += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):  # look at `until` while throttled
                        await writer.drain()
        finally:
            writer.transport.abort()


# -- adversarial JSON ----------------------------------------------------------------------------

# Values a JSON field may be given, as raw bytes: what parsers disagree on or choke on.
NUMBER_TOKENS = [
    b"NaN", b"Infinity", b"-Infinity", b"nan", b"1e999", b"-1e999", b"1e-999", b"-0", b"1E+2",
    b"123456789012345678901234567890", b"18446744073709551616", b"-9223372036854775809",
    b"9" * 5000,  # past Python's int-string limit (4,300 digits)
    b"0." + b"1" * 5000, b"1.7976931348623157e309", b"5e-324",
    b"00", b"01", b"1.", b".5", b"+1", b"0x10", b"1_000", b"--1",
]  # fmt: skip
STRING_TOKENS = [
    b'"\\ud800"', b'"\\udc00"', b'"a\\ud800b"', b'"\\ud800\\ud800"', b'"\\udbff\\udfff"',
    b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\x00"', b'"\xff\xfe"', b'"\xc0\xaf"', b'"\xed\xa0\x80"',
    b'"\xf4\x90\x80\x80"', b'"\\x41"', b'"\\u12"', b'"\\u12G4"', b'"\\', b'"unterminated',
    b'"\t\n"', b'"\\/\\b\\f"', '"é\u2028\u2029\ufeff"'.encode(), b'"' + b"\xe2\x82" + b'"',
]  # fmt: skip
OTHER_TOKENS = [
    b"null", b"true", b"false", b"True", b"None", b"undefined", b"{}", b"[]", b"[1,]", b'{"a":1,}',
    b"{'a': 1}", b"{a: 1}", b"/*c*/1", b"[1 2]", b'{"a" 1}', b'{"a":}', b"{,}", b"][", b"}{",
    b'{"a":1,"a":2,"a":"x"}', b"",
]  # fmt: skip
DEPTHS = [1, 10, 62, 63, 64, 65, 66, 127, 128, 255, 5000]  # around max_json_depth (64)

CONTENT_TYPES: list[str | None] = [
    "application/json",
    "application/json; charset=utf-8",
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=zz",
    "multipart/form-data",
    "application/json; charset=utf-16",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/octet-stream",
    'application/json; charset="',
    "application/",
    ";;;",
    "json",
    'application/json\t; x="\\',
]


@dataclass(frozen=True)
class BodyAttack:
    kind: str
    body: bytes
    content_type: str | None

    def __str__(self) -> str:
        shown = self.body[:120] + (b"..." if len(self.body) > 120 else b"")
        return f"{self.kind} ({len(self.body)} B, {self.content_type!r}): {shown!r}"


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value (small; nests at most 4 levels)."""
    kinds = ["int", "float", "str", "bool", "null"] + (["list", "dict"] if depth < 4 else [])
    match rng.choice(kinds):
        case "int":
            return rng.choice([0, -1, 1, 2**31, -(2**63), 2**63 - 1, rng.randint(-1000, 1000)])
        case "float":
            return rng.choice([0.5, -0.0, 1e308, -1e-308, rng.uniform(-1e6, 1e6)])
        case "str":
            return rng.choice(["", "x", "é", "a/b", "#", "$rid=1", "..", " ", "x" * 300, "\u0000"])
        case "bool":
            return rng.random() < 0.5
        case "null":
            return None
        case "list":
            return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
        case _:
            keys = ["", "a", "name", "value", "properties", "$version", "__proto__", "é"]
            return {
                rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))
            }


def _nest(rng: random.Random, depth: int) -> bytes:
    if rng.random() < 0.5:
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _token(rng: random.Random) -> bytes:
    match rng.randrange(6):
        case 0:
            return rng.choice(NUMBER_TOKENS)
        case 1:
            return rng.choice(STRING_TOKENS)
        case 2:
            return rng.choice(OTHER_TOKENS)
        case 3:
            return _nest(rng, rng.choice(DEPTHS))
        case 4:  # unbalanced
            return rng.choice([b"[" * rng.choice(DEPTHS), b'{"a":' * rng.choice(DEPTHS)])
        case _:
            return json.dumps(random_value(rng)).encode()


def _with_value(base: dict[str, Any], key: str, value: bytes) -> bytes:
    """`base` as JSON text with `key` set to the raw bytes `value`."""
    text = json.dumps({**base, key: MARKER}).encode()
    return text.replace(json.dumps(MARKER).encode(), value)


MARKER = "\u0001MARK\u0001"


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value (the root excluded) where another value could go."""
    out = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _paths(item, (*path, index))
    return out


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    if isinstance(value, dict):
        return {k: _replaced(v, path[1:], new) if k == path[0] else v for k, v in value.items()}
    return [_replaced(v, path[1:], new) if i == path[0] else v for i, v in enumerate(value)]


def _renamed(value: Any, path: tuple[Any, ...], new_key: str) -> Any:
    """`value` with the object key at the end of `path` renamed `new_key`."""
    if isinstance(value, dict):
        if len(path) == 1:
            return {(new_key if k == path[0] else k): v for k, v in value.items()}
        return {k: _renamed(v, path[1:], new_key) if k == path[0] else v for k, v in value.items()}
    return [_renamed(v, path[1:], new_key) if i == path[0] else v for i, v in enumerate(value)]


def _key_at_path(base: dict[str, Any], path: tuple[Any, ...], token: bytes) -> bytes:
    """`base` as JSON text with the object key at `path` replaced by the raw string `token`."""
    text = json.dumps(_renamed(base, path, MARKER)).encode()
    return text.replace(json.dumps(MARKER).encode(), token)


def _key_paths(value: Any) -> list[tuple[Any, ...]]:
    """The paths of `_paths` that end in an object key."""
    return [path for path in _paths(value) if isinstance(path[-1], str)]


def _at_path(base: dict[str, Any], path: tuple[Any, ...], token: bytes) -> bytes:
    """`base` as JSON text with the value at `path` replaced by the raw bytes `token`."""
    text = json.dumps(_replaced(base, path, MARKER)).encode()
    return text.replace(json.dumps(MARKER).encode(), token)


# What stores and serializers choke on though Python's json takes it, weighted up for
# "nested-token": values anywhere in a valid body.
UNSTORABLE_TOKENS = [
    b'"\\ud800"', b'"x\\udfff"', b'"\\u0000"', b'"a\\u0000b"', b"NaN", b"Infinity",
    b"18446744073709551616", b"-9223372036854775809", b"1e999", b'"' + b"x" * 300 + b'"',
]  # fmt: skip


def json_attack(rng: random.Random, base: dict[str, Any]) -> BodyAttack:
    """One malformed or adversarial body built around `base` (a valid body of the route)."""
    valid = json.dumps(base).encode()
    keys = [*base, "extra"] if base else ["extra", "a"]
    match rng.randrange(19):
        case 0:
            kind, body = "valid", valid
        case 1 | 2 | 3:
            kind, body = "field-token", _with_value(base, rng.choice(keys), _token(rng))
        case 16 | 17 if _paths(base):
            token = rng.choice(UNSTORABLE_TOKENS) if rng.random() < 0.7 else _token(rng)
            kind, body = "nested-token", _at_path(base, rng.choice(_paths(base)), token)
        case 18 if _key_paths(base):
            key = rng.choice([t for t in (*UNSTORABLE_TOKENS, *STRING_TOKENS) if t[:1] == b'"'])
            kind, body = "odd-key", _key_at_path(base, rng.choice(_key_paths(base)), key)
        case 4:
            field = rng.choice(keys)
            kind, body = (
                "field-type",
                _with_value(base, field, json.dumps(random_value(rng)).encode()),
            )
        case 5:
            kind, body = "whole-token", _token(rng)
        case 6:
            kind, body = "truncated", valid[: rng.randrange(len(valid))]
        case 7:
            out = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(len(out))] = rng.randrange(256)
            kind, body = "bytes-flipped", bytes(out)
        case 8:
            key = rng.choice(keys)
            dup = json.dumps(key).encode() + b":" + _token(rng)
            kind, body = "duplicate-key", valid[:-1] + (b"," if base else b"") + dup + b"}"
        case 9:
            encoding = rng.choice(["utf-16", "utf-16-le", "utf-32", "utf-8-sig", "latin-1"])
            kind, body = f"encoded-{encoding}", valid.decode().encode(encoding, "replace")
        case 10:
            kind, body = "empty", rng.choice([b"", b" ", b"\r\n\t ", b"\x00", b"\xef\xbb\xbf"])
        case 11:
            tail = rng.choice([b"x", b"{}", valid, b"\x00", b" // c", b",", b"]"])
            kind, body = "trailing", valid + tail
        case 12:
            length = rng.choice([1_000, 65_536, 300_000, 1_000_000, 4 * MIB + 1])
            kind, body = (
                "long-string",
                _with_value(base, rng.choice(keys), b'"' + b"x" * length + b'"'),
            )
        case 13:
            count = rng.choice([1_000, 20_000])
            many = b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(count)) + b"}"
            kind, body = "many-keys", _with_value(base, rng.choice(keys), many)
        case 14:
            kind, body = "deep", _with_value(base, rng.choice(keys), _nest(rng, rng.choice(DEPTHS)))
        case _:
            kind, body = (
                "long-array",
                _with_value(base, rng.choice(keys), b"[" + b"0," * 100_000 + b"0]"),
            )
    content_type = "application/json" if rng.random() < 0.75 else rng.choice(CONTENT_TYPES)
    return BodyAttack(kind, body, content_type)


# -- adversarial MQTT ----------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _packet(first: int, body: bytes, length: int | None = None) -> bytes:
    return bytes([first]) + _varint(len(body) if length is None else length) + body


def _mqtt_string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def crafted_packets(device_id: str) -> list[bytes]:
    """Packets that are wrong in one specific way (besides the random mutations)."""
    topic = f"devices/{device_id}/messages/events/".encode()
    publish_body = _mqtt_string(topic) + b"\x00\x01" + b"{}"
    many_filters = b"".join(_mqtt_string(b"x/%d" % i) + b"\x01" for i in range(3000))
    return [
        _packet(0x00, b""),  # reserved type 0
        _packet(0xF0, b""),  # reserved type 15
        _packet(0x36, publish_body),  # PUBLISH QoS 3
        _packet(0x34, publish_body),  # PUBLISH QoS 2
        _packet(0x32, _mqtt_string(topic) + b"\x00\x00{}"),  # packet id 0
        _packet(0x30, _mqtt_string(b"a/+/b") + b"{}"),  # wildcard in a topic name
        _packet(0x30, _mqtt_string(b"") + b"{}"),  # empty topic
        _packet(0x30, _mqtt_string(b"a\x00b") + b"{}"),  # NUL in a topic
        _packet(0x30, _mqtt_string(b"\xff\xfe") + b"{}"),  # bad UTF-8 topic
        _packet(0x30, _mqtt_string(b"\xed\xa0\x80") + b"{}"),  # encoded surrogate
        _packet(0x30, b"\xff\xff" + topic),  # topic length past the packet
        _packet(0x32, _mqtt_string(topic)),  # QoS 1 with no packet id
        _packet(0x82, b"\x00\x05"),  # SUBSCRIBE with no filter
        _packet(0x82, b"\x00\x05" + _mqtt_string(b"#") + b"\x03"),  # requested QoS 3
        _packet(0x80, b"\x00\x05" + _mqtt_string(b"#") + b"\x01"),  # SUBSCRIBE flags 0
        _packet(0x82, b"\x00\x05" + _mqtt_string(b"a/#/b") + b"\x01"),  # '#' not last
        _packet(0x82, b"\x00\x05" + many_filters),  # 3,000 filters in one SUBSCRIBE
        _packet(0xA2, b"\x00\x06"),  # UNSUBSCRIBE with no filter
        _packet(0xC0, b"\x00"),  # PINGREQ with a body
        _packet(0xE0, b"\x00"),  # DISCONNECT with a body
        _packet(0x40, b"\x12\x34"),  # PUBACK for nothing
        _packet(0x50, b"\x00\x01"),  # PUBREC
        _packet(0x60, b"\x00\x01"),  # PUBREL with the wrong flags
        _packet(0x70, b"\x00\x01"),  # PUBCOMP
        _packet(0x20, b"\x00\x00"),  # CONNACK, from a client
        _packet(0x90, b"\x00\x01\x00"),  # SUBACK, from a client
        _packet(0x10, b""),  # a second CONNECT, empty
        b"\x30\xff\xff\xff\xff\x7f",  # a five-byte remaining length
        b"\x30\xff\xff\xff\x7f",  # the largest remaining length (256 MiB)
        b"\x30\x80\x80\x80\x01",  # 2 MiB: over the packet limit
        b"\x30\x80\x80\x10" + b"x" * 300,  # 256 KiB announced, 300 B sent
        b"\x30",  # a fixed header cut short
        encode(Pingreq()) * 200,  # many pings at once
        encode(Publish(f"devices/{device_id}/messages/events/", b"x" * 262_145, 1, packet_id=9)),
        encode(Publish("devices/someone-else/messages/events/", b"{}", 1, packet_id=10)),
        encode(Publish("$iothub/twin/PATCH/properties/reported/", b"{}", 0)),  # no $rid
        encode(Publish("$iothub/twin/PATCH/properties/reported/?$rid=" + "9" * 5000, b"{}", 0)),
        encode(Publish("$iothub/methods/res/200/?$rid=nosuch", b"{}", 0)),
        encode(Publish("$iothub/methods/res/abc/?$rid=1", b"{}", 0)),
        encode(Subscribe(7, (("devices/someone-else/messages/devicebound/#", 1),))),
        encode(Unsubscribe(8, ("never-subscribed",))),
        encode(Pubrel(3)),
        encode(Puback(65535)),
        encode(Disconnect()) + encode(Publish(topic.decode(), b"{}", 1, packet_id=11)),
    ]  # fmt: skip


def raw_connect(
    client_id: bytes,
    username: bytes | None,
    password: bytes | None,
    *,
    keepalive: int = 60,
    level: int = 4,
    name: bytes = b"MQTT",
    will: tuple[bytes, bytes] | None = None,
    flags: int = 0x02,
) -> bytes:
    """A CONNECT built by hand, so that it may break rules the codec's encoder enforces."""
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    if will is not None:
        flags |= 0x04
    payload = _mqtt_string(client_id)
    if will is not None:
        payload += _mqtt_string(will[0]) + _mqtt_string(will[1])
    payload += b"".join(_mqtt_string(v) for v in (username, password) if v is not None)
    variable = _mqtt_string(name) + bytes([level, flags]) + keepalive.to_bytes(2, "big")
    return _packet(0x10, variable + payload)


def connect_packets(device_id: str, username: str, password: str) -> list[bytes]:
    """CONNECTs with odd but legal choices, and wrong ones, with the device's credentials."""
    cid, user, pw = device_id.encode(), username.encode(), password.encode()
    topic = f"devices/{device_id}/messages/events/".encode()
    return [
        raw_connect(cid, user, pw, keepalive=0),
        raw_connect(cid, user, pw, keepalive=65535, flags=0),  # a persistent session
        raw_connect(cid, user, pw, will=(topic, b"{}"), flags=0x02 | 0x08),  # will QoS 1
        raw_connect(cid, user, pw, will=(b"#", b"x"), flags=0x02 | 0x20),  # wildcard will
        raw_connect(cid, user, pw, will=(topic, b"x"), flags=0x02 | 0x18),  # will QoS 3
        raw_connect(cid, user, pw, flags=0x02 | 0x08),  # will QoS without a will
        raw_connect(cid, user, pw, level=3, name=b"MQIsdp"),
        raw_connect(cid, user, pw, level=5),
        raw_connect(cid, user, pw, level=4, name=b"MQTX"),
        raw_connect(cid, user, pw, flags=0x03),  # the reserved flag
        raw_connect(cid, user, None),
        raw_connect(cid, None, pw),  # a password without a user name
        raw_connect(cid, None, None),
        raw_connect(b"", user, pw),
        raw_connect(b"x" * 1000, user, pw),
        raw_connect(b"\xff\xfe", user, pw),
        raw_connect(cid, user + b"x" * 2000, pw),
        raw_connect(cid, user, pw * 50),
        raw_connect(cid, b"\x00", b"\x00"),
        raw_connect(cid, user.replace(cid, b"other"), pw),
        raw_connect(cid, user, pw)[:-5] + b"\xff" * 5,  # a mangled password
    ]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    match rng.randrange(7):
        case 0:  # flip bits
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        case 1:  # truncate
            del out[rng.randrange(1, len(out)) :]
        case 2:  # lie about the remaining length
            out[1] = rng.randrange(256)
        case 3:  # garbage after it
            out += rng.randbytes(rng.randint(1, 64))
        case 4:  # random bytes spliced in
            at = rng.randrange(len(out))
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        case 5:  # a random byte overwritten
            out[rng.randrange(len(out))] = rng.randrange(256)
        case _:  # another packet type
            out[0] = (out[0] & 0x0F) | (rng.randrange(16) << 4)
    return bytes(out)


PROXY_LINES = [
    b"CONNECT localhost:8883 HTTP/1.1\r\nHost: localhost:8883\r\n\r\n",
    b"CONNECT localhost:8883 HTTP/1.0\r\n\r\n",
    b"CONNECT \xff\xfe HTTP/1.1\r\n\r\n",  # the target is not used: the tunnel is to the hub
]
BAD_PROXY_LINES = [
    b"CONNECT\r\n\r\n",
    b"CONNECT a b c d\r\n\r\n",
    b"CONNECT localhost:8883 HTTP/2\r\n\r\n",
    b"CONNECTED x HTTP/1.1\r\n\r\n",
    b"CONNECT " + b"x" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"CONNECT localhost:8883 HTTP/1.1\r\n" + b"X: y\r\n" * 2000 + b"\r\n",
    b"C\r\n\r\n",
    b"CONNECT localhost:8883 HTTP/1.1\n\n",
]


def is_central_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message", "requestId", "time"}
        and all(isinstance(v, str) and v for v in body["error"].values())
    )


def is_st_error(body: Any) -> bool:
    if not (isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], dict)):
        return False
    error = body["error"]
    return (
        {"code", "message"} <= set(error) <= {"code", "message", "field"}
        and isinstance(error["code"], str)
        and bool(error["code"])
        and isinstance(error["message"], str)
        and bool(error["message"])
        and isinstance(error.get("field", ""), str)
    )


def is_oauth_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"error", "error_description"}
        and body["error"]
        in {"invalid_request", "invalid_client", "invalid_grant", "unsupported_grant_type"}
        and isinstance(body["error_description"], str)
    )


def is_itwin_error(body: Any) -> bool:
    """The iTwin REST face's two shapes: `{"errors": [{"message", "path"}]}` and, for the
    Sensor Data Service's integrations, `{"error": {"code", "message"}}`."""
    if not isinstance(body, dict):
        return False
    if set(body) == {"errors"}:
        items = body["errors"]
        return (
            isinstance(items, list)
            and bool(items)
            and all(
                isinstance(i, dict)
                and set(i) == {"message", "path"}
                and all(isinstance(v, str) and v for v in i.values())
                for i in items
            )
        )
    return (
        set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
        and body["error"]["code"] == "InvalidProcessIntegrationRequest"
        and isinstance(body["error"]["message"], str)
    )


def is_json_rpc_error(message: Any) -> bool:
    """A JSON-RPC 2.0 error object as the iTwin socket API answers (never -32603: that is
    a bug of ours)."""
    if not (isinstance(message, dict) and set(message) == {"jsonrpc", "id", "error"}):
        return False
    error = message["error"]
    return (
        message["jsonrpc"] == "2.0"
        and isinstance(error, dict)
        and set(error) == {"code", "message"}
        and isinstance(error["code"], int)
        and error["code"] != -32603
        and isinstance(error["message"], str)
        and bool(error["message"])
    )


HUB_MESSAGE = re.compile(r"ErrorCode:(ArgumentInvalid|IotHubUnauthorizedAccess|MessageTooLarge);")


def is_hub_error(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"Message", "ExceptionMessage"}
        and isinstance(body["Message"], str)
        and HUB_MESSAGE.match(body["Message"]) is not None
    )


def raise_fd_limit(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def tcp(server: ServerProcess, port: int | None = None) -> socket.socket:
    port = port or int(server.addresses["http"]["port"])
    return socket.create_connection(("127.0.0.1", port), timeout=5)
