"""Ports: the interfaces services use; storage, bus and device adapters implement them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from thinghub.domain.commands import Command
from thinghub.domain.events import Event, EventType
from thinghub.domain.model import (
    Account,
    ApiToken,
    Deployment,
    Device,
    DeviceKind,
    Project,
    Retention,
    User,
)
from thinghub.domain.telemetry import Observation, TelemetryMessage
from thinghub.domain.twin import Twin
from thinghub.ports_live import Bus, Counter, DeviceChannel, DeviceFeed, Locks, Presence

__all__ = [
    "Bus",
    "C2DMessage",
    "Clock",
    "Counter",
    "DeviceChannel",
    "DeviceFeed",
    "EventQuery",
    "Locks",
    "MethodResult",
    "Page",
    "Presence",
    "Store",
    "TelemetryQuery",
]


T = TypeVar("T")


class Clock(Protocol):
    def now(self) -> float: ...


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


@dataclass(frozen=True, slots=True)
class MethodResult:
    status: int
    payload: Any


class Store(Protocol):
    """Everything durable. Every backend passes tests/contract."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    # accounts and principals
    async def insert_account(self, account: Account) -> None: ...
    async def get_account(self, account_id: str) -> Account | None: ...
    async def get_account_by_name(self, name: str) -> Account | None: ...
    async def get_account_by_scope(self, id_scope: str) -> Account | None: ...
    async def list_accounts(self) -> list[Account]: ...
    async def set_retention(self, account_id: str, retention: Retention) -> bool: ...
    async def insert_user(self, user: User) -> None: ...
    async def get_user_by_name(self, username: str) -> User | None: ...
    async def insert_api_token(self, token: ApiToken) -> None: ...
    async def get_api_token(self, account_id: str, token_id: str) -> ApiToken | None: ...
    async def get_api_token_by_hash(self, secret_hash: str) -> ApiToken | None: ...
    async def list_api_tokens(self, account_id: str, face: str | None = None) -> list[ApiToken]: ...
    async def delete_api_token(self, account_id: str, token_id: str) -> bool: ...

    # projects and deployments
    async def ensure_project(self, account_id: str, name: str, now: float) -> None: ...
    async def ensure_deployment(
        self, account_id: str, project: str, name: str, now: float
    ) -> None: ...
    async def list_projects(self, account_id: str) -> list[Project]: ...
    async def list_deployments(self, account_id: str, project: str) -> list[Deployment]: ...

    # devices (a module is a device row with kind module and id gateway/module)
    async def insert_device(self, device: Device, twin: Twin) -> None: ...
    async def get_device(self, device_id: str) -> Device | None: ...
    async def list_devices(
        self,
        account_id: str,
        *,
        project: str | None = None,
        deployment: str | None = None,
        parent_id: str | None = None,
        kinds: Sequence[DeviceKind] | None = None,
    ) -> list[Device]: ...
    async def update_device(self, device: Device) -> None: ...
    async def touch_device(
        self, device_id: str, last_activity_at: float, connection_state: str | None = None
    ) -> None: ...
    async def delete_device(self, device_id: str) -> bool: ...

    # twins (optimistic: put_twin returns False when `expected_version` is stale)
    async def get_twin(self, device_id: str) -> Twin | None: ...
    async def put_twin(self, twin: Twin, expected_version: int) -> bool: ...

    # telemetry; returns, per message, whether it was new (False = duplicate message id)
    async def append_telemetry(
        self, messages: Sequence[TelemetryMessage], observations: Sequence[Observation]
    ) -> list[bool]: ...
    async def query_telemetry(self, query: TelemetryQuery) -> Page[TelemetryMessage]: ...
    async def latest_observations(
        self, account_id: str, entity_id: str
    ) -> dict[str, Observation]: ...
    async def query_observations(
        self,
        account_id: str,
        entity_id: str,
        metric: str,
        since: float | None,
        until: float | None,
        limit: int,
    ) -> list[Observation]: ...

    # events
    async def append_event(self, event: Event) -> int: ...
    async def query_events(self, query: EventQuery) -> Page[Event]: ...

    # retention and deletion, in batches of `batch_rows` (each its own transaction); the
    # counts returned are telemetry messages / events deleted
    async def purge_telemetry(self, account_id: str, before: float, batch_rows: int) -> int: ...
    async def purge_events(self, account_id: str, before: float, batch_rows: int) -> int: ...
    async def delete_device_telemetry(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int: ...
    async def delete_device_events(
        self,
        account_id: str,
        device_id: str,
        since: float | None,
        until: float | None,
        batch_rows: int,
    ) -> int: ...

    # commands
    async def insert_command(self, command: Command) -> None: ...
    async def get_command(self, command_id: str) -> Command | None: ...
    async def update_command(self, command: Command) -> None: ...
    async def pending_commands(self, device_id: str) -> list[Command]: ...

    # cloud-to-device messages
    async def enqueue_c2d(self, message: C2DMessage) -> None: ...
    async def pending_c2d(self, device_id: str) -> list[C2DMessage]: ...
    async def delete_c2d(self, message_id: str) -> None: ...

    # MQTT persistent sessions: per client id, the adapter's JSON state (subscriptions, ...)
    async def save_session(self, client_id: str, state: dict[str, Any]) -> None: ...
    async def load_session(self, client_id: str) -> dict[str, Any] | None: ...
    async def delete_session(self, client_id: str) -> None: ...

    # named documents per account (device templates and other face-specific records)
    async def put_document(
        self, account_id: str, kind: str, key: str, body: Any, now: float
    ) -> None: ...
    async def get_document(self, account_id: str, kind: str, key: str) -> Any | None: ...
    async def list_documents(self, account_id: str, kind: str) -> list[tuple[str, Any]]: ...
    async def delete_document(self, account_id: str, kind: str, key: str) -> bool: ...
