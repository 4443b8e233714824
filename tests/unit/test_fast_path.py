"""thinghub.fast_path: which requests the hot routes take, and that every other outcome is left
to the full stack (or, for an endpoint, answered as the root app would)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from thinghub.devices.http_ingest import _device_events
from thinghub.domain import errors
from thinghub.fast_path import FastEndpoint, FastPath, FastRoute, header


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": headers or []}


class _Full:
    """The full stack: records the requests it gets and answers 299."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"full"})


async def _call(app: Any, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _route(outcome: Any) -> tuple[FastRoute, list[str]]:
    seen: list[str] = []

    async def answer(scope: Scope, segment: str) -> bytes | None:
        seen.append(segment)
        if isinstance(outcome, BaseException):
            raise outcome
        result: bytes | None = outcome
        return result

    return FastRoute("GET", "/devices/", answer), seen


def test_a_matching_get_is_answered_by_the_route_alone() -> None:
    full = _Full()
    route, seen = _route(b'{"id":"d1"}')
    app = FastPath(full, [("/v1/devices/", route)])
    sent = asyncio.run(_call(app, _scope("GET", "/v1/devices/d1")))
    assert seen == ["d1"] and full.paths == []
    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"11"), (b"content-type", b"application/json")],
        },
        {"type": "http.response.body", "body": b'{"id":"d1"}'},
    ]


@pytest.mark.parametrize(
    "outcome",
    [None, errors.Unauthorized("unknown API token"), errors.NotFound("no device")],
)
def test_no_body_or_a_domain_error_leaves_the_request_to_the_full_stack(outcome: Any) -> None:
    full = _Full()
    route, seen = _route(outcome)
    sent = asyncio.run(
        _call(FastPath(full, [("/v1/devices/", route)]), _scope("GET", "/v1/devices/d1"))
    )
    assert seen == ["d1"] and full.paths == ["/v1/devices/d1"]
    assert sent[0]["status"] == 299


def test_a_bug_in_the_route_is_logged_and_the_full_stack_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    full = _Full()
    route, _ = _route(KeyError("bug"))
    with caplog.at_level(logging.WARNING, logger="thinghub.fast_path"):
        sent = asyncio.run(
            _call(FastPath(full, [("/v1/devices/", route)]), _scope("GET", "/v1/devices/d1"))
        )
    assert full.paths == ["/v1/devices/d1"] and sent[0]["status"] == 299
    assert "fast path of /v1/devices/ failed" in caplog.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/devices/d1"),
        ("HEAD", "/v1/devices/d1"),
        ("GET", "/v1/devices/"),
        ("GET", "/v1/devices/d1/"),
        ("GET", "/v1/devices/d1/twin"),
        ("GET", "/v1/devices"),
        ("GET", "/v2/devices/d1"),
    ],
)
def test_other_methods_and_paths_go_to_the_full_stack(method: str, path: str) -> None:
    full = _Full()
    route, seen = _route(b"{}")
    asyncio.run(_call(FastPath(full, [("/v1/devices/", route)]), _scope(method, path)))
    assert seen == [] and full.paths == [path]


def test_header_is_the_first_value_decoded_as_latin_1() -> None:
    scope = _scope(
        "GET", "/", [(b"x-a", b"1"), (b"authorization", b"\xe9"), (b"authorization", b"2")]
    )
    assert header(scope, b"authorization") == "\xe9"
    assert header(scope, b"x-b") is None


# -- endpoints -------------------------------------------------------------------------------


async def _crashed(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"crashed"})


def _endpoint(fail: str | None) -> tuple[FastEndpoint, list[dict[str, str]]]:
    params: list[dict[str, str]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        params.append(scope["path_params"])
        if fail == "before":
            raise RuntimeError("before")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        if fail == "after":
            raise RuntimeError("after")
        await send({"type": "http.response.body", "body": b""})

    return FastEndpoint("POST", _device_events, app), params


def test_an_endpoint_gets_its_path_parameters_and_answers() -> None:
    full = _Full()
    endpoint, params = _endpoint(None)
    app = FastPath(full, [], [endpoint], _crashed)
    sent = asyncio.run(_call(app, _scope("POST", "/devices/d1/messages/events")))
    assert params == [{"device_id": "d1"}] and full.paths == []
    assert [m.get("status") for m in sent] == [204, None]
    # Another method on the same path is the full stack's (its 405).
    asyncio.run(_call(app, _scope("GET", "/devices/d1/messages/events")))
    assert full.paths == ["/devices/d1/messages/events"]


def test_an_endpoint_crash_before_its_answer_gets_the_500_and_is_raised() -> None:
    endpoint, _ = _endpoint("before")
    sent: list[Message] = []

    async def run() -> None:
        async def receive() -> Message:
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        await FastPath(_Full(), [], [endpoint], _crashed)(
            _scope("POST", "/devices/d1/messages/events"), receive, send
        )

    with pytest.raises(RuntimeError, match="before"):
        asyncio.run(run())
    assert [m.get("status") for m in sent] == [500, None]


def test_an_endpoint_crash_after_its_answer_started_is_only_raised() -> None:
    endpoint, _ = _endpoint("after")
    app = FastPath(_Full(), [], [endpoint], _crashed)
    with pytest.raises(RuntimeError, match="after"):
        asyncio.run(_call(app, _scope("POST", "/devices/d1/messages/events")))


@pytest.mark.parametrize(
    "path",
    [
        "/devices/d1/messages/events",
        "/devices/a b%/messages/events",
        "/devices//messages/events",
        "/devices/d1/modules/m1/messages/events",
        "/devices/d1/messages/events/",
        "/devices/d1/messages/eventsx",
        "/devicesx/d1/messages/events",
        "/devices/messages/events",
    ],
)
def test_the_ingest_match_is_starlettes(path: str) -> None:
    route = Route("/devices/{device_id}/messages/events", lambda request: None, methods=["POST"])
    match, child = route.matches({"type": "http", "method": "POST", "path": path, "root_path": ""})
    expected = child["path_params"] if match is Match.FULL else None
    assert _device_events(path) == expected
