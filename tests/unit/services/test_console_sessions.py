"""ConsoleSessionService on the memory stores: what one node stores another reads, at once;
deleting a user (services.auth) ends its console sessions; the sweep and failed sign-ins."""

from __future__ import annotations

from thinghub.domain.model import Principal, Role
from thinghub.ports import StoredConsoleSession, Stores
from thinghub.services.core import Services


def record(key: str, user_id: str | None, *, seen: float = 0.0) -> StoredConsoleSession:
    return StoredConsoleSession(key, user_id, 0.0, seen, 1e12, "sealed", "{}")


async def test_deleting_a_user_ends_its_console_sessions(
    services: Services, stores: Stores
) -> None:
    admin = Principal("acc-1", Role.ADMIN, "boss", "user")
    gone = await services.auth.create_user("acc-1", "leaver", "password-1", Role.OPERATOR)
    stays = await services.auth.create_user("acc-1", "stayer", "password-2", Role.OPERATOR)
    for key, user in (("a" * 64, gone.id), ("b" * 64, gone.id), ("c" * 64, stays.id)):
        await services.console_sessions.put(record(key, user))
    await services.auth.delete_user(admin, gone.id)
    assert await stores.console_sessions.get("a" * 64) is None
    assert await stores.console_sessions.get("b" * 64) is None
    assert await services.console_sessions.get("c" * 64) == record("c" * 64, stays.id)


async def test_sessions_and_failures_pass_through_to_the_store(
    services: Services, stores: Stores
) -> None:
    sessions = services.console_sessions
    await sessions.put(record("d" * 64, None, seen=10.0))
    await sessions.put(record("e" * 64, "u", seen=100.0))
    assert await stores.console_sessions.get("d" * 64) == record("d" * 64, None, seen=10.0)
    assert await sessions.sweep(100.0, 60.0, 10, 0.0) == 1  # d idled out
    assert await sessions.get("d" * 64) is None
    await sessions.delete("e" * 64)
    assert await sessions.get("e" * 64) is None
    await sessions.fail("user:x", 5.0)
    await sessions.fail("user:x", 6.0)
    assert await sessions.failures("user:x", 5.0) == 1
    await sessions.forgive("user:x")
    assert await sessions.failures("user:x", 0.0) == 0
    assert await sessions.delete_user("nobody") == 0
