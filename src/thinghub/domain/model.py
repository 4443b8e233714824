"""Entities of the core model: accounts, principals, projects, deployments and devices."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from thinghub.domain.etags import device_etag

__all__ = [
    "Account",
    "ApiToken",
    "Deployment",
    "Device",
    "DeviceKind",
    "Principal",
    "Project",
    "Retention",
    "Role",
    "User",
]


class Role(StrEnum):
    """What a principal may do. Faces map their own role names onto these; what each role
    grants is the table in domain/roles.py (ROLE_PERMISSIONS)."""

    ADMIN = "admin"  # everything in the account, tokens and users included
    BUILDER = "builder"  # an operator who also writes device templates (IoT Central's App Builder)
    OPERATOR = "operator"  # read, and act on devices: create, update, commands, properties
    VIEWER = "viewer"  # read only


class DeviceKind(StrEnum):
    DEVICE = "device"
    GATEWAY = "gateway"  # an IoT Edge capable device; holds modules
    MODULE = "module"  # a module of a gateway; its key is "gateway/module"
    NODE = "node"  # an iTwin data logger / connection
    SENSOR = "sensor"  # an iTwin sensor under a node


@dataclass(frozen=True, slots=True)
class Retention:
    """How many days an account keeps each kind of data: None = the server's default
    (retention_telemetry_days, retention_events_days), 0 = forever.

    Telemetry covers the messages and their observations; files are device uploads (the
    Ioto face), counted from when each was last written.
    """

    telemetry_days: float | None = None
    events_days: float | None = None
    files_days: float | None = None


@dataclass(frozen=True, slots=True)
class Account:
    """A tenant. Everything else belongs to exactly one account."""

    id: str
    name: str
    id_scope: str
    created_at: float
    retention: Retention = Retention()


@dataclass(frozen=True, slots=True)
class User:
    id: str
    account_id: str
    username: str
    password_hash: str
    role: Role
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token; only the hash of its secret is kept."""

    id: str
    account_id: str
    secret_hash: str
    role: Role
    created_at: float
    label: str = ""
    expires_at: float | None = None
    # Which face's role vocabulary created it, e.g. "central" keeps its role name in `face_role`.
    face: str = "st"
    face_role: str | None = None
    # When set, the token sees and changes only this project's devices and data.
    project: str | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API token, a user (JWT) or an OAuth2 client."""

    account_id: str
    role: Role
    subject: str
    kind: str = "token"  # token | user | client
    face_role: str | None = None
    project: str | None = None  # limited to one project (see ApiToken.project)
    # An OAuth2 access token's scopes (`sensor-data:read`, ...); None: not scoped, the role
    # alone decides. A scoped principal writes only with a write scope (services.auth).
    scopes: frozenset[str] | None = None

    def sees(self, project: str | None) -> bool:
        """Whether a thing in `project` is visible to this principal."""
        return self.project is None or self.project == project


@dataclass(frozen=True, slots=True)
class Project:
    account_id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Deployment:
    account_id: str
    project: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Device:
    """A device, gateway, module, node or sensor; `id` is its entity key.

    A module's id is `gateway/module`, so twins, telemetry and events key on one column.
    """

    id: str
    account_id: str
    kind: DeviceKind
    name: str
    primary_key: str
    secondary_key: str
    created_at: float
    updated_at: float
    project: str | None = None
    deployment: str | None = None
    parent_id: str | None = None
    module_id: str | None = None
    enabled: bool = True
    simulated: bool = False
    provisioned: bool = False
    template: str | None = None
    model_id: str | None = None
    connection_state: str = "Disconnected"
    last_activity_at: float | None = None
    # Who created it (the ST API's tags.user) and free-form attributes for faces that need them.
    created_by: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def is_gateway(self) -> bool:
        return self.kind is DeviceKind.GATEWAY

    @property
    def etag(self) -> str:
        """Changes whenever the record is saved (domain/etags.py)."""
        flags = (self.enabled, self.simulated, self.provisioned)
        return device_etag(self.id, self.name, self.template, flags, self.updated_at)

    @property
    def is_connected(self) -> bool:
        return self.connection_state == "Connected"
