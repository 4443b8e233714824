"""IoT Central's application roles, and how this face words a refusal in their names.

Each IoT Central role is a core role (domain/model.py Role): App Administrator is `admin`, App
Builder `builder`, App Operator `operator`. What each may do is the one authorization check's
(services/authz.py, with the table in domain/roles.py); this face decides nothing. Tokens made
by PUT /apiTokens keep the IoT Central role id in ApiToken.face_role, which their answers show.
Any other principal (the server's admin token, /v1 tokens, users) is named by its core role
(admin an App Administrator, builder an App Builder, operator an App Operator; a viewer has no
IoT Central role and may only read).
"""

from __future__ import annotations

from dataclasses import dataclass

from thinghub.domain.errors import Forbidden, Invalid
from thinghub.domain.model import Principal, Role
from thinghub.domain.roles import CENTRAL_BUILDER_ROLE_ID, Permission

__all__ = [
    "ADMINISTRATOR",
    "BUILDER",
    "OPERATOR",
    "ROLES",
    "CentralRole",
    "describe_refusal",
    "parse_role",
    "role_for",
    "role_of",
]


@dataclass(frozen=True, slots=True)
class CentralRole:
    id: str  # IoT Central's well-known role id
    name: str  # its display name
    aliases: tuple[str, ...]  # lower-case short names also accepted
    core: Role


ADMINISTRATOR = CentralRole(
    "ca310b8d-2f4a-44e0-a36e-957c202cd8d4",
    "App Administrator",
    ("administrator", "admin"),
    Role.ADMIN,
)
BUILDER = CentralRole(CENTRAL_BUILDER_ROLE_ID, "App Builder", ("builder",), Role.BUILDER)
OPERATOR = CentralRole(
    "ae2c9854-393b-4f97-8c42-479d70ce626e", "App Operator", ("operator",), Role.OPERATOR
)
ROLES = (ADMINISTRATOR, BUILDER, OPERATOR)
_BY_ID = {role.id: role for role in ROLES}
_BY_CORE = {role.core: role for role in ROLES}
# How this face's messages name a permission (what its routes need).
_WORDS = {Permission.TOKENS_ADMIN: "tokens"}


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
    if principal.face_role in _BY_ID and principal.role is _BY_ID[principal.face_role].core:
        return _BY_ID[principal.face_role]
    return _BY_CORE.get(principal.role)


def role_for(core: Role) -> CentralRole | None:
    """The IoT Central role of a core role; None for viewer (IoT Central has no read-only
    built-in role)."""
    return _BY_CORE.get(core)


def describe_refusal(error: Forbidden) -> str:
    """A refusal of the authorization check, in IoT Central's role names: "App Operator may
    not do this (templates.write)", "a token limited to project 'p' may not do this
    (tokens)". A refusal that is not about the role or the whole account (a project the
    caller named itself) keeps its message."""
    permission = error.details.get("permission")
    reason = error.details.get("reason")
    if not isinstance(permission, Permission) or reason not in ("role", "account_wide"):
        return error.message
    word = _WORDS.get(permission, permission.value)
    if reason == "account_wide":
        project = error.details.get("project")
        return f"a token limited to project {project!r} may not do this ({word})"
    # A token made here has the IoT Central role of its core role, so the core role names it.
    core = error.details.get("role")
    role = _BY_CORE.get(core) if isinstance(core, Role) else None
    if role is not None:
        who = role.name
    elif isinstance(core, Role):
        who = f"role {core.value!r}"
    else:
        who = "this role"
    return f"{who} may not do this ({word})"
