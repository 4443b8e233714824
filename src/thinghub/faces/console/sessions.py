"""Console sessions: the server-side record behind the session cookie, its store port, the
store every node shares, and the failed-login counter.

Theory of operation: the browser holds only a random session id (256 bits, in an HttpOnly,
SameSite=Strict cookie). The record lives in the database (services.console_sessions), so
every node behind a load balancer knows it: it is keyed by the SHA-256 of that id, and the
session's secrets (its CSRF token and the access token it signed in with) are sealed with
AES-GCM under a key derived from the id, so a copy of the table opens no session and holds no
usable token. Nothing is cached on a node: every request reads its session, so a session ended
on one node (sign-out, its user deleted) is refused by the next request on every node.

- The login page stores nothing (an unauthenticated request costs no write): its cookie is
  a random form id (`new_form_id`: "anon.", the time it was issued, 256 random bits) and
  its CSRF token the HMAC of that id under a key every node derives from the master key
  (`form_csrf`); the sign-in post must bring both, within FORM_TTL_S, so a login cannot be
  forged from another site either, and a token is worth nothing with another cookie.
- A successful login makes a new session with a new id and a new CSRF token (no session
  fixation: an id planted before login is worth nothing after it). Its record keeps the
  access token of the password grant (services.auth), which every request of the session
  presents to services.auth again, so the session has the role, the account and the
  lifetime of that token, and ends with it at the latest.
- A session ends after `idle_s` without a request, at its token's expiry, at logout, or when
  its user is deleted (services.auth deletes the user's sessions); `SessionSweeper` deletes
  ended records every SWEEP_EVERY_S and the least recently used beyond `max_sessions`.

Failed logins are counted per key (a user name, a client address) in a sliding window, in the
database too, so the limit holds across nodes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from thinghub.ports import StoredConsoleSession
from thinghub.services.console_sessions import ConsoleSessionService

__all__ = [
    "ConsoleSession",
    "Flash",
    "LoginFailures",
    "SessionStore",
    "SessionSweeper",
    "SharedSessionStore",
    "form_csrf",
    "form_id_alive",
    "is_form_id",
    "new_form_id",
    "new_session",
    "session_key",
]

logger = logging.getLogger(__name__)

SESSION_ID_BYTES = 32  # 256 bits of randomness in the cookie
CSRF_BYTES = 32
NONCE_BYTES = 12  # AES-GCM's
# What the sealing key is derived for (HMAC-SHA256 of this, keyed by the cookie value).
SEAL_PURPOSE = b"thinghub console session secrets v1"
SWEEP_EVERY_S = 60.0  # ended sessions and old failed sign-ins are deleted this often
# A client address may fail this many times the per-user limit (an office behind one NAT).
ADDRESS_FACTOR = 4


FORM_ID_PREFIX = "anon."  # session ids (URL-safe base64) never hold a dot
FORM_TTL_S = 3600.0  # a login form may be posted this long after it was shown


def new_form_id(now: float) -> str:
    """The login form's cookie value: never stored, so the form page writes nothing."""
    return f"{FORM_ID_PREFIX}{int(now)}.{secrets.token_urlsafe(SESSION_ID_BYTES)}"


def is_form_id(value: str) -> bool:
    """Whether a cookie value is a login form's id (not a session's)."""
    return value.startswith(FORM_ID_PREFIX)


def form_id_alive(form_id: str, now: float, ttl_s: float = FORM_TTL_S) -> bool:
    """Whether `form_id` is a login form id issued within `ttl_s` before `now`."""
    if not is_form_id(form_id) or len(form_id) > 200:
        return False
    issued, dot, rest = form_id.removeprefix(FORM_ID_PREFIX).partition(".")
    if not dot or not rest or not issued.isascii() or not issued.isdigit():
        return False
    return 0 <= now - int(issued) < ttl_s


