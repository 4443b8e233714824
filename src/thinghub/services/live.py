"""Live: what is happening now (telemetry, twin changes, connections, events, device records),
for adapters that push it to clients — the ux4iot and iTwin live channels, the console, a
native stream — limited to what the caller may see.

The bus is reached only through this service, so every live channel gets the same scoping:
an account's events never reach a subscriber of another account, and a principal limited to
one project gets that project's events only. Subscriptions are eager (nothing published after
`watch` returns is missed) and end when the returned generator is closed.

A face that serves many clients (1,000 Socket.IO sessions watching one device) should hold one
`watch` per scope it needs and fan out itself: each `watch` is one bus subscription, and the
bus matches every published event against every subscription.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Collection

from thinghub.domain.live import WILDCARD, LiveEvent, live_pattern
from thinghub.domain.model import Principal
from thinghub.domain.roles import Permission
from thinghub.ports import Bus
from thinghub.services.authz import authorize

__all__ = ["KINDS", "LiveService"]

# Every kind of live event (thinghub.domain.live): what `kinds` may name.
KINDS = frozenset({"telemetry", "twin", "connection", "event", "device"})


class LiveService:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def watch(
        self,
        account_id: str,
        *,
        kinds: Collection[str] = KINDS,
        project: str | None = WILDCARD,
        device_id: str = WILDCARD,
    ) -> AsyncGenerator[LiveEvent, None]:
        """Live events of one account, of the given kinds, optionally of one project (None:
        devices without a project) and one device (a module is `device/module`).

        For adapters that have already decided what the caller may see (a ux4iot session's
        grants, a device's own channel). Raises ValueError for an unknown kind.
        """
        wanted = frozenset(kinds)
        unknown = wanted - KINDS
        if unknown or not wanted:
            raise ValueError(f"unknown live event kinds {sorted(unknown)}; known: {sorted(KINDS)}")
        if len(wanted) == 1:
            (kind,) = wanted
            return self._bus.subscribe(live_pattern(kind, account_id, project, device_id))
        stream = self._bus.subscribe(live_pattern(WILDCARD, account_id, project, device_id))
        return _only(stream, wanted) if wanted != KINDS else stream

    def watch_for(
        self,
        principal: Principal,
        *,
        kinds: Collection[str] = KINDS,
        project: str | None = WILDCARD,
        device_id: str = WILDCARD,
    ) -> AsyncGenerator[LiveEvent, None]:
        """As `watch`, within what `principal` sees: its account, and its project when it is
        limited to one (asking for another project then yields nothing). Permission.READ."""
        authorize(principal, Permission.READ)
        if principal.project is not None:
            if project not in (WILDCARD, principal.project):
                return _nothing()
            project = principal.project
        return self.watch(principal.account_id, kinds=kinds, project=project, device_id=device_id)


async def _only(
    stream: AsyncGenerator[LiveEvent, None], kinds: frozenset[str]
) -> AsyncGenerator[LiveEvent, None]:
    try:
        async for event in stream:
            if event.kind in kinds:
                yield event
    finally:
        await stream.aclose()


async def _nothing() -> AsyncGenerator[LiveEvent, None]:
    return
    yield  # an async generator that ends at once
