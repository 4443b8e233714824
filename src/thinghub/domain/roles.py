"""Permissions: what each core role may do, and which permissions concern the whole account.

The one authorization check (services/authz.py) reads these tables. Faces map their own role
vocabularies onto the core roles when a token is made (IoT Central's App Builder is `builder`)
and never check permissions themselves. docs/concepts/accounts-and-security.md, "Roles", shows
the same table.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from thinghub.domain.model import Role

__all__ = [
    "ACCOUNT_WIDE",
    "CENTRAL_BUILDER_ROLE_ID",
    "ROLE_PERMISSIONS",
    "Permission",
    "grants",
    "stored_role",
]


class Permission(StrEnum):
    """An action on the things of an account (or of one project of it)."""

    # See devices, twins, telemetry, events, commands, templates, projects.
    READ = "read"
    # Create, change and delete devices and modules; desired properties, commands, C2D
    # messages, telemetry sent for a device, deleting a device's data; see device keys.
    DEVICES_WRITE = "devices.write"
    # Create, change and delete device templates.
    TEMPLATES_WRITE = "templates.write"
    # DPS enrollment groups (they hold group keys).
    PROVISIONING_ADMIN = "provisioning.admin"
    # X.509 client certificates for devices.
    CERTIFICATES_ISSUE = "certificates.issue"
    # Mint, list and revoke API tokens.
    TOKENS_ADMIN = "tokens.admin"
    # Create users.
    USERS_ADMIN = "users.admin"
    # The account's settings (retention).
    ACCOUNT_ADMIN = "account.admin"


_P = Permission

#: What each core role grants. A builder is IoT Central's App Builder: an operator who also
#: writes device templates, and never manages tokens or users.
ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = MappingProxyType(
    {
        Role.ADMIN: frozenset(Permission),
        Role.BUILDER: frozenset({_P.READ, _P.DEVICES_WRITE, _P.TEMPLATES_WRITE}),
        Role.OPERATOR: frozenset({_P.READ, _P.DEVICES_WRITE}),
        Role.VIEWER: frozenset({_P.READ}),
    }
)

#: Permissions over what belongs to the whole account, never to one project: a principal
#: limited to a project is refused them whatever its role (templates, users and the account's
#: settings reach beyond its project).
ACCOUNT_WIDE: frozenset[Permission] = frozenset(
    {_P.TEMPLATES_WRITE, _P.USERS_ADMIN, _P.ACCOUNT_ADMIN}
)

#: IoT Central's well-known id of its App Builder role. Before Role.BUILDER existed, the
#: Central face stored App Builder tokens as `operator` with this id as their face role;
#: migration 0005 rewrites them, and `stored_role` reads any row it missed as a builder.
CENTRAL_BUILDER_ROLE_ID = "344138e9-8de4-4497-8c54-5237e96d6aaf"


def grants(role: Role, permission: Permission) -> bool:
    """Whether `role` grants `permission` (the project limit is checked apart)."""
    return permission in ROLE_PERMISSIONS[role]


def stored_role(role: str, face: str, face_role: str | None) -> Role:
    """The core role of a stored API token, tolerant of rows written before Role.BUILDER.

    Raises:
        ValueError: `role` is no core role.
    """
    if role == Role.OPERATOR and face == "central" and face_role == CENTRAL_BUILDER_ROLE_ID:
        return Role.BUILDER
    return Role(role)
