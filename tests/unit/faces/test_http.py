"""Tests for thinghub.faces._http: JSON bodies are depth-checked before FastAPI parses them.

A face app built by face_app, with one JSON route and one form route, driven in process
through httpx's ASGI transport (no sockets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Body, Depends, Request
from fastapi.responses import Response

from tests.unit.faces.context import face_context
from thinghub.domain import errors
from thinghub.domain.model import Principal, Role
from thinghub.faces._http import (
    BodyRejected,
    JsonDepth,
    OrjsonResponse,
    authenticate_before_body,
    face_app,
    principal_of,
)
from thinghub.services.core import Services

LIMIT = 3
CALLER = Principal("acc-1", Role.ADMIN, "tester")


async def authenticate(services: Services, header: str | None) -> Principal:
    if header != "Bearer good":
        raise errors.Unauthorized("bad credentials", field="Authorization")
    return CALLER


def app_with_routes() -> Any:
    app = face_app(
        face_context(max_json_depth=LIMIT), title="test", version="1", form_paths=("/form",)
    )
    authenticate_before_body(app, authenticate)
    caller = Depends(principal_of(authenticate))

    @app.post("/echo")
    async def echo(body: Annotated[Any, Body()] = None, _: Principal = caller) -> Response:
        return OrjsonResponse({"got": body})

    @app.post("/form")
    async def form(request: Request) -> Response:
        return OrjsonResponse({"bytes": len(await request.body())})

    return app


@pytest.fixture
async def api() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_with_routes())
    async with httpx.AsyncClient(
        transport=transport, base_url="http://face", headers={"Authorization": "Bearer good"}
    ) as client:
        yield client


async def test_a_body_at_the_limit_is_parsed(api: httpx.AsyncClient) -> None:
    response = await api.post("/echo", content=b'{"a": {"b": [1]}}')
    assert response.status_code == 200, response.text
    assert response.json() == {"got": {"a": {"b": [1]}}}


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": {"b": [[1]]}}',
        b"[" * 131072 + b"]" * 131072,  # a RecursionError in json.loads: was a generic 400
        b'{"":' * 52428,
    ],
    ids=["one-too-deep", "arrays", "open-objects"],
)
async def test_a_deeper_body_is_400_in_the_face_shape(api: httpx.AsyncClient, body: bytes) -> None:
    response = await api.post("/echo", content=body)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {
            "code": "InvalidInput",
            "message": f"body nests deeper than {LIMIT} levels of arrays and objects "
            "(max_json_depth)",
            "field": "body",
        }
    }


async def test_credentials_are_judged_before_the_depth(api: httpx.AsyncClient) -> None:
    deep = b"[" * 100 + b"]" * 100
    response = await api.post("/echo", content=deep, headers={"Authorization": "Bearer bad"})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["field"] == "Authorization"


@pytest.mark.parametrize(
    "body",
    [b'{"a": "\xb1"}', b'{"a": ' + b"9" * 5000 + b"}"],
    ids=["not-utf-8", "5000-digits"],
)
async def test_a_body_json_cannot_read_is_malformed_json_after_the_credentials(
    api: httpx.AsyncClient, body: bytes
) -> None:
    """FastAPI answers these with a bare 400 ("There was an error parsing the body"): it
    came before the credentials were checked, and without the face's field. Found by
    tests/e2e/test_abuse_fuzz.py."""
    response = await api.post("/echo", content=body)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": {"code": "InvalidInput", "message": "the body is not valid JSON", "field": "body"}
    }
    response = await api.post("/echo", content=body, headers={"Authorization": "Bearer bad"})
    assert response.status_code == 401, response.text


async def test_brackets_in_strings_do_not_count(api: httpx.AsyncClient) -> None:
    response = await api.post("/echo", content=b'{"a": "[[[[[[{{{{"}')
    assert response.status_code == 200, response.text


async def test_form_bodies_are_not_judged_as_json(api: httpx.AsyncClient) -> None:
    form = b"grant_type=password&username=" + b"[" * 100
    response = await api.post(
        "/form", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"bytes": len(form)}


async def test_a_body_in_parts_is_judged_whole_before_its_last_part() -> None:
    """The depth spans the parts: `[[` then `[]]]` is 3 deep (too deep for 2), and no part
    is too deep alone. The last part is refused, so nothing downstream sees all of it."""
    parts = [
        {"type": "http.request", "body": b"[[", "more_body": True},
        {"type": "http.request", "body": b"[]]]", "more_body": False},
    ]
    handed: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return parts.pop(0)

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            handed.append(message["body"])
            if not message["more_body"]:
                return

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    scope = {"type": "http", "method": "POST", "headers": [(b"content-type", b"application/json")]}
    with pytest.raises(BodyRejected) as refused:
        await JsonDepth(inner, limit=2)(scope, receive, send)
    assert handed == [b"[["]
    assert refused.value.status_code == 400
    assert refused.value.error.field == "body"
