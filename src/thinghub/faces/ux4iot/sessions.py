"""The session table: ux4iot sessions, their grants and subscriptions, and the fan-out index.

Theory of operation
-------------------
A session is opened without credentials (`POST /session`) and is only an opaque id until a
grant arrives: the first grant, forwarded with an account's Shared-Access-Key, *binds* the
session to that account. From then on only that account's key sees the session (another
account's key gets "unknown session", so sessions of other accounts look absent), and every
device id in its grants and subscriptions is a device of that account.

A session lives while a socket is attached to it, and for `idle_s` seconds after the last
request or socket detach. An idle session is gone: lookups treat it as unknown at once (lazy
expiry), and `expire(now)` sweeps them so their memory is returned. Time is an argument; the
adapter owns the clock and the sweep timer.

Subscriptions need a grant that covers them (grants.Grant.covers). Revoking a grant removes
the subscriptions no remaining grant covers, so deliveries stop at once. A v2 grant
(`grantType`) marks the session v2 and is also its subscription.

The live fan-out asks, per event: "for this device and this kind of data, which sessions get
what?" The answer comes from an index keyed by (account, device) -> kind -> session ->
subscribed telemetry keys, never from a scan of all sessions. Sessions that would receive the
same payload (same wire protocol, same telemetry key set) are grouped into one Audience, so a
payload is built and encoded once per group, not once per session. Groups are cached per
(device, kind) and rebuilt lazily after a change to that device's subscriptions.

Nothing here does I/O or awaits: the async SessionStore port (store.py) wraps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from thinghub.domain.errors import Forbidden, NotFound, RateLimited
from thinghub.domain.ids import new_uuid
from thinghub.faces.ux4iot.grants import (
    Grant,
    GrantType,
    Subscription,
    SubscriptionType,
    WireProtocol,
    v2_subscription_of,
)

__all__ = [
    "MAX_GRANTS_PER_SESSION",
    "MAX_SESSIONS",
    "MAX_SUBSCRIPTIONS_PER_SESSION",
    "SESSION_IDLE_S",
    "Audience",
    "SessionInfo",
    "SessionState",
    "SessionTable",
]

# A session without a socket and without requests for this long is gone. Ten minutes covers a
# browser tab that lost its network for a while; the client opens a new session anyway when
# its socket is refused (docs/faces/ux4iot.md, "Reconnecting").
SESSION_IDLE_S = 600.0
# `POST /session` needs no credentials, so the table as a whole is bounded.
MAX_SESSIONS = 100_000
# One browser page grants and subscribes per widget; a thousand is far past any dashboard.
MAX_GRANTS_PER_SESSION = 1_000
MAX_SUBSCRIPTIONS_PER_SESSION = 1_000


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A snapshot of one session (counts only; the grant checks are the table's methods)."""

    id: str
    account_id: str | None  # None until the first grant binds it
    protocol: WireProtocol
    created_at: float
    last_seen: float
    sockets: int
    grants: int
    subscriptions: int


@dataclass(frozen=True, slots=True)
class SessionState:
    """All of one session, as a shared store keeps it between nodes (`SessionTable.state`,
    `SessionTable.put_state`); `sockets` is the cluster-wide count."""

    id: str
    account_id: str | None
    protocol: WireProtocol
    created_at: float
    last_seen: float
    sockets: int
    grants: frozenset[Grant]
    subscriptions: frozenset[Subscription]


@dataclass(frozen=True, slots=True)
class Audience:
    """Sessions that get the same payload for one event.

    `telemetry_keys` (telemetry only) are the keys the group subscribed to, None meaning all
    keys; the payload holds the event's values of those keys. Other kinds carry None.
    """

    protocol: WireProtocol
    telemetry_keys: frozenset[str] | None
    session_ids: tuple[str, ...]


