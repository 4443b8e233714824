"""Console sessions: the server-side record behind the session cookie, its store port, the
in-memory store, and the failed-login counter.

Theory of operation: the browser holds only a random session id (256 bits, in an HttpOnly,
SameSite=Strict cookie). The record lives in a `SessionStore`, keyed by the SHA-256 of that
id, so a copy of the store (a shared one, later, for several nodes) holds no usable cookie.

- An anonymous session is made when the login page is shown: it carries the CSRF token of
  the login form, so a login cannot be forged from another site either.
- A successful login deletes it and makes a new session with a new id and a new CSRF token
  (no session fixation: an id planted before login is worth nothing after it). The new
  record keeps the access token of the password grant (services.auth), which every request
  of the session presents to services.auth again, so the session has the role, the account
  and the lifetime of that token, and ends with it at the latest.
- A session ends after `idle_s` without a request, at its token's expiry, at logout, or when
  its user is deleted; the store also drops its oldest records beyond `max_sessions`.

Failed logins are counted per key (a user name, a client address) in a sliding window; the
store holds the counts, so several nodes can share them when the store is shared.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Protocol

__all__ = [
    "ConsoleSession",
    "Flash",
    "LoginFailures",
    "MemorySessionStore",
    "SessionStore",
    "new_session",
    "session_key",
]

SESSION_ID_BYTES = 32  # 256 bits of randomness in the cookie
CSRF_BYTES = 32
# Failed-login keys remembered at most (a flood of made-up user names drops the oldest).
MAX_FAILURE_KEYS = 100_000
# A client address may fail this many times the per-user limit (an office behind one NAT).
ADDRESS_FACTOR = 4


def session_key(session_id: str) -> str:
    """What the store keys a session by: the SHA-256 of its cookie value."""
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Flash:
    """A message for the next page the session shows (after a redirect), then dropped."""

    kind: str  # "ok" | "error"
    text: str
    detail: str | None = None  # e.g. a method's answer, shown as preformatted text
    where: str | None = None  # the section it belongs to ("method", "twin"); None: the top


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    id: str  # the cookie value; never stored as such (session_key)
    csrf: str
    created_at: float
    seen_at: float
    expires_at: float  # absolute: the access token's expiry (anonymous: created + idle)
    access_token: str | None = None  # None: anonymous (the login form's session)
    user_id: str | None = None
    username: str | None = None
    flashes: tuple[Flash, ...] = field(default=())

    @property
    def is_authenticated(self) -> bool:
        return self.access_token is not None

    def alive(self, now: float, idle_s: float) -> bool:
        return now < self.expires_at and now - self.seen_at < idle_s

    def with_flash(self, flash: Flash) -> ConsoleSession:
        return replace(self, flashes=(*self.flashes[-4:], flash))


def new_session(
    now: float,
    expires_at: float,
    *,
    access_token: str | None = None,
    user_id: str | None = None,
    username: str | None = None,
) -> ConsoleSession:
    """A session with a fresh id and CSRF token."""
    return ConsoleSession(
        id=secrets.token_urlsafe(SESSION_ID_BYTES),
        csrf=secrets.token_urlsafe(CSRF_BYTES),
        created_at=now,
        seen_at=now,
        expires_at=expires_at,
        access_token=access_token,
        user_id=user_id,
        username=username,
    )


class SessionStore(Protocol):
    """Where console sessions and failed-login counts live (in memory now; a shared store
    makes them visible to every node)."""

    async def get(self, session_id: str, now: float) -> ConsoleSession | None:
        """The live session with this cookie value, else None (an ended one is dropped)."""

    async def put(self, session: ConsoleSession) -> None: ...

    async def delete(self, session_id: str) -> None: ...

    async def delete_user(self, user_id: str) -> int:
        """End every session of a user; returns how many."""

    async def failures(self, key: str, now: float) -> int:
        """Failed logins of `key` within the window."""

    async def fail(self, key: str, now: float) -> int:
        """Count a failed login of `key`; returns the count within the window."""

    async def forgive(self, key: str) -> None:
        """Forget the failed logins of `key` (after a successful login)."""


class MemorySessionStore:
    """One process's sessions and failure counts, bounded."""

    def __init__(self, *, idle_s: float, max_sessions: int, failure_window_s: float) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self.failure_window_s = failure_window_s
        self._sessions: OrderedDict[str, ConsoleSession] = OrderedDict()  # oldest use first
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    async def get(self, session_id: str, now: float) -> ConsoleSession | None:
        key = session_key(session_id)
        session = self._sessions.get(key)
        if session is None:
            return None
        if not session.alive(now, self.idle_s):
            del self._sessions[key]
            return None
        return session

    async def put(self, session: ConsoleSession) -> None:
        key = session_key(session.id)
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > self.max_sessions:
            self._sessions.popitem(last=False)

    async def delete(self, session_id: str) -> None:
        self._sessions.pop(session_key(session_id), None)

    async def delete_user(self, user_id: str) -> int:
        gone = [k for k, s in self._sessions.items() if s.user_id == user_id]
        for key in gone:
            del self._sessions[key]
        return len(gone)

    def _window(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            times = self._failures[key] = deque()
        while times and times[0] <= now - self.failure_window_s:
            times.popleft()
        return times

    async def failures(self, key: str, now: float) -> int:
        if key not in self._failures:
            return 0
        count = len(self._window(key, now))
        if count == 0:
            del self._failures[key]
        return count

    async def fail(self, key: str, now: float) -> int:
        times = self._window(key, now)
        times.append(now)
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_FAILURE_KEYS:
            self._failures.popitem(last=False)
        return len(times)

    async def forgive(self, key: str) -> None:
        self._failures.pop(key, None)


@dataclass(frozen=True, slots=True)
class LoginFailures:
    """The failed-login limit: at most `limit` failures per user name, and
    ADDRESS_FACTOR times as many per client address (several people may share one), within
    the store's window; past it, logins of that name or from that address are refused without
    a password check until the window has moved on."""

    store: SessionStore
    limit: int

    @staticmethod
    def keys(username: str, client: str) -> tuple[str, str]:
        return f"user:{username.casefold()}", f"addr:{client}"

    async def blocked(self, username: str, client: str, now: float) -> bool:
        user, address = self.keys(username, client)
        return (
            await self.store.failures(user, now) >= self.limit
            or await self.store.failures(address, now) >= self.limit * ADDRESS_FACTOR
        )

    async def failed(self, username: str, client: str, now: float) -> None:
        for key in self.keys(username, client):
            await self.store.fail(key, now)

    async def succeeded(self, username: str) -> None:
        await self.store.forgive(self.keys(username, "")[0])
