"""Routes of the IoT Central face for roles and users (the real API's shapes).

IoT Central's users are thinghub users of the caller's account (services/auth.py, the same
service /v1's POST /users uses); their IoT Central role is their core role (faces/central/
roles.py). Two things differ from /v1, and the face bridges them:

- The caller names a user's id (PUT /users/{id}), and ids are per application. A user made
  here is stored under `<account id>/<id>` (`/` is in no id a caller gives, nor in /v1's UUIDs),
  so B's user `x` and A's user `x` are two users and neither learns of the other.
- IoT Central's users have no password: an email user signs in with its email (username =
  the email), a service principal is its Azure AD tenant and object ids (username =
  `servicePrincipal:<account id>:<tenant>:<object>`). Neither can sign in with a password
  here (thinghub has no Azure AD sign-in); they hold a role, as the real API's users do.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.ids import parse_id
from thinghub.domain.model import Principal, User
from thinghub.faces._http import OrjsonResponse, services_of, settings_of
from thinghub.faces.central._wire import caller_dependency, page_link
from thinghub.faces.central.roles import ROLES, CentralRole, parse_role, role_for
from thinghub.faces.central.schemas import RoleAssignment

__all__ = ["router"]

Caller = Annotated[Principal, Depends(caller_dependency)]

# A stored id is `<account id>/<id>` in a column of 160 characters; an account id is a UUID.
MAX_USER_ID_CHARS = 120
USER_ID_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MAX_USER_ID_CHARS}}}$"
UserId = Annotated[str, Path(json_schema_extra={"pattern": USER_ID_PATTERN})]
MAX_EMAIL_CHARS = 200  # thinghub's longest username
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
GUID_SCHEMA: dict[str, Any] = {"pattern": "^" + GUID.pattern + "$"}
SERVICE_PRINCIPAL = "servicePrincipal"
USER_TYPES = ("email", SERVICE_PRINCIPAL)

router = APIRouter()


class _Body(BaseModel):
    # A field this face does not apply is a 400 naming it.
    model_config = ConfigDict(extra="forbid")


class UserBody(_Body):
    """A user as PUT takes it (and GET shows it: `id` may come back when it is the path's)."""

    type: StrictStr = Field(json_schema_extra={"enum": list(USER_TYPES)})
    roles: list[RoleAssignment] = Field(min_length=1, max_length=1)
    email: StrictStr | None = Field(default=None, description="An email user's address")
    tenantId: StrictStr | None = Field(
        default=None, description="A service principal's tenant", json_schema_extra=GUID_SCHEMA
    )
    objectId: StrictStr | None = Field(
        default=None, description="A service principal's object id", json_schema_extra=GUID_SCHEMA
    )
    id: StrictStr | None = Field(default=None, description="Read-only: the path's id")


class UserPatch(_Body):
    """A change of role; the other fields may come back as GET shows them, unchanged."""

    roles: list[RoleAssignment] | None = Field(default=None, min_length=1, max_length=1)
    type: StrictStr | None = Field(default=None, description="Read-only")
    email: StrictStr | None = Field(default=None, description="Read-only")
    tenantId: StrictStr | None = Field(default=None, description="Read-only")
    objectId: StrictStr | None = Field(default=None, description="Read-only")
    id: StrictStr | None = Field(default=None, description="Read-only")


# -- roles ----------------------------------------------------------------------------------


def _role_json(role: CentralRole) -> dict[str, Any]:
    return {"id": role.id, "displayName": role.name}


@router.get("/roles", tags=["roles"], summary="List roles")
async def list_roles(caller: Caller) -> Response:
    """IoT Central's three built-in roles, as API tokens and users carry them."""
    return OrjsonResponse({"value": [_role_json(role) for role in ROLES]})


@router.get("/roles/{role_id}", tags=["roles"], summary="Get a role")
async def get_role(role_id: str, caller: Caller) -> Response:
    for role in ROLES:
        if role.id == role_id:
            return OrjsonResponse(_role_json(role))
    raise NotFound(f"role {role_id!r} not found", field="roleId")


# -- users ----------------------------------------------------------------------------------


def _stored_id(account_id: str, user_id: str) -> str:
    return f"{account_id}/{user_id}"


def _shown_id(user: User) -> str:
    """The id IoT Central shows: a user made here without its account prefix; one made on
    /v1 by its UUID."""
    return user.id.removeprefix(f"{user.account_id}/")


def _sp_prefix(account_id: str) -> str:
    return f"{SERVICE_PRINCIPAL}:{account_id}:"


def _identity(user: User) -> dict[str, Any]:
    """type and email, or type, tenantId and objectId."""
    prefix = _sp_prefix(user.account_id)
    if user.username.startswith(prefix):
        tenant, _, obj = user.username.removeprefix(prefix).partition(":")
        return {"type": SERVICE_PRINCIPAL, "tenantId": tenant, "objectId": obj}
    # A thinghub user signs in with a user name; IoT Central's users are email users.
    return {"type": "email", "email": user.username}


def _user_json(user: User) -> dict[str, Any]:
    role = role_for(user.role)
    return {
        "id": _shown_id(user),
        **_identity(user),
        # A viewer has no IoT Central role.
        "roles": [] if role is None else [{"role": role.id}],
    }


def _username(account_id: str, body: UserBody) -> str:
    """The username that stands for the body's identity, checked."""
    if body.type == "email":
        for name in ("tenantId", "objectId"):
            if name in body.model_fields_set:
                raise Invalid(f"{name} is for a service principal, not an email user", field=name)
        email = (body.email or "").strip()
        if not email or len(email) > MAX_EMAIL_CHARS or not EMAIL.fullmatch(email):
            raise Invalid(
                f"email must be an email address of 1 to {MAX_EMAIL_CHARS} characters",
                field="email",
            )
        return email
    if body.type == SERVICE_PRINCIPAL:
        if "email" in body.model_fields_set:
            raise Invalid("email is for an email user, not a service principal", field="email")
        ids = []
        for name, value in (("tenantId", body.tenantId), ("objectId", body.objectId)):
            if value is None or not GUID.fullmatch(value):
                raise Invalid(f"{name} must be a GUID", field=name)
            ids.append(value.lower())
        return _sp_prefix(account_id) + ":".join(ids)
    raise Invalid(f"type must be one of {', '.join(USER_TYPES)}", field="type")


async def _find(request: Request, caller: Principal, user_id: str) -> User:
    for user in await services_of(request).auth.list_users(caller):
        if _shown_id(user) == user_id:
            return user
    raise NotFound(f"user {user_id!r} not found", field="userId")


def _check_read_only(body: BaseModel, shown: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        if name in body.model_fields_set and getattr(body, name) != shown.get(name):
            raise Invalid(
                f"{name} is read-only (it is {shown.get(name)!r}); it cannot be set to "
                f"{getattr(body, name)!r}",
                field=name,
            )


@router.put("/users/{user_id}", tags=["users"], summary="Add or update a user")
async def put_user(user_id: UserId, body: UserBody, request: Request, caller: Caller) -> Response:
    """Add a user (admin only) or, when the id is taken by the same email user or service
    principal, give it the body's role. 409 naming the email when another user of any
    account signs in with it (user names are global); another identity under a taken id is a
    400 naming the field."""
    auth = services_of(request).auth
    parse_id(user_id, "userId")
    if len(user_id) > MAX_USER_ID_CHARS:
        raise Invalid(f"userId must be 1 to {MAX_USER_ID_CHARS} characters", field="userId")
    if body.id is not None and body.id != user_id:
        raise Invalid(f"id is read-only (it is {user_id!r})", field="id")
    role = parse_role(body.roles[0].role)
    username = _username(caller.account_id, body)
    try:
        current = await _find(request, caller, user_id)
    except NotFound:
        current = None
    if current is not None:
        _check_read_only(body, _user_json(current), ("type", "email", "tenantId", "objectId"))
        changed = await auth.set_user_role(caller, current.id, role.core)
        return OrjsonResponse(_user_json(changed))
    try:
        user = await auth.add_user(
            caller, username, None, role.core, user_id=_stored_id(caller.account_id, user_id)
        )
    except Conflict as exc:
        field = "email" if body.type == "email" else "objectId"
        raise Conflict(f"{field} is already a user's", field=field) from exc
    return OrjsonResponse(_user_json(user))


@router.get("/users", tags=["users"], summary="List users")
async def list_users(
    request: Request,
    caller: Caller,
    maxpagesize: Annotated[
        int | None, Query(alias="$maxpagesize", description="Page size (default page_max)")
    ] = None,
    skiptoken: Annotated[
        str | None, Query(alias="$skiptoken", description="From a nextLink")
    ] = None,
) -> Response:
    """The account's users by id (made here or on /v1; admin only); `nextLink` when the page
    size cut. A viewer has no IoT Central role (`roles: []`)."""
    page_max = settings_of(request).page_max
    if maxpagesize is not None and not 1 <= maxpagesize <= page_max:
        raise Invalid(f"$maxpagesize must be 1 to {page_max}", field="$maxpagesize")
    size = page_max if maxpagesize is None else maxpagesize
    users = sorted(await services_of(request).auth.list_users(caller), key=lambda u: _shown_id(u))
    # The token is the last id shown: stable while users come and go.
    rest = users if skiptoken is None else [u for u in users if _shown_id(u) > skiptoken]
    page = rest[:size]
    out: dict[str, Any] = {"value": [_user_json(u) for u in page]}
    if len(rest) > size:
        out["nextLink"] = page_link(
            settings_of(request), request, **{"$skiptoken": _shown_id(page[-1])}
        )
    return OrjsonResponse(out)


@router.get("/users/{user_id}", tags=["users"], summary="Get a user")
async def get_user(user_id: str, request: Request, caller: Caller) -> Response:
    return OrjsonResponse(_user_json(await _find(request, caller, user_id)))


@router.patch("/users/{user_id}", tags=["users"], summary="Change a user's role")
async def patch_user(user_id: str, body: UserPatch, request: Request, caller: Caller) -> Response:
    """The body's role (admin only); the identity fields may come back unchanged."""
    current = await _find(request, caller, user_id)
    shown = _user_json(current)
    _check_read_only(body, shown, ("id", "type", "email", "tenantId", "objectId"))
    if body.roles is None:
        return OrjsonResponse(shown)
    role = parse_role(body.roles[0].role)
    changed = await services_of(request).auth.set_user_role(caller, current.id, role.core)
    return OrjsonResponse(_user_json(changed))


@router.delete("/users/{user_id}", status_code=204, tags=["users"], summary="Delete a user")
async def delete_user(user_id: str, request: Request, caller: Caller) -> Response:
    """Admin only; not the caller itself."""
    user = await _find(request, caller, user_id)
    await services_of(request).auth.delete_user(caller, user.id)
    return Response(status_code=204)
