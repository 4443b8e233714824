"""The console's sign-in form (faces/console/login.py) over the memory stores: showing it
stores nothing, its CSRF token is bound to its own cookie, and only a sign-in writes."""

from __future__ import annotations

import re

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.unit.services.conftest import TestClock
from tests.unit.services.node import node
from thinghub.app import build_services
from thinghub.config import Settings
from thinghub.domain.model import Role
from thinghub.faces.console.app import create_app
from thinghub.faces.console.sessions import FORM_TTL_S, form_id_alive, is_form_id, new_form_id
from thinghub.services.core import Services
from thinghub.storage.memory import Tables, memory_stores

PASSWORD = "a long enough password 1"
GETS = 50


@pytest.fixture
def clock() -> TestClock:
    return TestClock()


@pytest.fixture
def tables() -> Tables:
    return Tables()


@pytest.fixture
async def services(clock: TestClock, tables: Tables) -> Services:
    live = node(clock)
    built = build_services(
        Settings.defaults(),
        memory_stores(tables),
        bus=live.bus,
        clock=clock,
        presence=live.presence,
        channel=live.links,
        locks=live.locks,
        counter=live.counter,
        issuer=None,
    )
    await built.start()
    return built


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, html[:300]
    return match.group(1)


def _client(services: Services, clock: TestClock) -> httpx.AsyncClient:
    console = create_app(services, Settings.defaults(), clock=clock.now)
    transport = httpx.ASGITransport(app=Starlette(routes=[Mount("/console", app=console)]))
    return httpx.AsyncClient(transport=transport, base_url="http://hub", follow_redirects=False)


async def test_showing_the_login_form_stores_nothing(
    services: Services, clock: TestClock, tables: Tables
) -> None:
    async with _client(services, clock) as http:
        pages = []
        for _ in range(GETS):
            http.cookies.clear()  # every GET a new anonymous browser
            pages.append(await http.get("/console/login"))
        cookie = http.cookies["thinghub_console"]
        again = await http.get("/console/login")  # a browser that comes back with its cookie
    assert all(page.status_code == 200 for page in pages)
    assert len({_csrf(page.text) for page in pages}) == GETS  # a token per form id
    assert is_form_id(cookie)
    assert again.cookies["thinghub_console"] == cookie  # its form id kept
    assert _csrf(again.text) == _csrf(pages[-1].text)
    assert not tables.console_sessions  # not one row


async def test_a_form_token_counts_only_with_its_own_cookie(
    services: Services, clock: TestClock, tables: Tables
) -> None:
    account = await services.auth.ensure_account()
    await services.auth.create_user(account.id, "alice", PASSWORD, Role.ADMIN)
    async with _client(services, clock) as mine, _client(services, clock) as theirs:
        my_token = _csrf((await mine.get("/console/login")).text)
        their_token = _csrf((await theirs.get("/console/login")).text)
        swapped = await mine.post(
            "/console/login",
            data={"username": "alice", "password": PASSWORD, "csrf": their_token},
        )
        assert swapped.status_code == 403
        assert not tables.console_sessions
        signed_in = await mine.post(
            "/console/login", data={"username": "alice", "password": PASSWORD, "csrf": my_token}
        )
        assert signed_in.status_code == 303, signed_in.text[:300]
        assert len(tables.console_sessions) == 1  # the session, written at sign-in only
        assert (await mine.get("/console/devices")).status_code == 200


def test_a_form_id_lives_for_its_ttl_only() -> None:
    form_id = new_form_id(1000.0)
    assert is_form_id(form_id)
    assert form_id_alive(form_id, 1000.0)
    assert form_id_alive(form_id, 1000.0 + FORM_TTL_S - 1)
    assert not form_id_alive(form_id, 1000.0 + FORM_TTL_S)
    assert not form_id_alive(form_id, 999.0)  # issued in the future: forged
    for forged in ("anon.", "anon.x.y", "anon.1000", "anon.-1.abc", "anon.١٠٠٠.abc", "abc"):
        assert not form_id_alive(forged, 1000.0), forged
