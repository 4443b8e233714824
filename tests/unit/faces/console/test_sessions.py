"""Console sessions (faces/console/sessions.py): the memory store's expiry and bounds, and the
failed-login limit."""

from __future__ import annotations

from thinghub.faces.console.sessions import (
    ADDRESS_FACTOR,
    Flash,
    LoginFailures,
    MemorySessionStore,
    new_session,
    session_key,
)

IDLE_S = 60.0
WINDOW_S = 300.0


def store(max_sessions: int = 10) -> MemorySessionStore:
    return MemorySessionStore(idle_s=IDLE_S, max_sessions=max_sessions, failure_window_s=WINDOW_S)


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
    assert len(sessions) == 0  # and dropped
    short = new_session(0.0, 10.0, access_token="t")
    await sessions.put(short)
    assert await sessions.get(short.id, 9.0) == short
    assert await sessions.get(short.id, 10.0) is None  # its token expired
    assert await sessions.get("never issued", 0.0) is None


async def test_the_least_recently_used_session_goes_first() -> None:
    sessions = store(max_sessions=2)
    a, b, c = (new_session(0.0, 100.0) for _ in range(3))
    await sessions.put(a)
    await sessions.put(b)
    await sessions.put(a)  # used again: b is now the oldest
    await sessions.put(c)
    assert await sessions.get(b.id, 1.0) is None
    assert await sessions.get(a.id, 1.0) == a and await sessions.get(c.id, 1.0) == c


async def test_deleting_a_user_ends_all_its_sessions() -> None:
    sessions = store()
    mine = [new_session(0.0, 100.0, access_token="t", user_id="u1") for _ in range(2)]
    other = new_session(0.0, 100.0, access_token="t", user_id="u2")
    for s in [*mine, other]:
        await sessions.put(s)
    assert await sessions.delete_user("u1") == 2
    assert [await sessions.get(s.id, 1.0) for s in mine] == [None, None]
    assert await sessions.get(other.id, 1.0) == other
    await sessions.delete(other.id)
    assert await sessions.get(other.id, 1.0) is None


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
