"""The console's session area (ports.store.ConsoleSessionStore) on every backend: records
round-trip, a user's sessions end together, the sweep deletes ended and surplus sessions and
old failed sign-ins, and failed sign-ins count within a window."""

from __future__ import annotations

from thinghub.ports import StoredConsoleSession, Stores


def record(
    key: str, *, user: str | None = "u1", seen: float = 100.0, expires: float = 1e9
) -> StoredConsoleSession:
    return StoredConsoleSession(
        key=key,
        user_id=user,
        created_at=50.5,
        seen_at=seen,
        expires_at=expires,
        sealed="c2VhbGVk",
        data='{"username":"alice","flashes":[]}',
    )


async def test_sessions_round_trip_and_replace(stores: Stores) -> None:
    area = stores.console_sessions
    assert await area.get("a" * 64) is None
    one = record("a" * 64, seen=100.123456)
    await area.put(one)
    assert await area.get("a" * 64) == one
    touched = StoredConsoleSession(
        one.key, one.user_id, one.created_at, 200.0, one.expires_at, "bmV3", '{"x":1}'
    )
    await area.put(touched)
    assert await area.get("a" * 64) == touched
    anonymous = record("b" * 64, user=None)
    await area.put(anonymous)
    assert await area.get("b" * 64) == anonymous
    await area.delete("a" * 64)
    await area.delete("a" * 64)  # gone already: nothing happens
    assert await area.get("a" * 64) is None
    assert await area.get("b" * 64) == anonymous


async def test_a_users_sessions_end_together(stores: Stores) -> None:
    area = stores.console_sessions
    for key, user in (("1", "u1"), ("2", "u1"), ("3", "u2"), ("4", None)):
        await area.put(record(key * 64, user=user))
    assert await area.delete_user("u1") == 2
    assert await area.get("1" * 64) is None and await area.get("2" * 64) is None
    assert await area.get("3" * 64) is not None and await area.get("4" * 64) is not None
    assert await area.delete_user("u1") == 0


async def test_the_sweep_deletes_ended_and_surplus_sessions(stores: Stores) -> None:
    area = stores.console_sessions
    await area.put(record("e" * 64, seen=990.0, expires=1000.0))  # expired at 1000
    await area.put(record("i" * 64, seen=939.0))  # idle for 61 s at 1000
    for n, seen in enumerate((995.0, 996.0, 997.0, 998.0)):
        await area.put(record(str(n) * 64, seen=seen))
    assert await area.sweep(1000.0, 60.0, 3, 0.0) == 3  # both ended, and the oldest of 4
    assert await area.get("e" * 64) is None and await area.get("i" * 64) is None
    assert await area.get("0" * 64) is None
    assert all([await area.get(str(n) * 64) is not None for n in (1, 2, 3)])
    assert await area.sweep(1000.0, 60.0, 3, 0.0) == 0


async def test_failed_sign_ins_count_within_the_window_and_are_swept(stores: Stores) -> None:
    area = stores.console_sessions
    for at in (10.0, 20.0, 30.0):
        await area.fail("user:alice", at)
    await area.fail("addr:192.0.2.1", 30.0)
    assert await area.failures("user:alice", 0.0) == 3
    assert await area.failures("user:alice", 10.0) == 2  # after 10 s only
    assert await area.failures("user:bob", 0.0) == 0
    await area.sweep(40.0, 60.0, 100, 20.0)  # failures at or before 20 s go
    assert await area.failures("user:alice", 0.0) == 1
    await area.forgive("user:alice")
    assert await area.failures("user:alice", 0.0) == 0
    assert await area.failures("addr:192.0.2.1", 0.0) == 1