class _Session:
    __slots__ = (
        "account_id",
        "created_at",
        "grants",
        "id",
        "last_seen",
        "protocol",
        "sockets",
        "subscriptions",
    )

    def __init__(self, session_id: str, now: float) -> None:
        self.id = session_id
        self.created_at = now
        self.last_seen = now
        self.account_id: str | None = None
        self.protocol = WireProtocol.V4
        self.sockets = 0
        self.grants: set[Grant] = set()
        self.subscriptions: set[Subscription] = set()

    def info(self) -> SessionInfo:
        return SessionInfo(
            self.id,
            self.account_id,
            self.protocol,
            self.created_at,
            self.last_seen,
            self.sockets,
            len(self.grants),
            len(self.subscriptions),
        )

    def covers(self, need: Grant) -> bool:
        if need in self.grants:  # the common case: the exact grant, one hash lookup
            return True
        return any(held.covers(need) for held in self.grants)


# The key of the fan-out index: device ids are unique per account only.
_DeviceKey = tuple[str, str]
_GroupKey = tuple[WireProtocol, frozenset[str] | None]


class _DeviceIndex:
    """Who watches one device: kind -> session id -> subscribed telemetry keys (None = all)."""

    __slots__ = ("cache", "members")

    def __init__(self) -> None:
        self.members: dict[SubscriptionType, dict[str, set[str | None]]] = {}
        self.cache: dict[SubscriptionType, tuple[Audience, ...]] = {}

    def add(self, session_id: str, sub: Subscription) -> None:
        self.members.setdefault(sub.type, {}).setdefault(session_id, set()).add(sub.telemetry_key)
        self.cache.pop(sub.type, None)

    def remove(self, session_id: str, sub: Subscription) -> None:
        of_kind = self.members.get(sub.type)
        keys = of_kind.get(session_id) if of_kind is not None else None
        if of_kind is None or keys is None:
            return
        keys.discard(sub.telemetry_key)
        if not keys:
            del of_kind[session_id]
            if not of_kind:
                del self.members[sub.type]
        self.cache.pop(sub.type, None)


