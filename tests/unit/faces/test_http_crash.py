"""HTTP plumbing shared by the faces (faces/_http.py) and the root app: what a 500 says."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.unit.faces.context import face_context
from thinghub.app import _crashed
from thinghub.faces._http import face_app


async def crash(request: Request) -> Response:
    raise RuntimeError("a bug")


async def answer(app: Any) -> httpx.Response:
    # raise_app_exceptions=False: the server (uvicorn) gets the error after the answer.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/crash")


async def test_a_face_500_says_connection_close(caplog: pytest.LogCaptureFixture) -> None:
    app = face_app(face_context(), title="t", version="1")
    app.add_api_route("/crash", crash)
    response = await answer(app)
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
    assert response.json()["error"]["code"] == "InternalError"
    assert "unhandled error in t" in caplog.text


async def test_a_root_500_says_connection_close() -> None:
    app = Starlette(routes=[Route("/crash", crash)], exception_handlers={500: _crashed})
    response = await answer(app)
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
    assert response.json()["error"]["code"] == "InternalError"
