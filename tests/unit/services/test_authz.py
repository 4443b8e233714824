"""The one authorization check: every role against every permission, with and without a
project limit, and against every kind of resource.

The expectations are written out here, not read from domain/roles.py, so a change to the role
table shows up as a failing row.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from thinghub.domain.errors import Forbidden, NotFound
from thinghub.domain.model import ApiToken, Principal, Role
from thinghub.domain.roles import ACCOUNT_WIDE, ROLE_PERMISSIONS, Permission, stored_role
from thinghub.services.authz import WHOLE_ACCOUNT, Located, NewIn, authorize, may, visible

P = Permission
# What each role may do: the documented table (docs/concepts/accounts-and-security.md).
ALLOWED: dict[Role, set[Permission]] = {
    Role.ADMIN: set(Permission),
    Role.BUILDER: {P.READ, P.DEVICES_WRITE, P.TEMPLATES_WRITE},
    Role.OPERATOR: {P.READ, P.DEVICES_WRITE},
    Role.VIEWER: {P.READ},
}
# What a principal limited to a project is refused whatever its role.
WHOLE = {P.TEMPLATES_WRITE, P.USERS_ADMIN, P.ACCOUNT_ADMIN}


def principal(role: Role, project: str | None = None) -> Principal:
    return Principal("acc-1", role, "caller", project=project)


CASES = [
    (role, permission, project)
    for role in Role
    for permission in Permission
    for project in (None, "p1")
]


@pytest.mark.parametrize(
    ("role", "permission", "project"),
    CASES,
    ids=[f"{r.value}-{p.value}-{'p1' if x else 'account'}" for r, p, x in CASES],
)
def test_the_role_table(role: Role, permission: Permission, project: str | None) -> None:
    caller = principal(role, project)
    allowed = permission in ALLOWED[role] and (project is None or permission not in WHOLE)
    assert may(caller, permission) is allowed
    if allowed:
        authorize(caller, permission)
        return
    with pytest.raises(Forbidden) as refused:
        authorize(caller, permission)
    error = refused.value
    assert error.details["permission"] is permission
    assert error.details["role"] is role
    if permission not in ALLOWED[role]:
        # The role is checked first, and names the role.
        assert (error.field, error.details["reason"]) == ("role", "role")
        assert error.message.startswith(f"role {role.value!r} may not ")
    else:
        assert (error.field, error.details["reason"]) == ("project", "account_wide")
        assert error.message.startswith("this token is limited to project 'p1'; ")


def test_the_table_in_the_domain_is_the_documented_one() -> None:
    assert {role: set(perms) for role, perms in ROLE_PERMISSIONS.items()} == ALLOWED
    assert set(ACCOUNT_WIDE) == WHOLE


@dataclass(frozen=True)
class Thing:
    account_id: str
    project: str | None


@pytest.mark.parametrize(
    ("limited", "thing", "seen"),
    [
        (None, Thing("acc-1", None), True),
        (None, Thing("acc-1", "p2"), True),
        (None, Thing("acc-2", None), False),  # another account's: absent
        ("p1", Thing("acc-1", "p1"), True),
        ("p1", Thing("acc-1", "p2"), False),  # another project's: absent
        ("p1", Thing("acc-1", None), False),  # of no project: beyond a project's reach
        ("p1", Thing("acc-2", "p1"), False),  # the same project name in another account
    ],
)
def test_an_existing_thing_out_of_reach_is_absent(
    limited: str | None, thing: Thing, seen: bool
) -> None:
    caller = principal(Role.ADMIN, limited)
    assert visible(caller, thing) is seen
    missing = NotFound("device 'x' not found", field="deviceId")
    if seen:
        authorize(caller, P.READ, thing, absent=missing)
        return
    with pytest.raises(NotFound) as absent:
        authorize(caller, P.READ, thing, absent=missing)
    assert absent.value is missing  # the caller's own words, never a Forbidden
    with pytest.raises(NotFound, match="not found"):
        authorize(caller, P.READ, Located(thing.account_id, thing.project))


def test_the_role_is_checked_before_the_resource() -> None:
    """A viewer learns nothing about a thing of another account: the role refuses first."""
    with pytest.raises(Forbidden):
        authorize(principal(Role.VIEWER), P.DEVICES_WRITE, Thing("acc-2", None))


@pytest.mark.parametrize(
    ("limited", "project", "allowed"),
    [
        (None, None, True),
        (None, "p2", True),
        ("p1", "p1", True),
        ("p1", "p2", False),
        ("p1", None, False),  # a thing of no project would be beyond the caller's reach
    ],
)
def test_things_are_made_in_the_callers_project_only(
    limited: str | None, project: str | None, allowed: bool
) -> None:
    caller = principal(Role.OPERATOR, limited)
    if allowed:
        authorize(caller, P.DEVICES_WRITE, NewIn(project))
        return
    with pytest.raises(Forbidden) as refused:
        authorize(caller, P.DEVICES_WRITE, NewIn(project))
    assert (refused.value.field, refused.value.details["reason"]) == ("project", "project")
    assert refused.value.message == "this token is limited to project 'p1'"


def test_the_whole_account_is_for_unlimited_principals() -> None:
    authorize(principal(Role.ADMIN), P.TOKENS_ADMIN, WHOLE_ACCOUNT)
    with pytest.raises(Forbidden) as refused:
        authorize(principal(Role.ADMIN, "p1"), P.TOKENS_ADMIN, WHOLE_ACCOUNT)
    assert refused.value.details["reason"] == "account_wide"
    # A project-limited admin still manages its own project's tokens.
    authorize(principal(Role.ADMIN, "p1"), P.TOKENS_ADMIN)
    authorize(principal(Role.ADMIN, "p1"), P.TOKENS_ADMIN, NewIn("p1"))


@pytest.mark.parametrize(
    ("row", "role"),
    [
        (("operator", "central", "344138e9-8de4-4497-8c54-5237e96d6aaf"), Role.BUILDER),
        (("operator", "central", "ae2c9854-393b-4f97-8c42-479d70ce626e"), Role.OPERATOR),
        (("operator", "st", "344138e9-8de4-4497-8c54-5237e96d6aaf"), Role.OPERATOR),
        (("builder", "st", None), Role.BUILDER),
        (("admin", "central", "ca310b8d-2f4a-44e0-a36e-957c202cd8d4"), Role.ADMIN),
    ],
)
def test_stored_roles_read_old_central_builders_as_builders(
    row: tuple[str, str, str | None], role: Role
) -> None:
    assert stored_role(*row) is role


def test_a_token_is_an_owned_thing() -> None:
    token = ApiToken("t", "acc-1", "hash", Role.VIEWER, 0.0, project="p1")
    assert visible(principal(Role.ADMIN, "p1"), token)
    assert not visible(principal(Role.ADMIN, "p2"), token)