class SessionTable:
    """All sessions of one node, with the (account, device) index for the live fan-out."""

    def __init__(
        self,
        *,
        idle_s: float = SESSION_IDLE_S,
        max_sessions: int = MAX_SESSIONS,
        max_grants: int = MAX_GRANTS_PER_SESSION,
        max_subscriptions: int = MAX_SUBSCRIPTIONS_PER_SESSION,
        new_id: Callable[[], str] = new_uuid,
    ) -> None:
        self._idle_s = idle_s
        self._max_sessions = max_sessions
        self._max_grants = max_grants
        self._max_subscriptions = max_subscriptions
        self._new_id = new_id
        self._sessions: dict[str, _Session] = {}
        self._by_account: dict[str, set[str]] = {}
        self._index: dict[_DeviceKey, _DeviceIndex] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    # -- sessions ------------------------------------------------------------------------------

    def create(self, now: float) -> SessionInfo:
        """Open a session (`POST /session`).

        Raises:
            RateLimited: MAX_SESSIONS are open even after the idle ones are swept.
        """
        if len(self._sessions) >= self._max_sessions:
            self.expire(now)
            if len(self._sessions) >= self._max_sessions:
                raise RateLimited(
                    f"too many open sessions (limit {self._max_sessions}); try again later"
                )
        session_id = self._new_id()
        if session_id in self._sessions:
            raise ValueError("the session id generator repeated an id")
        session = _Session(session_id, now)
        self._sessions[session_id] = session
        return session.info()

    def get(self, session_id: str, now: float) -> SessionInfo | None:
        """The session, or None when it is unknown or has idled out. Does not touch it."""
        session = self._find(session_id, now)
        return None if session is None else session.info()

    def touch(self, session_id: str, now: float) -> bool:
        """Note activity (a request with this session id); False when it is unknown."""
        session = self._find(session_id, now)
        if session is None:
            return False
        session.last_seen = now
        return True

    def attach(self, session_id: str, now: float) -> SessionInfo | None:
        """A socket connected with this session id; None (refuse the socket) when unknown."""
        session = self._find(session_id, now)
        if session is None:
            return None
        session.sockets += 1
        session.last_seen = now
        return session.info()

    def detach(self, session_id: str, now: float) -> None:
        """A socket of this session closed; the idle clock starts when the last one does."""
        session = self._sessions.get(session_id)
        if session is not None and session.sockets > 0:
            session.sockets -= 1
            session.last_seen = now

    def delete(self, session_id: str, account_id: str) -> bool:
        """`DELETE /sessions/:id`: False when unknown or bound to another account.

        A session no grant has bound yet belongs to no one and any account's key may delete it.
        """
        session = self._sessions.get(session_id)
        if session is None or session.account_id not in (None, account_id):
            return False
        self._drop(session)
        return True

    def delete_account(self, account_id: str) -> list[str]:
        """`DELETE /sessions`: every session bound to this account; their ids."""
        ids = sorted(self._by_account.get(account_id, ()))
        for session_id in ids:
            self._drop(self._sessions[session_id])
        return ids

    def expire(self, now: float) -> list[str]:
        """Drop every session idle for longer than idle_s with no socket; their ids."""
        gone = [s for s in self._sessions.values() if self._is_idle(s, now)]
        for session in gone:
            self._drop(session)
        return [s.id for s in gone]

    # -- grants --------------------------------------------------------------------------------

    def grant(
        self,
        session_id: str,
        account_id: str,
        grant: Grant,
        now: float,
        protocol: WireProtocol = WireProtocol.V4,
    ) -> Subscription | None:
        """`PUT /grants`: add a grant (idempotent), binding the session to the account.

        A v2 grant marks the session v2; for subscribeTo* grants it is also the subscription,
        which is returned (also when it already existed) so the adapter pushes the last value.

        Raises:
            NotFound: unknown session, or one bound to another account.
            RateLimited: over MAX_GRANTS_PER_SESSION or MAX_SUBSCRIPTIONS_PER_SESSION.
        """
        session = self._owned(session_id, account_id, now)
        implied = v2_subscription_of(grant) if protocol is WireProtocol.V2 else None
        if grant not in session.grants and len(session.grants) >= self._max_grants:
            raise RateLimited(
                f"session {session_id} holds {self._max_grants} grants, the limit", field="type"
            )
        if implied is not None:
            self._check_room(session, 1 if implied not in session.subscriptions else 0)
        if session.account_id is None:
            session.account_id = account_id
            self._by_account.setdefault(account_id, set()).add(session_id)
        if protocol is WireProtocol.V2 and session.protocol is not WireProtocol.V2:
            self._set_protocol(session, WireProtocol.V2)
        session.grants.add(grant)
        session.last_seen = now
        if implied is not None:
            self._add(session, implied)
        return implied

    def revoke(
        self, session_id: str, account_id: str, grant: Grant, now: float
    ) -> list[Subscription]:
        """`DELETE /grants`: drop the grant (idempotent) and every subscription it alone covered.

        Raises:
            NotFound: unknown session, or one bound to another account.
        """
        session = self._owned(session_id, account_id, now)
        session.grants.discard(grant)
        session.last_seen = now
        orphans = [
            sub
            for sub in session.subscriptions
            if sub.device_id == grant.device_id
            and sub.need().type is grant.type
            and not session.covers(sub.need())
        ]
        for sub in orphans:
            self._remove(session, sub)
        return orphans

    def allows(self, session_id: str, need: Grant, now: float) -> bool:
        """Whether the session holds a grant covering `need` (direct method, patch, reads).

        Raises:
            NotFound: unknown session.
        """
        return self._live(session_id, now).covers(need)

    def granted_telemetry_keys(
        self, session_id: str, device_id: str, now: float
    ) -> frozenset[str] | None:
        """The telemetry keys of the device this session may read: None = every key, an empty
        set = none (so `GET /lastValue/:dev` returns only what was granted).

        Raises:
            NotFound: unknown session.
        """
        keys: set[str] = set()
        for held in self._live(session_id, now).grants:
            if held.device_id == device_id and held.type is GrantType.TELEMETRY:
                if held.telemetry_key is None:
                    return None
                keys.add(held.telemetry_key)
        return frozenset(keys)

    def session_account(self, session_id: str, now: float) -> str | None:
        """The account a session is bound to (None: unbound).

        Raises:
            NotFound: unknown session.
        """
        return self._live(session_id, now).account_id

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, session_id: str, sub: Subscription, now: float) -> None:
        """`PUT /subscription` (idempotent).

        Raises:
            NotFound: unknown session.
            Forbidden: no grant covers it.
            RateLimited: over MAX_SUBSCRIPTIONS_PER_SESSION.
        """
        session = self._live(session_id, now)
        self._require(session, sub)
        self._check_room(session, 0 if sub in session.subscriptions else 1)
        session.last_seen = now
        self._add(session, sub)

    def unsubscribe(self, session_id: str, sub: Subscription, now: float) -> None:
        """`DELETE /subscription` (idempotent).

        Raises:
            NotFound: unknown session.
            Forbidden: no grant covers it.
        """
        session = self._live(session_id, now)
        self._require(session, sub)
        session.last_seen = now
        self._remove(session, sub)

    def subscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]:
        """`PUT /subscriptions`: apply the granted ones, skip the rest; the applied list.

        All or nothing on errors: an unknown session or a limit fails the call before
        anything is applied.

        Raises:
            NotFound: a session is unknown.
            RateLimited: a session would pass MAX_SUBSCRIPTIONS_PER_SESSION.
        """
        sessions = {sid: self._live(sid, now) for sid, _ in requests}
        applied = [(sid, sub) for sid, sub in requests if sessions[sid].covers(sub.need())]
        fresh: dict[str, set[Subscription]] = {}
        for sid, sub in applied:
            if sub not in sessions[sid].subscriptions:
                fresh.setdefault(sid, set()).add(sub)
        for sid, subs in fresh.items():
            self._check_room(sessions[sid], len(subs))
        for sid, sub in applied:
            self._add(sessions[sid], sub)
        for session in sessions.values():
            session.last_seen = now
        return applied

    def unsubscribe_many(
        self, requests: Sequence[tuple[str, Subscription]], now: float
    ) -> list[tuple[str, Subscription]]:
        """`DELETE /subscriptions`: remove the granted ones, skip the rest; the applied list.

        Raises:
            NotFound: a session is unknown (nothing is removed then).
        """
        sessions = {sid: self._live(sid, now) for sid, _ in requests}
        applied = [(sid, sub) for sid, sub in requests if sessions[sid].covers(sub.need())]
        for sid, sub in applied:
            self._remove(sessions[sid], sub)
        for session in sessions.values():
            session.last_seen = now
        return applied

    def subscriptions(self, session_id: str, now: float) -> frozenset[Subscription]:
        """What the session watches (to push last values when its socket connects).

        Raises:
            NotFound: unknown session.
        """
        return frozenset(self._live(session_id, now).subscriptions)

    # -- fan-out -------------------------------------------------------------------------------

    def audience(
        self, account_id: str, device_id: str, kind: SubscriptionType
    ) -> tuple[Audience, ...]:
        """Who gets data of this kind from this device, grouped by identical payload.

        O(1) per call while subscriptions do not change (a cached tuple); rebuilt in
        O(watchers of this device) after they do. Idle sessions are answered until swept:
        they have no socket, so nothing is sent to them.
        """
        index = self._index.get((account_id, device_id))
        if index is None:
            return ()
        cached = index.cache.get(kind)
        if cached is not None:
            return cached
        groups: dict[_GroupKey, list[str]] = {}
        for session_id, keys in index.members.get(kind, {}).items():
            if kind is SubscriptionType.TELEMETRY and None not in keys:
                keyset: frozenset[str] | None = frozenset(k for k in keys if k is not None)
            else:
                keyset = None
            protocol = self._sessions[session_id].protocol
            groups.setdefault((protocol, keyset), []).append(session_id)
        built = tuple(
            Audience(protocol, keyset, tuple(ids)) for (protocol, keyset), ids in groups.items()
        )
        index.cache[kind] = built
        return built

    def accounts(self) -> frozenset[str]:
        """The accounts that sessions are bound to (the live feed watches each of these)."""
        return frozenset(self._by_account)

    def idle(self, now: float, *, with_sockets: bool = False) -> list[SessionState]:
        """The sessions `expire(now)` would drop, without dropping them; `with_sockets` adds
        those idle but for their sockets (a shared store checks whose sockets they are)."""
        return [
            _state(s)
            for s in self._sessions.values()
            if now - s.last_seen > self._idle_s and (with_sockets or s.sockets == 0)
        ]

    def bound_to(self, account_id: str) -> list[str]:
        """The ids of the sessions bound to this account, sorted."""
        return sorted(self._by_account.get(account_id, ()))

    # -- replication ---------------------------------------------------------------------------

    def state(self, session_id: str) -> SessionState | None:
        """The whole session (idle or not), or None when the table does not hold it."""
        session = self._sessions.get(session_id)
        return None if session is None else _state(session)

    def put_state(self, state: SessionState) -> None:
        """Hold this session exactly as `state` says (replacing what the table held of it)."""
        self.forget(state.id)
        session = _Session(state.id, state.created_at)
        session.last_seen = state.last_seen
        session.account_id = state.account_id
        session.protocol = state.protocol
        session.sockets = state.sockets
        session.grants = set(state.grants)
        self._sessions[state.id] = session
        if state.account_id is not None:
            self._by_account.setdefault(state.account_id, set()).add(state.id)
            for sub in state.subscriptions:
                self._add(session, sub)

    def forget(self, session_id: str) -> bool:
        """Drop the session if the table holds it; whether it did."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        self._drop(session)
        return True

    def watched_devices(self) -> int:
        """How many (account, device) pairs have a watcher (for metrics and tests)."""
        return len(self._index)

    # -- internals -----------------------------------------------------------------------------

    def _is_idle(self, session: _Session, now: float) -> bool:
        return session.sockets == 0 and now - session.last_seen > self._idle_s

    def _find(self, session_id: str, now: float) -> _Session | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if self._is_idle(session, now):
            self._drop(session)
            return None
        return session

    def _live(self, session_id: str, now: float) -> _Session:
        session = self._find(session_id, now)
        if session is None:
            raise NotFound(f"unknown session {session_id!r}", field="sessionId")
        return session

    def _owned(self, session_id: str, account_id: str, now: float) -> _Session:
        session = self._live(session_id, now)
        if session.account_id not in (None, account_id):
            raise NotFound(f"unknown session {session_id!r}", field="sessionId")
        return session

    def _require(self, session: _Session, sub: Subscription) -> None:
        if not session.covers(sub.need()):
            what = sub.type.value + (f" {sub.telemetry_key!r}" if sub.telemetry_key else "")
            raise Forbidden(
                f"session {session.id} has no grant for {what} of device {sub.device_id!r}",
                field="type",
            )

    def _check_room(self, session: _Session, adding: int) -> None:
        if len(session.subscriptions) + adding > self._max_subscriptions:
            raise RateLimited(
                f"session {session.id} would hold more than {self._max_subscriptions} "
                "subscriptions, the limit",
                field="type",
            )

    def _add(self, session: _Session, sub: Subscription) -> None:
        if sub in session.subscriptions:
            return
        if session.account_id is None:  # unreachable: subscriptions need grants, which bind
            raise ValueError("a subscription on an unbound session")
        session.subscriptions.add(sub)
        key = (session.account_id, sub.device_id)
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = _DeviceIndex()
        index.add(session.id, sub)

    def _remove(self, session: _Session, sub: Subscription) -> None:
        if sub not in session.subscriptions or session.account_id is None:
            return
        session.subscriptions.discard(sub)
        key = (session.account_id, sub.device_id)
        index = self._index.get(key)
        if index is not None:
            index.remove(session.id, sub)
            if not index.members:
                del self._index[key]

    def _set_protocol(self, session: _Session, protocol: WireProtocol) -> None:
        session.protocol = protocol
        if session.account_id is None:
            return
        for device_id in _devices(session.subscriptions):
            index = self._index.get((session.account_id, device_id))
            if index is not None:
                index.cache.clear()

    def _drop(self, session: _Session) -> None:
        for sub in list(session.subscriptions):
            self._remove(session, sub)
        del self._sessions[session.id]
        if session.account_id is not None:
            owned = self._by_account.get(session.account_id)
            if owned is not None:
                owned.discard(session.id)
                if not owned:
                    del self._by_account[session.account_id]


def _state(session: _Session) -> SessionState:
    return SessionState(
        session.id,
        session.account_id,
        session.protocol,
        session.created_at,
        session.last_seen,
        session.sockets,
        frozenset(session.grants),
        frozenset(session.subscriptions),
    )


def _devices(subs: Iterable[Subscription]) -> set[str]:
    return {sub.device_id for sub in subs}
