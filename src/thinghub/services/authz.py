"""Authorization: the one check of principal x permission x resource, for every face.

Services call `authorize` before they act; faces never do (they map their own role names onto
core roles when a token is made, and translate the errors). The check, in this order:

0. an OAuth2 access token with scopes (`Principal.scopes`) that names none of WRITE_SCOPES is
   read-only: any permission but READ is Forbidden naming the scope (`field: "scope"`,
   reason "scope"); without scopes the role alone decides;
1. the principal's role grants the permission (domain/roles.py ROLE_PERMISSIONS), else
   Forbidden naming the role (`field: "role"`);
2. a principal limited to one project is refused permissions over the whole account
   (ACCOUNT_WIDE: templates, users, the account's settings) and the resource WHOLE_ACCOUNT
   (e.g. IoT Central's API tokens, which belong to no project), else Forbidden;
3. the resource:
   - an existing thing (anything with `account_id` and `project`: a Device, an ApiToken, a
     `Located`) of another account, or outside the principal's project, is absent: `absent`
     (a NotFound naming it) is raised, never Forbidden, so nothing tells that it exists;
   - `NewIn(project)`, something about to be made in a project (None: in no project): a
     project-limited principal may only make things in its own project, else Forbidden
     (`field: "project"`): the caller named the project itself, so nothing leaks.

Every Forbidden carries `details`: `permission` (the Permission), `reason` ("scope", "role",
"account_wide" or "project"), `role` and `project` of the principal, so a face can word the
refusal in its own vocabulary (IoT Central names its role) without deciding anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol

from thinghub.domain.errors import Forbidden, NotFound
from thinghub.domain.model import Principal
from thinghub.domain.roles import ACCOUNT_WIDE, Permission, grants

__all__ = [
    "WHOLE_ACCOUNT",
    "WRITE_SCOPES",
    "Located",
    "NewIn",
    "Owned",
    "Resource",
    "WholeAccount",
    "authorize",
    "may",
    "visible",
]


class Owned(Protocol):
    """Anything that belongs to an account, and maybe to one project of it."""

    @property
    def account_id(self) -> str: ...

    @property
    def project(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Located:
    """Where a thing kept as a plain document (an enrollment group) belongs."""

    account_id: str
    project: str | None


@dataclass(frozen=True, slots=True)
class NewIn:
    """Something about to be made in `project` of the principal's account (None: in none)."""

    project: str | None


@dataclass(frozen=True, slots=True)
class WholeAccount:
    """The account as a whole: what belongs to no project (IoT Central's API tokens)."""


WHOLE_ACCOUNT: Final = WholeAccount()

# Scopes of an OAuth2 access token that allow more than reading (the iTwin / Bentley IMS
# vocabulary of POST /connect/token). A token whose scopes name none of them is read-only on
# every face.
WRITE_SCOPES: Final = frozenset({"sensor-data:modify", "itwins:modify"})

Resource = Owned | NewIn | WholeAccount

# The word each permission had in the messages of the checks this one replaced ("role
# 'viewer' may not write here"); faces show these messages as they are.
_VERB: dict[Permission, str] = {
    Permission.READ: "read",
    Permission.DEVICES_WRITE: "write",
    Permission.TEMPLATES_WRITE: "write",
}

# Why each account-wide permission is beyond a project (the end of the refusal's message).
_WHOLE: dict[Permission, str] = {
    Permission.TEMPLATES_WRITE: "device templates belong to the whole account",
    Permission.USERS_ADMIN: "users see the whole account",
    Permission.ACCOUNT_ADMIN: "the account's settings apply to the whole account",
}


def visible(principal: Principal, thing: Owned) -> bool:
    """Whether `thing` is within the principal's reach: its account, and its project when the
    principal is limited to one (a thing of no project is then out of reach)."""
    return thing.account_id == principal.account_id and principal.sees(thing.project)


def may(principal: Principal, permission: Permission) -> bool:
    """Whether the principal's role grants `permission`, project limit included (for views
    that show less rather than refuse, such as device keys)."""
    if _read_only_scopes(principal, permission) or not grants(principal.role, permission):
        return False
    return principal.project is None or permission not in ACCOUNT_WIDE


def authorize(
    principal: Principal,
    permission: Permission,
    resource: Resource | None = None,
    *,
    absent: NotFound | None = None,
) -> None:
    """The one authorization check (see the module docstring for the rules and their order).

    Args:
        principal: Who is asking.
        permission: What it wants to do.
        resource: What it wants to do it to: None (the action as such), WHOLE_ACCOUNT,
            `NewIn(project)`, or an existing thing with `account_id` and `project`.
        absent: What to raise when an existing `resource` is out of reach (default: a
            NotFound naming nothing).

    Raises:
        Forbidden: the role does not grant it, or the project limit forbids it.
        NotFound: an existing resource of another account or project.
    """
    if _read_only_scopes(principal, permission):
        raise _refused(
            principal,
            permission,
            "scope",
            "the access token's scopes are read-only (it needs one of "
            f"{', '.join(sorted(WRITE_SCOPES))})",
            "scope",
        )
    if not grants(principal.role, permission):
        raise _refused(
            principal,
            permission,
            "role",
            f"role {principal.role.value!r} may not {_VERB.get(permission, 'admin')} here",
            "role",
        )
    limited = principal.project
    if limited is None:
        if resource is None or isinstance(resource, NewIn | WholeAccount):
            return
    elif permission in ACCOUNT_WIDE:
        raise _refused(
            principal,
            permission,
            "account_wide",
            f"this token is limited to project {limited!r}; {_WHOLE[permission]}",
            "project",
        )
    elif isinstance(resource, WholeAccount):
        raise _refused(
            principal,
            permission,
            "account_wide",
            f"this token is limited to project {limited!r}; this belongs to the whole account",
            "project",
        )
    elif isinstance(resource, NewIn):
        if resource.project != limited:
            raise _refused(
                principal,
                permission,
                "project",
                f"this token is limited to project {limited!r}",
                "project",
            )
        return
    if (
        resource is not None
        and not isinstance(resource, NewIn | WholeAccount)
        and not visible(principal, resource)
    ):
        raise absent or NotFound("not found")


def _read_only_scopes(principal: Principal, permission: Permission) -> bool:
    """An access token with scopes, none of them a write scope, asking for more than READ."""
    return (
        permission is not Permission.READ
        and principal.scopes is not None
        and not principal.scopes & WRITE_SCOPES
    )


def _refused(
    principal: Principal,
    permission: Permission,
    reason: Literal["scope", "role", "account_wide", "project"],
    message: str,
    field: str,
) -> Forbidden:
    return Forbidden(
        message,
        field=field,
        permission=permission,
        reason=reason,
        role=principal.role,
        project=principal.project,
    )
