"""The session store port: where ux4iot sessions, grants and subscriptions live.

One node keeps them in memory (MemorySessionStore over sessions.SessionTable). Several nodes
need one shared view, since a browser's REST calls and its socket may land on different
nodes: a shared implementation (PostgreSQL or NATS KV) implements the same Protocol. Its
mutating calls go to the shared state; `audience()` is on the fan-out hot path (every event
of a watched device) and must be answered from a node-local replica kept current by change
notifications, which is why it is synchronous.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from thinghub.faces.ux4iot.grants import Grant, Subscription, SubscriptionType, WireProtocol
from thinghub.faces.ux4iot.sessions import Audience, SessionInfo, SessionTable

__all__ = ["MemorySessionStore", "SessionStore"]


class SessionStore(Protocol):
    """Sessions, grants and subscriptions; every method takes the time as `now` (epoch s).

    Errors are domain errors: NotFound (unknown session, or another account's), Forbidden
    (no covering grant), RateLimited (a named limit). See sessions.SessionTable for each.
    """

    async def create(self, now: float) -> SessionInfo: ...

    async def get(self, session_id: str, now: float) -> SessionInfo | None: ...

    async def touch(self, session_id: str, now: float) -> bool: ...

    async def attach(self, session_id: str, now: float) -> SessionInfo | None: ...

    async def detach(self, session_id: str, now: float) -> None: ...

    async def delete(self, session_id: str, account_id: str) -> bool: ...

    async def delete_account(self, account_id: str) -> list[str]: ...

    async def expire(self, now: float) -> list[str]: ...

    async def grant(
        self,
        session_id: str,
        account_id: str,
        grant: Grant,
        now: float,
        protocol: WireProtocol = WireProtocol.V4,
    ) -> Subscription | None: ...

    async def revoke(
        self, session_id: str, account_id: str, grant: Grant, now: float
    ) -> list[Subscription]: ...

    async def allows(self, session_id: str, need: Grant, now: float) -> bool: ...

    async def granted_telemetry_keys(
        self, session_id: str, device_id: str, now: float
    ) -> frozenset[str] | None: ...

    async def session_account(self, session_id: str, now: float) -> str | None: ...

    async def subscribe(self, session_id: str, sub: Subscription, now: float) -> None: ...

    async def unsubscribe(self, session_id: str, sub: Subscription, now: float) -> None: ...

    async def subscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]: ...

    async def unsubscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]: ...

    async def subscriptions(self, session_id: str, now: float) -> frozenset[Subscription]: ...

    async def accounts(self) -> frozenset[str]: ...

    def audience(
        self, account_id: str, device_id: str, kind: SubscriptionType
    ) -> tuple[Audience, ...]: ...


class MemorySessionStore:
    """The single-node store: a SessionTable behind the async port (no awaits inside, so each
    call is atomic with respect to the event loop)."""

    def __init__(self, table: SessionTable | None = None) -> None:
        self.table = table if table is not None else SessionTable()

    async def create(self, now: float) -> SessionInfo:
        return self.table.create(now)

    async def get(self, session_id: str, now: float) -> SessionInfo | None:
        return self.table.get(session_id, now)

    async def touch(self, session_id: str, now: float) -> bool:
        return self.table.touch(session_id, now)

    async def attach(self, session_id: str, now: float) -> SessionInfo | None:
        return self.table.attach(session_id, now)

    async def detach(self, session_id: str, now: float) -> None:
        self.table.detach(session_id, now)

    async def delete(self, session_id: str, account_id: str) -> bool:
        return self.table.delete(session_id, account_id)

    async def delete_account(self, account_id: str) -> list[str]:
        return self.table.delete_account(account_id)

    async def expire(self, now: float) -> list[str]:
        return self.table.expire(now)

    async def grant(
        self,
        session_id: str,
        account_id: str,
        grant: Grant,
        now: float,
        protocol: WireProtocol = WireProtocol.V4,
    ) -> Subscription | None:
        return self.table.grant(session_id, account_id, grant, now, protocol)

    async def revoke(
        self, session_id: str, account_id: str, grant: Grant, now: float
    ) -> list[Subscription]:
        return self.table.revoke(session_id, account_id, grant, now)

    async def allows(self, session_id: str, need: Grant, now: float) -> bool:
        return self.table.allows(session_id, need, now)

    async def granted_telemetry_keys(
        self, session_id: str, device_id: str, now: float
    ) -> frozenset[str] | None:
        return self.table.granted_telemetry_keys(session_id, device_id, now)

    async def session_account(self, session_id: str, now: float) -> str | None:
        return self.table.session_account(session_id, now)

    async def subscribe(self, session_id: str, sub: Subscription, now: float) -> None:
        self.table.subscribe(session_id, sub, now)

    async def unsubscribe(self, session_id: str, sub: Subscription, now: float) -> None:
        self.table.unsubscribe(session_id, sub, now)

    async def subscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]:
        return self.table.subscribe_many(requests, now)

    async def unsubscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]:
        return self.table.unsubscribe_many(requests, now)

    async def subscriptions(self, session_id: str, now: float) -> frozenset[Subscription]:
        return self.table.subscriptions(session_id, now)

    async def accounts(self) -> frozenset[str]:
        return self.table.accounts()

    def audience(
        self, account_id: str, device_id: str, kind: SubscriptionType
    ) -> tuple[Audience, ...]:
        return self.table.audience(account_id, device_id, kind)
