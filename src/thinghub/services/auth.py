"""Authentication: API tokens, users, OAuth2 grants and accounts.

Who may do what is services/authz.py (`authorize`, the one check for every face); the
methods here that take a principal call it themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import secrets as pysecrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from thinghub.domain.errors import Conflict, Invalid, NotFound, Unauthorized
from thinghub.domain.ids import new_id_scope, new_uuid
from thinghub.domain.model import Account, ApiToken, Principal, Role, User
from thinghub.domain.roles import Permission
from thinghub.ports import Clock, Stores
from thinghub.security.jwt import JwtError, JwtIssuer
from thinghub.security.passwords import hash_password, verify_password
from thinghub.security.secrets import hash_secret
from thinghub.services import authz
from thinghub.services.authz import WHOLE_ACCOUNT, NewIn, visible
from thinghub.services.ttl_cache import TtlCache

__all__ = ["FACE_KEY_ROLE", "AuthService", "IssuedToken", "token_hash"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ACCOUNT = "default"
TOKEN_PREFIX = "thk_"
TOKEN_CACHE_S = 5.0
TOKEN_CACHE_MAX = 10_000
ACCOUNT_CACHE_MAX = 100_000
#: Password hashes (argon2id, 64 MiB and tens of milliseconds of 4 threads each) computed at
#: once; more logins wait their turn. Unbounded, concurrent `POST /v1/auth/token` requests,
#: which need no credentials, took 64 MiB each for every thread of the default executor
#: (min(32, cores + 4)): up to 384 MiB on 2 cores, 2 GiB on a large machine.
PASSWORD_HASHES_AT_ONCE = 1
SYSTEM_ACCOUNT = ""
# The face_role of a face's shared access key (ux4iot's Shared-Access-Key): an API token row,
# stored hashed like every token, that only that face accepts, never as a bearer token.
FACE_KEY_ROLE = "sharedAccessKey"
FACE_KEY_BYTES = 32  # entropy of a generated key


def token_hash(token: str) -> str:
    """The stored form of an API token, also its lookup key (see security.secrets)."""
    return hash_secret(token)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: ApiToken
    secret: str  # shown once


class AuthService:
    def __init__(self, stores: Stores, clock: Clock, *, jwt_ttl_s: int) -> None:
        self.stores = stores
        self.clock = clock
        self.jwt_ttl_s = jwt_ttl_s
        self._jwt: JwtIssuer | None = None
        # API tokens by the hash of their secret; only tokens that exist are cached.
        self._tokens: TtlCache[str, ApiToken] = TtlCache(
            clock, ttl_s=TOKEN_CACHE_S, max_entries=TOKEN_CACHE_MAX
        )
        # "<account id>/<token id>/<fingerprint>" of API tokens recently seen to exist
        self._alive: TtlCache[str, bool] = TtlCache(
            clock, ttl_s=TOKEN_CACHE_S, max_entries=TOKEN_CACHE_MAX
        )
        # Accounts by id: their id, name and id scope never change (retention is read from
        # the store by RetentionService).
        self._accounts: TtlCache[str, Account] = TtlCache(
            clock, ttl_s=math.inf, max_entries=ACCOUNT_CACHE_MAX
        )
        self._hashing = asyncio.Semaphore(PASSWORD_HASHES_AT_ONCE)

    async def start(self) -> None:
        secret = await self.stores.documents.get(SYSTEM_ACCOUNT, "system", "jwt_secret")
        if secret is None:
            secret = pysecrets.token_hex(32)
            await self.stores.documents.put(
                SYSTEM_ACCOUNT, "system", "jwt_secret", secret, self.clock.now()
            )
        self._jwt = JwtIssuer(bytes.fromhex(secret), ttl_s=self.jwt_ttl_s)

    @property
    def jwt(self) -> JwtIssuer:
        if self._jwt is None:
            raise RuntimeError("AuthService.start() was not called")
        return self._jwt

    # -- accounts ------------------------------------------------------------------------

    async def account(self, account_id: str) -> Account:
        """An account by id (cached), else NotFound."""
        account = self._accounts.get(account_id)
        if account is None:
            account = await self.stores.accounts.get(account_id)
            if account is None:
                raise NotFound(f"account {account_id!r} not found", field="account")
            self._accounts.put(account_id, account)
        return account

    async def account_for(self, principal: Principal) -> Account:
        """The caller's own account (IoT Central's application)."""
        authz.authorize(principal, Permission.READ)
        return await self.account(principal.account_id)

    async def find_account(self, name: str) -> Account | None:
        """An account by name (for the command line), or None."""
        return await self.stores.accounts.get_by_name(name)

    async def ensure_account(self, name: str = DEFAULT_ACCOUNT) -> Account:
        account = await self.stores.accounts.get_by_name(name)
        if account is None:
            account = Account(new_uuid(), name, new_id_scope(), self.clock.now())
            await self.stores.accounts.insert(account)
            logger.info("created account %s (id scope %s)", name, account.id_scope)
        return account

    async def create_account(self, name: str) -> Account:
        if not name or len(name) > 200:
            raise Invalid("account name must be 1 to 200 characters", field="name")
        account = Account(new_uuid(), name, new_id_scope(), self.clock.now())
        await self.stores.accounts.insert(account)
        return account

    # -- API tokens ----------------------------------------------------------------------

    def token_expiry(
        self, requested: float | None, *, default_ttl_s: float, field: str = "expiry"
    ) -> float:
        """When a new API token expires: `requested`, which must be in the future, or
        `default_ttl_s` from now.

        Raises:
            Invalid: naming `field`, when `requested` is not in the future.
        """
        now = self.clock.now()
        if requested is None:
            return now + default_ttl_s
        if requested <= now:
            raise Invalid(f"{field} must be in the future", field=field)
        return requested

    async def create_token(
        self,
        account_id: str,
        role: Role,
        *,
        label: str = "",
        secret: str | None = None,
        token_id: str | None = None,
        face: str = "st",
        face_role: str | None = None,
        expires_at: float | None = None,
        project: str | None = None,
    ) -> IssuedToken:
        """Create an API token; only its hash is stored, the secret is returned once."""
        value = secret or TOKEN_PREFIX + pysecrets.token_urlsafe(32)
        token = ApiToken(
            id=token_id or new_uuid(),
            account_id=account_id,
            secret_hash=token_hash(value),
            role=role,
            created_at=self.clock.now(),
            label=label,
            expires_at=expires_at,
            face=face,
            face_role=face_role,
            project=project,
        )
        await self.stores.credentials.insert_token(token)
        return IssuedToken(token, value)

    async def issue_token(
        self,
        principal: Principal,
        role: Role,
        *,
        label: str = "",
        project: str | None = None,
        whole_account: bool = False,
        secret: str | None = None,
        token_id: str | None = None,
        face: str = "st",
        face_role: str | None = None,
        expires_at: float | None = None,
    ) -> IssuedToken:
        """Create an API token on behalf of `principal` (Permission.TOKENS_ADMIN).

        The token is limited to `project`, by default the caller's own (none for a caller not
        limited to a project); a project-limited caller may only mint tokens for its project.
        `whole_account` makes a token of no project whatever the caller (IoT Central's, which
        has no projects): only a caller that sees the whole account may.

        Raises:
            Forbidden: the caller may not mint tokens, or not for that project.
            Conflict: `token_id` is taken in the account.
        """
        if whole_account:
            authz.authorize(principal, Permission.TOKENS_ADMIN, WHOLE_ACCOUNT)
            limited_to = None
        else:
            limited_to = project if project is not None else principal.project
            authz.authorize(principal, Permission.TOKENS_ADMIN, NewIn(limited_to))
        return await self.create_token(
            principal.account_id,
            role,
            label=label,
            secret=secret,
            token_id=token_id,
            face=face,
            face_role=face_role,
            expires_at=expires_at,
            project=limited_to,
        )

    async def list_tokens(
        self, principal: Principal, face: str | None = None, *, whole_account: bool = False
    ) -> list[ApiToken]:
        """The account's API tokens (of one face, when `face` is given): a project-limited
        caller sees its project's. `whole_account`: the face's tokens belong to the whole
        account (IoT Central's), so a project-limited caller is refused."""
        authz.authorize(
            principal, Permission.TOKENS_ADMIN, WHOLE_ACCOUNT if whole_account else None
        )
        tokens = await self.stores.credentials.list_tokens(principal.account_id, face)
        return [
            t
            for t in tokens
            if visible(principal, t)
            and t.face_role != FACE_KEY_ROLE  # faces' keys are listed by list_face_keys
        ]

    async def get_token(
        self,
        principal: Principal,
        token_id: str,
        face: str | None = None,
        *,
        whole_account: bool = False,
    ) -> ApiToken:
        """An API token of the caller's account (and project, and of `face` when given).

        Raises:
            Forbidden: the caller may not manage tokens (see `list_tokens` for whole_account).
            NotFound: no such token within the caller's reach.
        """
        authz.authorize(
            principal, Permission.TOKENS_ADMIN, WHOLE_ACCOUNT if whole_account else None
        )
        missing = NotFound(f"API token {token_id!r} not found", field="tokenId")
        token = await self.stores.credentials.get_token(principal.account_id, token_id)
        if token is None or (face is not None and token.face != face):
            raise missing
        authz.authorize(principal, Permission.TOKENS_ADMIN, token, absent=missing)
        return token

    async def revoke(
        self,
        principal: Principal,
        token_id: str,
        face: str | None = None,
        *,
        whole_account: bool = False,
    ) -> None:
        """Revoke an API token within the caller's reach (as `get_token` finds it)."""
        token = await self.get_token(principal, token_id, face, whole_account=whole_account)
        await self.revoke_token(token.account_id, token.id)

    async def revoke_token(self, account_id: str, token_id: str) -> None:
        token = await self.stores.credentials.get_token(account_id, token_id)
        if token is None or token.account_id != account_id:
            raise NotFound(f"API token {token_id!r} not found", field="id")
        await self.stores.credentials.delete_token(account_id, token_id)
        self._tokens.invalidate(token.secret_hash)
        self._alive.invalidate_prefix(f"{account_id}/{token_id}/")

    # -- faces' shared access keys -------------------------------------------------------

    async def create_face_key(
        self, principal: Principal, face: str, *, label: str = ""
    ) -> IssuedToken:
        """A new shared access key of `face` for the caller's account (admin, account-wide:
        a key reaches every device of the account). The secret is returned this once."""
        self._may_manage_keys(principal)
        if len(label) > 200:
            raise Invalid("label must be at most 200 characters", field="label")
        return await self.create_token(
            principal.account_id,
            Role.OPERATOR,
            label=label,
            secret=f"{face}_{pysecrets.token_urlsafe(FACE_KEY_BYTES)}",
            face=face,
            face_role=FACE_KEY_ROLE,
        )

    async def list_face_keys(self, principal: Principal, face: str) -> list[ApiToken]:
        """The account's keys of `face` (admin), without secrets."""
        self._may_manage_keys(principal)
        tokens = await self.stores.credentials.list_tokens(principal.account_id, face)
        return [t for t in tokens if t.face_role == FACE_KEY_ROLE]

    async def rotate_face_key(self, principal: Principal, face: str, key_id: str) -> IssuedToken:
        """A new secret for the key: the old one stops working at once (within TOKEN_CACHE_S
        on other nodes), the id, label and creation time stay."""
        old = await self._face_key(principal, face, key_id)
        secret = f"{face}_{pysecrets.token_urlsafe(FACE_KEY_BYTES)}"
        new = replace(old, secret_hash=token_hash(secret))
        await self.stores.credentials.delete_token(old.account_id, old.id)
        await self.stores.credentials.insert_token(new)
        self._tokens.invalidate(old.secret_hash)
        self._alive.invalidate_prefix(f"{old.account_id}/{old.id}/")
        return IssuedToken(new, secret)

    async def revoke_face_key(self, principal: Principal, face: str, key_id: str) -> None:
        key = await self._face_key(principal, face, key_id)
        await self.revoke_token(key.account_id, key.id)

    async def authenticate_face_key(self, face: str, value: str | None, field: str) -> Principal:
        """The caller holding a shared access key of `face` (the key's account, role
        operator, kind "key").

        Raises:
            Unauthorized: missing, unknown, another face's key, or an API token.
        """
        value = (value or "").strip()
        if not value:
            raise Unauthorized(f"missing {field} header", field=field)
        token = await self._lookup_token(value)
        if (
            token is None
            or token.face != face
            or token.face_role != FACE_KEY_ROLE
            or not hmac.compare_digest(token.secret_hash, token_hash(value))
        ):
            raise Unauthorized(f"unknown {field}", field=field)
        if token.expires_at is not None and token.expires_at <= self.clock.now():
            raise Unauthorized(f"{field} expired", field=field)
        return Principal(token.account_id, token.role, token.id, "key", FACE_KEY_ROLE)

    def _may_manage_keys(self, principal: Principal) -> None:
        """Token admins seeing the whole account: a face's key reaches every device of it."""
        authz.authorize(principal, Permission.TOKENS_ADMIN, WHOLE_ACCOUNT)

    async def _face_key(self, principal: Principal, face: str, key_id: str) -> ApiToken:
        self._may_manage_keys(principal)
        token = await self.stores.credentials.get_token(principal.account_id, key_id)
        if (
            token is None
            or token.account_id != principal.account_id
            or token.face != face
            or token.face_role != FACE_KEY_ROLE
        ):
            raise NotFound(f"key {key_id!r} not found", field="keyId")
        return token

    async def bootstrap_admin_token(self, account: Account, value: str) -> None:
        """THINGHUB_ADMIN_TOKEN: make sure a token with this value exists (idempotent)."""
        if await self._lookup_token(value) is None:
            await self.create_token(account.id, Role.ADMIN, label="bootstrap", secret=value)

    async def _token_alive(self, token_id: str, account_id: str, fingerprint: Any) -> bool:
        """Whether the very API token a JWT was minted from still exists; cached briefly.

        Token ids are per account, and the same id may name a new token later (IoT Central's
        PUT /apiTokens/{id} chooses ids), so the JWT carries the token's fingerprint and
        account, and both must match.
        """
        now = self.clock.now()
        key = f"{account_id}/{token_id}/{fingerprint}"
        if self._alive.get(key):
            return True
        token = await self.stores.credentials.get_token(account_id, token_id)
        if (
            token is None
            or token.account_id != account_id
            or not hmac.compare_digest(_fingerprint(token), str(fingerprint))
            or (token.expires_at is not None and token.expires_at <= now)
        ):
            return False
        self._alive.put(key, True)
        return True

    async def _lookup_token(self, value: str) -> ApiToken | None:
        digest = token_hash(value)
        token = self._tokens.get(digest)
        if token is not None:
            return token
        token = await self.stores.credentials.get_token_by_hash(digest)
        if token is not None:
            self._tokens.put(digest, token)
        return token

    # -- authentication ------------------------------------------------------------------

    async def authenticate_bearer(self, value: str) -> Principal:
        """A bearer credential: an API token, or a JWT from POST /v1/auth/token."""
        value = value.strip()
        if not value:
            raise Unauthorized("empty bearer token", field="Authorization")
        if value.count(".") == 2 and not value.startswith(TOKEN_PREFIX):
            try:
                claims = self.jwt.verify(value, now=self.clock.now())
            except JwtError as exc:
                raise Unauthorized(f"access token rejected: {exc}", field="Authorization") from exc
            extra = claims.extra or {}
            if extra.get("src") == "token" and not await self._token_alive(
                claims.subject, claims.account_id, extra.get("tfp")
            ):
                raise Unauthorized("access token's API token was revoked", field="Authorization")
            return Principal(
                claims.account_id,
                Role(claims.role),
                claims.subject,
                "user",
                None,
                extra.get("project"),
                None if claims.scope is None else frozenset(claims.scope.split()),
            )
        token = await self._lookup_token(value)
        if (
            token is None
            or token.face_role == FACE_KEY_ROLE  # a face's key is not a bearer token
            or not hmac.compare_digest(token.secret_hash, token_hash(value))
        ):
            raise Unauthorized("unknown API token", field="Authorization")
        if token.expires_at is not None and token.expires_at <= self.clock.now():
            raise Unauthorized("API token expired", field="Authorization")
        return Principal(
            token.account_id, token.role, token.id, "token", token.face_role, token.project
        )

    async def current(self, principal: Principal) -> Principal | None:
        """The principal as it stands now, for work done later in its name (a scheduled
        job): a user with its current role; a token's principal (or that of an access token
        minted from a token) while the token is neither revoked nor expired. None when its
        credential is gone."""
        if principal.kind == "user":
            for user in await self.stores.credentials.list_users(principal.account_id):
                if user.id == principal.subject:
                    return replace(principal, role=user.role)
        token = await self.stores.credentials.get_token(principal.account_id, principal.subject)
        if token is None or (token.expires_at is not None and token.expires_at <= self.clock.now()):
            return None
        return principal

    async def authenticate_header(self, header: str | None) -> Principal:
        if not header:
            raise Unauthorized("missing Authorization header", field="Authorization")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthorized("Authorization must be 'Bearer <token>'", field="Authorization")
        return await self.authenticate_bearer(value)

    # -- users and OAuth2 grants ---------------------------------------------------------

    async def add_user(
        self,
        principal: Principal,
        username: str,
        password: str | None,
        role: Role,
        *,
        user_id: str | None = None,
    ) -> User:
        """Create a user in the caller's account (Permission.USERS_ADMIN, account-wide: a user
        sees the whole account, so a project-limited caller may not).

        Args:
            password: None makes a user who cannot sign in with a password (IoT Central's
                email users and service principals sign in elsewhere).
            user_id: the id to give it (a face that lets the caller name its users scopes it
                to the account itself); default a new UUID.

        Raises:
            Forbidden: the caller may not create users.
            Invalid: naming `username` or `password`.
            Conflict: the username is taken (usernames are global), naming `username`.
        """
        authz.authorize(principal, Permission.USERS_ADMIN)
        try:
            return await self.create_user(
                principal.account_id, username, password, role, user_id=user_id
            )
        except Conflict as exc:
            raise Conflict(exc.message, field="username") from exc

    async def get_user(self, principal: Principal, user_id: str) -> User:
        """A user of the caller's account (Permission.USERS_ADMIN).

        Raises:
            NotFound: no such user in the caller's account, naming `userId`.
        """
        for user in await self.list_users(principal):
            if user.id == user_id:
                return user
        raise NotFound(f"user {user_id!r} not found", field="userId")

    async def set_user_role(self, principal: Principal, user_id: str, role: Role) -> User:
        """Give a user of the caller's account another role (admin); not the caller itself
        (an admin who demotes itself could leave the account without one). Access tokens
        already issued to the user keep their role until they expire (jwt_ttl_s)."""
        user = await self.get_user(principal, user_id)
        if principal.kind == "user" and principal.subject == user_id and role is not user.role:
            raise Invalid("you cannot change your own role", field="roles")
        if not await self.stores.credentials.set_user_role(principal.account_id, user_id, role):
            raise NotFound(f"user {user_id!r} not found", field="userId")
        logger.info(
            "user %s is now %s (account %s)", user.username, role.value, principal.account_id
        )
        return replace(user, role=role)

    async def list_users(self, principal: Principal) -> list[User]:
        """The users of the caller's account, by username (Permission.USERS_ADMIN: who may
        create users may see them)."""
        authz.authorize(principal, Permission.USERS_ADMIN)
        return await self.stores.credentials.list_users(principal.account_id)

    async def create_user(
        self,
        account_id: str,
        username: str,
        password: str | None,
        role: Role,
        *,
        user_id: str | None = None,
    ) -> User:
        if not username or len(username) > 200:
            raise Invalid("username must be 1 to 200 characters", field="username")
        if password is not None and len(password) < 8:
            raise Invalid("password must be at least 8 characters", field="password")
        # No password: an empty hash, which verify_password never accepts.
        hashed = "" if password is None else await self._argon2(hash_password, password)
        user = User(
            new_uuid() if user_id is None else user_id,
            account_id,
            username,
            hashed,
            role,
            self.clock.now(),
        )
        await self.stores.credentials.insert_user(user)
        return user

    async def delete_user(self, principal: Principal, user_id: str) -> User:
        """Delete a user of the caller's account (admin); not the caller itself. Its console
        sessions end at once, on every node; access tokens already issued to the user for the
        API live on until they expire (jwt_ttl_s)."""
        authz.authorize(principal, Permission.USERS_ADMIN)
        if principal.kind == "user" and principal.subject == user_id:
            raise Invalid("you cannot delete yourself", field="userId")
        users = await self.stores.credentials.list_users(principal.account_id)
        user = next((u for u in users if u.id == user_id), None)
        if user is None or not await self.stores.credentials.delete_user(
            principal.account_id, user_id
        ):
            raise NotFound(f"user {user_id!r} not found", field="userId")
        ended = await self.stores.console_sessions.delete_user(user_id)
        logger.info(
            "user %s deleted (account %s), %d console sessions ended",
            user.username, principal.account_id, ended,
        )  # fmt: skip
        return user

    async def _argon2(self, hasher: Callable[..., T], *args: str) -> T:
        """Hash or verify off the event loop, at most PASSWORD_HASHES_AT_ONCE at a time."""
        async with self._hashing:
            return await asyncio.to_thread(hasher, *args)

    async def password_grant(self, username: str, password: str) -> tuple[str, int]:
        user = await self.stores.credentials.get_user(username)
        # Verify against a dummy hash when the user is unknown, so timing does not tell.
        if user is None:
            await self._argon2(verify_password, _DUMMY_HASH, password)
            raise Unauthorized("invalid username or password", field="username")
        # argon2 takes tens of milliseconds: never on the event loop. A user without a
        # password (empty hash) is checked against the dummy too: refused, in the same time.
        stored = user.password_hash or _DUMMY_HASH
        if not await self._argon2(verify_password, stored, password):
            raise Unauthorized("invalid username or password", field="password")
        return self.jwt.issue(user.id, user.account_id, user.role.value, now=self.clock.now())

    async def client_credentials_grant(
        self, client_id: str, secret: str, *, scopes: frozenset[str] | None = None
    ) -> tuple[str, int]:
        """OAuth2 client credentials: the client is an API token (id + the token itself).

        `scopes` (checked by the caller against what its face defines) go into the access
        token's `scope` claim and limit it (see `authorize`); None: not scoped.
        """
        token = await self._lookup_token(secret)
        if token is None or token.id != client_id or token.face_role == FACE_KEY_ROLE:
            raise Unauthorized("invalid client credentials", field="client_secret")
        if token.expires_at is not None and token.expires_at <= self.clock.now():
            raise Unauthorized("client credentials expired", field="client_secret")
        # "src" and "tfp": the JWT dies with its API token (checked on use, _token_alive).
        extra = {
            "src": "token",
            "tfp": _fingerprint(token),
            **({"project": token.project} if token.project else {}),
        }
        return self.jwt.issue(
            token.id,
            token.account_id,
            token.role.value,
            scope=None if scopes is None else " ".join(sorted(scopes)),
            extra=extra,
            now=self.clock.now(),
        )


def _fingerprint(token: ApiToken) -> str:
    """Tells one API token from a later one with the same id; reveals nothing of its secret."""
    return hashlib.sha256(token.secret_hash.encode()).hexdigest()[:32]


_DUMMY_HASH = hash_password(pysecrets.token_hex(16))
