"""Console sessions (faces/console/sessions.py): the shared store's expiry and bounds, what it
stores (no cookie value, no readable secret), and the failed-login limit."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from thinghub.bus.clock import SystemClock
from thinghub.faces.console.sessions import (
    ADDRESS_FACTOR,
    Flash,
    LoginFailures,
    SessionSweeper,
    SharedSessionStore,
    new_session,
    session_key,
)
from thinghub.ports import Stores
from thinghub.services.console_sessions import ConsoleSessionService
from thinghub.storage.memory import Tables, memory_stores

IDLE_S = 60.0
WINDOW_S = 300.0


def store(max_sessions: int = 10, stores: Stores | None = None) -> SharedSessionStore:
    return SharedSessionStore(
        ConsoleSessionService(stores or memory_stores(), SystemClock()),
        idle_s=IDLE_S,
        max_sessions=max_sessions,
        failure_window_s=WINDOW_S,
    )


def test_new_sessions_are_random_and_stored_by_hash() -> None:
    one, two = new_session(0.0, 100.0), new_session(0.0, 100.0)
    assert one.id != two.id and one.csrf != two.csrf
    assert len(one.id) >= 43  # 256 bits, URL-safe base64
    assert not one.is_authenticated
    assert session_key(one.id) != one.id and len(session_key(one.id)) == 64


async def test_a_session_ends_when_idle_or_expired() -> None:
    sessions = store()
    idle = new_session(0.0, 1000.0, access_token="t", user_id="u")
    await sessions.put(idle)
    assert await sessions.get(idle.id, IDLE_S - 1) == idle
    assert await sessions.get(idle.id, IDLE_S) is None  # idle too long
    assert await sessions.service.get(session_key(idle.id)) is None  # and dropped
    short = new_session(0.0, 10.0, access_token="t")
    await sessions.put(short)
    assert await sessions.get(short.id, 9.0) == short
    assert await sessions.get(short.id, 10.0) is None  # its token expired
    assert await sessions.get("never issued", 0.0) is None


async def test_two_nodes_on_one_database_share_sessions() -> None:
    tables = Tables()
    one, two = store(stores=memory_stores(tables)), store(stores=memory_stores(tables))
    session = new_session(0.0, 1000.0, access_token="jwt", user_id="u", username="alice")
    session = session.with_flash(Flash("ok", "Saved.", detail="{}", where="twin"))
    await one.put(session)
    assert await two.get(session.id, 1.0) == session  # flashes, token, CSRF token and all
    await two.delete(session.id)
    assert await one.get(session.id, 1.0) is None


async def test_the_record_holds_no_cookie_value_and_no_readable_secret() -> None:
    tables = Tables()
    sessions = store(stores=memory_stores(tables))
    session = new_session(0.0, 1000.0, access_token="eyJ.secret.jwt", user_id="u")
    await sessions.put(session)
    [row] = tables.console_sessions.values()
    text = repr(row)
    assert session.id not in text and session.csrf not in text and "eyJ.secret.jwt" not in text
    assert row[0] == session_key(session.id)
    # The sealed secrets open only with the cookie value: a record copied under another
    # id's key does not open with that id (and is dropped).
    other = new_session(0.0, 1000.0)
    stored = await sessions.service.get(session_key(session.id))
    assert stored is not None
    await sessions.service.put(replace(stored, key=session_key(other.id)))
    assert await sessions.get(other.id, 1.0) is None
    assert await sessions.service.get(session_key(other.id)) is None


async def test_the_sweep_drops_ended_and_least_recently_used_sessions() -> None:
    sessions = store(max_sessions=2)
    ended = new_session(0.0, 5.0)
    a, b, c = (new_session(float(t), 100.0) for t in (1, 2, 3))
    for s in (ended, a, b, c):
        await sessions.put(s)
    await sessions.put(replace(a, seen_at=4.0))  # used again: b is now the oldest
    assert await sessions.sweep(6.0) == 2  # the ended one, and b beyond max_sessions
    assert await sessions.service.get(session_key(ended.id)) is None
    assert await sessions.get(b.id, 6.0) is None
    assert await sessions.get(a.id, 6.0) is not None and await sessions.get(c.id, 6.0) == c


async def test_the_sweeper_deletes_ended_sessions_in_the_background() -> None:
    sessions = store()
    ended, alive = new_session(0.0, 5.0), new_session(0.0, 1000.0)
    for s in (ended, alive):
        await sessions.put(s)
    sweeper = SessionSweeper(sessions, lambda: 10.0, every_s=0.01)
    async with asyncio.timeout(5), asyncio.TaskGroup() as tasks:
        running = tasks.create_task(sweeper.run())
        while await sessions.service.get(session_key(ended.id)) is not None:
            await asyncio.sleep(0.01)
        running.cancel()
    assert await sessions.get(alive.id, 10.0) == alive


def test_flashes_are_bounded() -> None:
    session = new_session(0.0, 100.0)
    for i in range(8):
        session = session.with_flash(Flash("ok", str(i)))
    assert [f.text for f in session.flashes] == ["3", "4", "5", "6", "7"]


async def test_failed_logins_block_a_name_within_the_window() -> None:
    limits = LoginFailures(store(), limit=3)
    for t in (0.0, 1.0, 2.0):
        assert not await limits.blocked("Alice", "10.0.0.1", t)
        await limits.failed("Alice", "10.0.0.1", t)
    assert await limits.blocked("alice", "10.0.0.9", 3.0)  # the name, any case, any address
    assert not await limits.blocked("bob", "10.0.0.9", 3.0)
    assert not await limits.blocked("alice", "10.0.0.9", WINDOW_S + 0.5)  # the first slid out
    await limits.succeeded("ALICE")
    assert not await limits.blocked("alice", "10.0.0.1", 3.0)


async def test_failed_logins_block_an_address_at_a_higher_limit() -> None:
    limits = LoginFailures(store(), limit=2)
    names = [f"user{i}" for i in range(2 * ADDRESS_FACTOR)]
    for i, name in enumerate(names):
        assert not await limits.blocked("someone", "192.0.2.7", float(i))
        await limits.failed(name, "192.0.2.7", float(i))
    assert await limits.blocked("someone", "192.0.2.7", 10.0)
    assert not await limits.blocked("someone", "192.0.2.8", 10.0)