def form_csrf(key: bytes, form_id: str) -> str:
    """The login form's CSRF token: the HMAC-SHA256 of its form id under the form key."""
    digest = hmac.new(key, form_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


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
    """Where console sessions and failed-login counts live."""

    async def get(self, session_id: str, now: float) -> ConsoleSession | None:
        """The live session with this cookie value, else None (an ended one is dropped)."""

    async def put(self, session: ConsoleSession) -> None: ...

    async def delete(self, session_id: str) -> None: ...

    async def failures(self, key: str, now: float) -> int:
        """Failed logins of `key` within the window."""

    async def fail(self, key: str, now: float) -> int:
        """Count a failed login of `key`; returns the count within the window."""

    async def forgive(self, key: str) -> None:
        """Forget the failed logins of `key` (after a successful login)."""


def _sealer(session_id: str) -> AESGCM:
    return AESGCM(hmac.new(session_id.encode(), SEAL_PURPOSE, hashlib.sha256).digest())


def seal(session: ConsoleSession) -> str:
    """The session's secrets, encrypted under a key only its cookie value gives (the record's
    key, its hash, is bound in as associated data: a sealed blob moved to another row fails)."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    plain = orjson.dumps({"csrf": session.csrf, "token": session.access_token})
    sealed = _sealer(session.id).encrypt(nonce, plain, session_key(session.id).encode())
    return base64.urlsafe_b64encode(nonce + sealed).decode()


def unseal(session_id: str, sealed: str) -> dict[str, Any] | None:
    """The secrets sealed by `seal`, or None when they do not open with this cookie value."""
    try:
        raw = base64.urlsafe_b64decode(sealed.encode())
        plain = _sealer(session_id).decrypt(
            raw[:NONCE_BYTES], raw[NONCE_BYTES:], session_key(session_id).encode()
        )
        secrets_ = orjson.loads(plain)
    except (InvalidTag, ValueError, orjson.JSONDecodeError):
        return None
    return secrets_ if isinstance(secrets_, dict) else None


def _flash_json(flash: Flash) -> dict[str, Any]:
    return {"kind": flash.kind, "text": flash.text, "detail": flash.detail, "where": flash.where}


def _flash(item: dict[str, Any]) -> Flash:
    return Flash(str(item["kind"]), str(item["text"]), item.get("detail"), item.get("where"))


def to_stored(session: ConsoleSession) -> StoredConsoleSession:
    data = {"username": session.username, "flashes": [_flash_json(f) for f in session.flashes]}
    return StoredConsoleSession(
        key=session_key(session.id),
        user_id=session.user_id,
        created_at=session.created_at,
        seen_at=session.seen_at,
        expires_at=session.expires_at,
        sealed=seal(session),
        data=orjson.dumps(data).decode(),
    )


def from_stored(session_id: str, stored: StoredConsoleSession) -> ConsoleSession | None:
    """The session a record holds, or None when its secrets do not open with `session_id`."""
    opened = unseal(session_id, stored.sealed)
    if opened is None:
        return None
    data = orjson.loads(stored.data)
    token = opened.get("token")
    return ConsoleSession(
        id=session_id,
        csrf=str(opened["csrf"]),
        created_at=stored.created_at,
        seen_at=stored.seen_at,
        expires_at=stored.expires_at,
        access_token=None if token is None else str(token),
        user_id=stored.user_id,
        username=data.get("username"),
        flashes=tuple(_flash(f) for f in data.get("flashes", ())),
    )


class SharedSessionStore:
    """Console sessions and failure counts in the database, seen alike by every node."""

    def __init__(
        self,
        service: ConsoleSessionService,
        *,
        idle_s: float,
        max_sessions: int,
        failure_window_s: float,
    ) -> None:
        self.service = service
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self.failure_window_s = failure_window_s

    async def get(self, session_id: str, now: float) -> ConsoleSession | None:
        key = session_key(session_id)
        stored = await self.service.get(key)
        if stored is None:
            return None
        session = from_stored(session_id, stored)
        if session is None or not session.alive(now, self.idle_s):
            await self.service.delete(key)
            return None
        return session

    async def put(self, session: ConsoleSession) -> None:
        await self.service.put(to_stored(session))

    async def delete(self, session_id: str) -> None:
        await self.service.delete(session_key(session_id))

    async def failures(self, key: str, now: float) -> int:
        return await self.service.failures(key, now - self.failure_window_s)

    async def fail(self, key: str, now: float) -> int:
        await self.service.fail(key, now)
        return await self.failures(key, now)

    async def forgive(self, key: str) -> None:
        await self.service.forgive(key)

    async def sweep(self, now: float) -> int:
        """Delete ended sessions, the least recently used beyond `max_sessions`, and failed
        sign-ins that left the window; returns the sessions deleted."""
        return await self.service.sweep(
            now, self.idle_s, self.max_sessions, now - self.failure_window_s
        )


class SessionSweeper:
    """The console's worker: sweeps the shared store every SWEEP_EVERY_S (every node does;
    the deletes are idempotent). A failed sweep (the database away) is logged and retried."""

    name = "sessions.sweep"

    def __init__(
        self,
        store: SharedSessionStore,
        clock: Callable[[], float],
        *,
        every_s: float = SWEEP_EVERY_S,
    ) -> None:
        self.store = store
        self.clock = clock
        self.every_s = every_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                gone = await self.store.sweep(self.clock())
            except Exception:  # the top of the task: the database away, say; try next time
                logger.exception("console: sweeping ended sessions failed")
                continue
            if gone:
                logger.debug("console: swept %d ended sessions", gone)

    async def stop(self) -> None:
        return None


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
