"""Tests for thinghub.devices.hub: decoding a device's answer to a direct method, and what
accepting a connection logs."""

from __future__ import annotations

import logging
import time

import pytest

from tests.unit.services.node import node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.devices.hub import CONNECT_LOG_INTERVAL_S, EXPIRY_PURGE_MIN, Hub, _decode_payload
from thinghub.storage.memory import memory_stores


def test_method_answers_are_json_when_they_can_be() -> None:
    assert _decode_payload(b'{"ok": [1, 2]}', 64) == {"ok": [1, 2]}
    assert _decode_payload(b"", 64) is None
    assert _decode_payload(b"plain text", 64) == "plain text"
    assert _decode_payload(b"\xff\xfe", 64) is None


def test_method_answers_deeper_than_the_limit_stay_text() -> None:
    """json.loads would recurse into it (RecursionError near 1,000 levels, which dropped the
    device's connection): it reaches the caller as the text it is."""
    deep = b"[" * 5000 + b"]" * 5000
    assert _decode_payload(deep, 64) == deep.decode()
    assert _decode_payload(b"[[1]]", 2) == [[1]]
    assert _decode_payload(b"[[[1]]]", 2) == "[[[1]]]"


def _hub() -> Hub:
    class Clock:
        def now(self) -> float:
            return 1_700_000_000.0

    live = node(Clock())
    services = build_services(
        Settings.defaults(),
        memory_stores(),
        bus=live.bus,
        clock=Clock(),
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=None,
    )
    return Hub(services, live.links, max_json_depth=64)


def test_each_connect_is_logged_at_debug_and_summed_up_at_info_at_most_every_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = _hub()
    now = [time.monotonic()]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    caplog.set_level(logging.DEBUG, logger="thinghub.devices.hub")

    def lines(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level]

    for i in range(3):
        hub._log_connected(f"d{i}", f"127.0.0.1:{i}")
    assert lines(logging.DEBUG) == [f"device d{i} connected from 127.0.0.1:{i}" for i in range(3)]
    # A lone connect is seen at info at once; the storm after it is not, line by line.
    assert lines(logging.INFO) == [
        "device d0 connected from 127.0.0.1:0 (1 device connections accepted since the last "
        "such line)"
    ]
    now[0] += CONNECT_LOG_INTERVAL_S
    hub._log_connected("d3", "127.0.0.1:3")
    assert lines(logging.INFO)[1:] == [
        "device d3 connected from 127.0.0.1:3 (3 device connections accepted since the last "
        "such line)"
    ]


async def test_the_expiry_heap_lets_go_of_ended_connections() -> None:
    """A device reconnecting in a loop with a far-off token expiry: the entries of its closed
    connections go at the next purge, so the heap (and the links it holds) stays bounded."""

    class Conn:
        is_closed = False

    class Link:
        def __init__(self) -> None:
            self.conn = Conn()
            self.handed_over = False

    hub = _hub()
    far = 1_700_000_000 + 365 * 86400
    for _ in range(10 * EXPIRY_PURGE_MIN):
        link = Link()
        hub._close_at_expiry(link, far)  # type: ignore[arg-type]
        link.conn.is_closed = True  # the device disconnects, then connects again
    assert len(hub._expiries) <= 2 * EXPIRY_PURGE_MIN
    live = Link()
    hub._close_at_expiry(live, far)  # type: ignore[arg-type]
    for _ in range(2 * EXPIRY_PURGE_MIN):
        ended = Link()
        hub._close_at_expiry(ended, far)  # type: ignore[arg-type]
        ended.conn.is_closed = True
    assert live in [entry[2] for entry in hub._expiries]  # an open connection stays
    assert hub._expiry_timer is not None
    hub._expiry_timer.cancel()
