"""The storage ports: one Protocol per area of durable data, bundled as `Stores`.

Each area is what changes together: an account and its retention; the users and API tokens
that act for it; the registry (projects, deployments, devices); twins; telemetry with its
observations; events; commands; cloud-to-device messages; MQTT sessions; named documents;
Ioto products, device registrations (claims) and the records of device files; the web
console's sign-in sessions and failed sign-ins.
Every backend (SQL on SQLite or PostgreSQL, in memory) implements every area and passes the
contract suite in tests/contract.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from thinghub.domain.claims import Registration
from thinghub.domain.commands import Command
from thinghub.domain.device_files import DeviceFile
from thinghub.domain.events import Event, EventType
from thinghub.domain.model import (
    Account,
    ApiToken,
    Deployment,
    Device,
    DeviceKind,
    Project,
    Retention,
    Role,
    User,
)
from thinghub.domain.products import Product
from thinghub.domain.telemetry import Observation, TelemetryMessage, TelemetrySeries
from thinghub.domain.twin import Twin

__all__ = [
    "AccountStore",
    "C2DMessage",
    "C2DStore",
    "ClaimStore",
    "CommandStore",
    "ConnectionChange",
    "ConsoleSessionStore",
    "CredentialStore",
    "DeviceStore",
    "DocumentStore",
    "EventQuery",
    "EventStore",
    "FileStore",
    "Lifecycle",
    "Page",
    "ProductStore",
    "SeriesTelemetryStore",
    "SessionStore",
    "StoredConsoleSession",
    "Stores",
    "TelemetryQuery",
    "TelemetryStore",
    "TwinStore",
    "convert_rows",
]

T = TypeVar("T")


def convert_rows(
    rows: list[tuple[int, float]], affine: tuple[float, float, float]
) -> list[tuple[int, float]]:
    """`(ts, (value * scale + shift) / divisor)` of each row: the conversion
    stream_observations applies where the database does not."""
    scale, shift, divisor = (float(f) for f in affine)
    return [(ts, (value * scale + shift) / divisor) for ts, value in rows]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class TelemetryQuery:
    """`device_id` "d" matches the device and its modules; "d/m" only that module."""

    account_id: str
    project: str | None = None
    deployment: str | None = None
    device_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class EventQuery:
    """`event_types` None matches every type; a set matches any of its types."""

    account_id: str
    project: str | None = None
    deployment: str | None = None
    device_id: str | None = None
    event_types: frozenset[EventType] | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class C2DMessage:
    id: str
    device_id: str
    body: bytes
    properties: dict[str, str]
    created_at: float
    expires_at: float


class AccountStore(Protocol):
    """Accounts (tenants) and their retention setting. Names and id scopes are unique."""

    async def insert(self, account: Account) -> None: ...
    async def get(self, account_id: str) -> Account | None: ...
    async def get_by_name(self, name: str) -> Account | None: ...
    async def get_by_scope(self, id_scope: str) -> Account | None: ...
    async def all(self) -> list[Account]: ...
    async def set_retention(self, account_id: str, retention: Retention) -> bool: ...


class CredentialStore(Protocol):
    """Who may act for an account: users (unique user names) and API tokens (ids unique per
    account, secret hashes unique everywhere)."""

    async def insert_user(self, user: User) -> None: ...
    async def get_user(self, username: str) -> User | None: ...
    async def list_users(self, account_id: str) -> list[User]:
        """The account's users, by username."""

    async def delete_user(self, account_id: str, user_id: str) -> bool: ...
    async def set_user_role(self, account_id: str, user_id: str, role: Role) -> bool:
        """Give the account's user another role; False when it has no such user."""

    async def insert_token(self, token: ApiToken) -> None: ...
    async def get_token(self, account_id: str, token_id: str) -> ApiToken | None: ...
    async def get_token_by_hash(self, secret_hash: str) -> ApiToken | None: ...
    async def list_tokens(self, account_id: str, face: str | None = None) -> list[ApiToken]: ...
    async def delete_token(self, account_id: str, token_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class ConnectionChange:
    """A device connected or disconnected: its new state ("Connected" or "Disconnected") at
    `ts`, and the connection_state_event that records it."""

    device_id: str
    ts: float
    state: str
    event: Event


class DeviceStore(Protocol):
    """The registry: projects, deployments and devices (a module is a device row with kind
    module and id gateway/module)."""

    async def ensure_project(self, account_id: str, name: str, now: float) -> None: ...
    async def ensure_deployment(
        self, account_id: str, project: str, name: str, now: float
    ) -> None: ...
    async def list_projects(self, account_id: str) -> list[Project]: ...
    async def list_deployments(self, account_id: str, project: str) -> list[Deployment]: ...
    async def delete_project(self, account_id: str, name: str) -> bool:
        """A project and its deployments, if no device (of any kind) belongs to it; False
        when it does not exist or still has devices."""

    async def insert(self, device: Device, twin: Twin) -> None:
        """The device and its first twin, in one write."""

    async def get(self, device_id: str) -> Device | None: ...
    async def find(
        self,
        account_id: str,
        *,
        project: str | None = None,
        deployment: str | None = None,
        parent_id: str | None = None,
        kinds: Sequence[DeviceKind] | None = None,
    ) -> list[Device]: ...
    async def update(self, device: Device) -> None: ...
    async def touch(
        self, device_id: str, last_activity_at: float, connection_state: str | None = None
    ) -> None: ...
    async def record_connections(self, changes: Sequence[ConnectionChange]) -> None:
        """Connection transitions of several devices in one write, in order: each sets its
        device's connection state and lastActivityTime and marks it provisioned (as `touch`
        with a state does; no such device: no row changes) and appends its event."""

    async def delete(self, device_id: str) -> bool:
        """The device, its modules and what waits for them: twins, commands, C2D messages and
        MQTT sessions (client id = device key), so an id used again starts with nothing."""


class TwinStore(Protocol):
    """Twins, written optimistically: put returns False when `expected_version` is stale."""

    async def get(self, device_id: str) -> Twin | None: ...
    async def put(self, twin: Twin, expected_version: int) -> bool: ...


class TelemetryStore(Protocol):
    """Telemetry messages and the numbers in them (observations, and the latest value per
    metric). The deletes go in batches of `batch_rows` (each its own transaction) and count
    the messages deleted."""

    async def append(
        self,
        messages: Sequence[TelemetryMessage],
        observations: Sequence[Observation] | None = None,
    ) -> list[bool]:
        """Per message, whether it was new (False: a duplicate message id of its device).

        `observations` are stored with them (those of a duplicate are not); None stores each
        message's own (domain.telemetry.observations_of), what ingest does."""

    async def query(self, query: TelemetryQuery) -> Page[TelemetryMessage]: ...
    async def latest(self, account_id: str, entity_id: str) -> dict[str, Observation]: ...
    async def observations(
        self,
        account_id: str,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        limit: int,
    ) -> list[Observation]: ...
    def stream_observations(
        self,
        account_id: str,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
        affine: tuple[float, float, float] | None = None,
    ) -> AsyncIterator[list[tuple[int, float]]]:
        """Every `(ts, value)` of one metric in [since, until], oldest first, the time in
        integer microseconds as stored (a reader formats it without a float), in batches of
        about `batch_rows` (keyset paging: each batch is a short read that starts after the
        last time of the one before, so nothing holds more than a batch and a slow consumer
        holds no database resource between batches). Observations at one time always come
        in one batch, which may so exceed `batch_rows`; their order among themselves is
        unspecified. With `affine` (scale, shift, divisor) each value comes as `(value *
        scale + shift) / divisor`, computed in double arithmetic in that order (the same
        double a Python float expression gives), by the database where there is one."""

    async def purge(self, account_id: str, before: float, batch_rows: int) -> int:
        """The account's messages and observations older than `before`; the latest value of
        each metric stays."""

    async def delete_for_device(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int:
        """A device's messages in [since, until] (with its modules'), and their observations;
        a latest value in the range gives way to the newest one left."""


@runtime_checkable
class SeriesTelemetryStore(Protocol):
    """A telemetry area that also writes series (an upload's messages) as rows, without an
    object per message; ingest falls back to append(series.messages()) on one without."""

    async def append_series(self, series: Sequence[TelemetrySeries]) -> None:
        """Every point of every series as a new message (none has an id), with its
        observations, in one write unit, as append() would store the series' messages."""


class EventStore(Protocol):
    """Events, numbered in the order they were appended."""

    async def append(self, event: Event) -> int: ...
    async def query(self, query: EventQuery) -> Page[Event]: ...
    async def purge(self, account_id: str, before: float, batch_rows: int) -> int: ...
    async def delete_for_device(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int: ...


class CommandStore(Protocol):
    async def insert(self, command: Command) -> None: ...
    async def get(self, command_id: str) -> Command | None: ...
    async def update(self, command: Command) -> None:
        """Its outcome: status, completed_at, response_code and result."""

    async def pending(self, device_id: str) -> list[Command]: ...
    async def history(
        self, device_id: str, name: str, limit: int, before: tuple[float, str] | None = None
    ) -> list[Command]:
        """The device's commands of that name, newest first, at most `limit`; with `before`
        (created_at, id), only those older than it (a page after it)."""


class C2DStore(Protocol):
    """Cloud-to-device messages waiting for their device."""

    async def enqueue(self, message: C2DMessage) -> None: ...
    async def pending(self, device_id: str) -> list[C2DMessage]: ...
    async def delete(self, message_id: str) -> None: ...


class SessionStore(Protocol):
    """MQTT persistent sessions: per client id, the adapter's JSON state (subscriptions, ...)."""

    async def save(self, client_id: str, state: dict[str, Any]) -> None: ...
    async def load(self, client_id: str) -> dict[str, Any] | None: ...
    async def delete(self, client_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class StoredConsoleSession:
    """A console session as every node reads it (faces/console/sessions.py makes and reads it).

    The cookie value is never stored: `key` is its SHA-256, and the session's secrets (its
    CSRF token and the access token it signed in with) are in `sealed`, encrypted with a key
    derived from the cookie value, so a copy of the table opens no session and leaks no token.
    """

    key: str  # SHA-256 (hex) of the cookie value
    user_id: str | None  # None: anonymous (the sign-in form's session)
    created_at: float
    seen_at: float  # the idle clock
    expires_at: float  # absolute
    sealed: str  # the secrets, encrypted (text: base64)
    data: str  # JSON: what is not secret (user name, flash messages)


class ConsoleSessionStore(Protocol):
    """The console's sessions and failed sign-ins, shared by every node on the database.

    Reads are not cached: a session deleted on one node (sign-out, its user deleted) is gone
    for the next request on every node.
    """

    async def get(self, key: str) -> StoredConsoleSession | None: ...

    async def put(self, session: StoredConsoleSession) -> None:
        """Insert, or replace the session with the same key."""

    async def delete(self, key: str) -> None: ...

    async def delete_user(self, user_id: str) -> int:
        """Delete every session of a user; returns how many."""

    async def sweep(self, now: float, idle_s: float, keep: int, failed_since: float) -> int:
        """Delete sessions expired at `now` or idle for `idle_s`, then all but the `keep` most
        recently seen, and failed sign-ins older than `failed_since`; returns the sessions
        deleted."""

    async def fail(self, key: str, at: float) -> None:
        """Record a failed sign-in of `key` (a user name, a client address) at `at`."""

    async def failures(self, key: str, since: float) -> int:
        """Failed sign-ins of `key` after `since`."""

    async def forgive(self, key: str) -> None:
        """Forget the failed sign-ins of `key`."""


class DocumentStore(Protocol):
    """Named JSON documents per account and kind (templates, enrollment groups, ...)."""

    async def put(self, account_id: str, kind: str, key: str, body: Any, now: float) -> None: ...
    async def get(self, account_id: str, kind: str, key: str) -> Any | None: ...
    async def all(self, account_id: str, kind: str) -> list[tuple[str, Any]]:
        """Every (key, body) of the kind, by key."""

    async def delete(self, account_id: str, kind: str, key: str) -> bool: ...


class ProductStore(Protocol):
    """Ioto products: ids unique everywhere, token hashes unique everywhere."""

    async def insert(self, product: Product) -> None: ...
    async def get(self, product_id: str) -> Product | None: ...
    async def get_by_token_hash(self, token_hash: str) -> Product | None: ...
    async def in_account(self, account_id: str) -> list[Product]:
        """The account's products (revoked ones too), oldest first."""

    async def revoke(self, product_id: str, now: float) -> bool:
        """Mark a product revoked (its token stops working); False if unknown or revoked."""


class ClaimStore(Protocol):
    """Ioto device registrations by claim id (claimed or not), as domain.claims keeps them."""

    async def get(self, claim_id: str) -> Registration | None: ...
    async def put(self, registration: Registration) -> None:
        """Insert or replace the registration of its claim id."""

    async def find(
        self,
        account_id: str,
        *,
        product_id: str | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> list[Registration]:
        """Registrations claimed by `account_id`, by claim id ascending: the first `limit`
        after `after`, or with `before` the last `limit` before it (still ascending)."""


class FileStore(Protocol):
    """The records of device files (the bytes are in a BlobStore), by account and key.

    Keys sort in UTF-8 byte order, as S3 lists them.
    """

    async def put(self, file: DeviceFile) -> None:
        """Insert or replace the record of its (account, key)."""

    async def get(self, account_id: str, key: str) -> DeviceFile | None: ...
    async def delete(self, account_id: str, key: str) -> bool: ...
    async def scan(
        self, account_id: str, *, prefix: str = "", after: str = "", limit: int
    ) -> list[DeviceFile]:
        """Up to `limit` records whose key starts with `prefix` and sorts after `after`, in
        key order."""

    async def older_than(self, account_id: str, before: float, limit: int) -> list[DeviceFile]:
        """Up to `limit` records last written before `before`, oldest first (retention)."""


class Lifecycle(Protocol):
    """Something a backend starts before use and closes after (a connection pool, a task)."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Stores:
    """Every storage area of one backend. Every backend passes tests/contract.

    `resources` is what `start()` starts, in order, and `close()` closes, in reverse (e.g. the
    database, then the telemetry writer that runs on it).
    """

    accounts: AccountStore
    credentials: CredentialStore
    devices: DeviceStore
    twins: TwinStore
    telemetry: TelemetryStore
    events: EventStore
    commands: CommandStore
    c2d: C2DStore
    sessions: SessionStore
    documents: DocumentStore
    products: ProductStore
    claims: ClaimStore
    files: FileStore
    console_sessions: ConsoleSessionStore
    resources: tuple[Lifecycle, ...] = ()

    async def start(self) -> None:
        for resource in self.resources:
            await resource.start()

    async def close(self) -> None:
        for resource in reversed(self.resources):
            await resource.close()
