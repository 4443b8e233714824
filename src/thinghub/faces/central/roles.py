"""IoT Central's application roles, what each may do on this face, and their core roles.

Tokens created by PUT /apiTokens keep the IoT Central role id in ApiToken.face_role. Any other
principal (the server's admin token, /v1 tokens, users) is seen through its core role: admin is
an App Administrator, operator an App Operator, and a viewer may only read.

App Builder maps to the core role *operator*, not admin: a Builder's token also works on /v1,
where admin means minting tokens and users, which IoT Central forbids Builders. Builders manage
device templates here, which this face checks itself (see GRANTS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from thinghub.domain.errors import Forbidden, Invalid
from thinghub.domain.model import Principal, Role

__all__ = [
    "ADMINISTRATOR",
    "BUILDER",
    "OPERATOR",
    "ROLES",
    "CentralRole",
    "Permission",
    "parse_role",
    "require",
    "role_of",
]

Permission = Literal["read", "devices.write", "templates.write", "tokens"]


@dataclass(frozen=True, slots=True)
class CentralRole:
    id: str  # IoT Central's well-known role id
    name: str  # its display name
    aliases: tuple[str, ...]  # lower-case short names also accepted
    core: Role
    grants: frozenset[Permission]


ADMINISTRATOR = CentralRole(
    "ca310b8d-2f4a-44e0-a36e-957c202cd8d4",
    "App Administrator",
    ("administrator", "admin"),
    Role.ADMIN,
    frozenset({"read", "devices.write", "templates.write", "tokens"}),
)
BUILDER = CentralRole(
    "344138e9-8de4-4497-8c54-5237e96d6aaf",
    "App Builder",
    ("builder",),
    Role.OPERATOR,
    frozenset({"read", "devices.write", "templates.write"}),
)
OPERATOR = CentralRole(
    "ae2c9854-393b-4f97-8c42-479d70ce626e",
    "App Operator",
    ("operator",),
    Role.OPERATOR,
    frozenset({"read", "devices.write"}),
)
ROLES = (ADMINISTRATOR, BUILDER, OPERATOR)
_BY_ID = {role.id: role for role in ROLES}
_BY_CORE = {Role.ADMIN: ADMINISTRATOR, Role.OPERATOR: OPERATOR}
_READ_ONLY: frozenset[Permission] = frozenset({"read"})
_ACCOUNT_WIDE: frozenset[Permission] = frozenset({"tokens", "templates.write"})


def parse_role(value: object) -> CentralRole:
    """A role by IoT Central id, display name ("App Builder") or short name ("builder").

    Raises:
        Invalid: naming the known roles.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        for role in ROLES:
            if text in (role.id, role.name.lower(), *role.aliases):
                return role
    known = "; ".join(f"{role.id} ({role.name})" for role in ROLES)
    raise Invalid(f"unknown role {value!r}; roles are {known}", field="roles")


def role_of(principal: Principal) -> CentralRole | None:
    """The caller's IoT Central role; None for a read-only (viewer) principal."""
    if principal.face_role in _BY_ID:
        return _BY_ID[principal.face_role]
    return _BY_CORE.get(principal.role)


def require(principal: Principal, permission: Permission) -> None:
    """Raise Forbidden (403) unless the caller's role grants the permission."""
    role = role_of(principal)
    grants = role.grants if role is not None else _READ_ONLY
    if principal.project is not None and permission in _ACCOUNT_WIDE:
        # Tokens and templates belong to the whole application, not to one project.
        raise Forbidden(
            f"a token limited to project {principal.project!r} may not do this ({permission})",
            field="role",
        )
    if permission not in grants:
        who = role.name if role is not None else f"role {principal.role.value!r}"
        raise Forbidden(f"{who} may not do this ({permission})", field="role")
