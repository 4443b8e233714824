"""AuthService on the memory stores: API tokens are stored hashed, authenticate until they
expire or are revoked, and a JWT issued for a token dies with it."""

from __future__ import annotations

import pytest

from tests.unit.services.conftest import TestClock
from thinghub.domain.errors import Conflict, Forbidden, NotFound, Unauthorized
from thinghub.domain.model import Principal, Role
from thinghub.domain.roles import Permission
from thinghub.ports import Stores
from thinghub.services.auth import TOKEN_CACHE_S
from thinghub.services.authz import authorize, may
from thinghub.services.core import Services


async def test_a_token_authenticates_until_revoked(services: Services, stores: Stores) -> None:
    issued = await services.auth.create_token("acc-1", Role.OPERATOR, project="p1", token_id="t1")
    stored = await stores.credentials.get_token("acc-1", "t1")
    assert stored is not None
    assert issued.secret not in stored.secret_hash  # only the hash is kept
    principal = await services.auth.authenticate_bearer(issued.secret)
    assert principal == Principal("acc-1", Role.OPERATOR, "t1", "token", None, "p1")
    with pytest.raises(Conflict):
        await services.auth.create_token("acc-1", Role.VIEWER, token_id="t1")

    await services.auth.revoke_token("acc-1", "t1")
    with pytest.raises(Unauthorized):
        await services.auth.authenticate_bearer(issued.secret)
    with pytest.raises(NotFound):
        await services.auth.revoke_token("acc-1", "t1")


async def test_an_expired_token_is_refused(services: Services, clock: TestClock) -> None:
    issued = await services.auth.create_token("acc-1", Role.VIEWER, expires_at=clock.t + 60)
    assert (await services.auth.authenticate_bearer(issued.secret)).role is Role.VIEWER
    clock.t += 60
    with pytest.raises(Unauthorized, match="expired"):
        await services.auth.authenticate_bearer(issued.secret)


async def test_a_jwt_for_a_token_dies_with_the_token(services: Services, clock: TestClock) -> None:
    issued = await services.auth.create_token("acc-1", Role.ADMIN, token_id="ci")
    jwt, _ = await services.auth.client_credentials_grant("ci", issued.secret)
    assert (await services.auth.authenticate_bearer(jwt)).subject == "ci"
    await services.auth.revoke_token("acc-1", "ci")
    clock.t += TOKEN_CACHE_S  # past any cache of the token's liveness, within the JWT's life
    with pytest.raises(Unauthorized, match="revoked"):
        await services.auth.authenticate_bearer(jwt)


async def test_accounts_are_made_once_by_name(services: Services, stores: Stores) -> None:
    first = await services.auth.ensure_account("contoso")
    assert await services.auth.ensure_account("contoso") == first
    assert await stores.accounts.get_by_scope(first.id_scope) == first
    with pytest.raises(Conflict):
        await services.auth.create_account("contoso")


async def test_a_scoped_access_token_writes_only_with_a_write_scope(services: Services) -> None:
    issued = await services.auth.create_token("acc-1", Role.ADMIN, token_id="sde", project="p1")
    reader, _ = await services.auth.client_credentials_grant(
        "sde", issued.secret, scopes=frozenset({"sensor-data:read", "itwins:read"})
    )
    principal = await services.auth.authenticate_bearer(reader)
    assert principal.scopes == {"sensor-data:read", "itwins:read"}
    assert principal.project == "p1" and principal.role is Role.ADMIN
    authorize(principal, Permission.READ)
    with pytest.raises(Forbidden, match="read-only") as refused:
        authorize(principal, Permission.DEVICES_WRITE)
    assert refused.value.details["reason"] == "scope"
    assert may(principal, Permission.READ) and not may(principal, Permission.DEVICES_WRITE)
    with pytest.raises(Forbidden, match="read-only"):  # every write goes through authorize
        await services.registry.create_device(principal, name="d", project="p1")

    writer, _ = await services.auth.client_credentials_grant(
        "sde", issued.secret, scopes=frozenset({"sensor-data:modify"})
    )
    principal = await services.auth.authenticate_bearer(writer)
    authorize(principal, Permission.DEVICES_WRITE)
    assert (await services.registry.create_device(principal, name="d", project="p1")).name == "d"
    # Without scopes the token's role alone decides, as before.
    plain, _ = await services.auth.client_credentials_grant("sde", issued.secret)
    assert (await services.auth.authenticate_bearer(plain)).scopes is None


# -- faces' shared access keys ------------------------------------------------------------------

ACC1_ADMIN = Principal("acc-1", Role.ADMIN, "admin")


async def test_a_face_key_is_stored_hashed_and_only_that_face_takes_it(
    services: Services, stores: Stores
) -> None:
    issued = await services.auth.create_face_key(ACC1_ADMIN, "ux4iot", label="dash")
    assert issued.secret.startswith("ux4iot_")
    stored = await stores.credentials.get_token("acc-1", issued.token.id)
    assert stored is not None and issued.secret not in stored.secret_hash
    who = await services.auth.authenticate_face_key("ux4iot", issued.secret, "Shared-Access-Key")
    assert (who.account_id, who.kind, who.subject) == ("acc-1", "key", issued.token.id)
    with pytest.raises(Unauthorized):  # not a bearer token, nor OAuth2 client credentials
        await services.auth.authenticate_bearer(issued.secret)
    with pytest.raises(Unauthorized):
        await services.auth.client_credentials_grant(issued.token.id, issued.secret)
    with pytest.raises(Unauthorized):  # another face's key
        await services.auth.authenticate_face_key("other", issued.secret, "Key")
    api = await services.auth.create_token("acc-1", Role.ADMIN)
    with pytest.raises(Unauthorized):  # and an API token is no key
        await services.auth.authenticate_face_key("ux4iot", api.secret, "Shared-Access-Key")
    with pytest.raises(Unauthorized, match="missing"):
        await services.auth.authenticate_face_key("ux4iot", " ", "Shared-Access-Key")
    # listed with the face's keys, not with the API tokens
    assert [k.id for k in await services.auth.list_face_keys(ACC1_ADMIN, "ux4iot")] == [
        issued.token.id
    ]
    assert issued.token.id not in {t.id for t in await services.auth.list_tokens(ACC1_ADMIN)}


async def test_rotating_a_face_key_ends_the_old_secret_at_once(services: Services) -> None:
    issued = await services.auth.create_face_key(ACC1_ADMIN, "ux4iot")
    await services.auth.authenticate_face_key("ux4iot", issued.secret, "K")  # now cached
    rotated = await services.auth.rotate_face_key(ACC1_ADMIN, "ux4iot", issued.token.id)
    assert rotated.token.id == issued.token.id and rotated.secret != issued.secret
    assert rotated.token.created_at == issued.token.created_at
    with pytest.raises(Unauthorized):
        await services.auth.authenticate_face_key("ux4iot", issued.secret, "K")
    await services.auth.authenticate_face_key("ux4iot", rotated.secret, "K")
    await services.auth.revoke_face_key(ACC1_ADMIN, "ux4iot", issued.token.id)
    with pytest.raises(Unauthorized):
        await services.auth.authenticate_face_key("ux4iot", rotated.secret, "K")


async def test_face_keys_are_managed_by_account_wide_admins_of_their_account(
    services: Services,
) -> None:
    issued = await services.auth.create_face_key(ACC1_ADMIN, "ux4iot")
    other = Principal("acc-2", Role.ADMIN, "admin2")
    for call in (
        services.auth.rotate_face_key(other, "ux4iot", issued.token.id),
        services.auth.revoke_face_key(other, "ux4iot", issued.token.id),
        services.auth.rotate_face_key(ACC1_ADMIN, "another-face", issued.token.id),
    ):
        with pytest.raises(NotFound):
            await call
    assert await services.auth.list_face_keys(other, "ux4iot") == []
    api = await services.auth.create_token("acc-1", Role.ADMIN, token_id="api")
    with pytest.raises(NotFound):  # an API token is not a key to rotate
        await services.auth.rotate_face_key(ACC1_ADMIN, "ux4iot", api.token.id)
    for principal in (
        Principal("acc-1", Role.OPERATOR, "op"),
        Principal("acc-1", Role.ADMIN, "limited", project="p1"),
    ):
        with pytest.raises(Forbidden):
            await services.auth.create_face_key(principal, "ux4iot")


async def test_current_is_the_principal_as_it_stands_now(
    services: Services, clock: TestClock
) -> None:
    """What later work in a principal's name (a scheduled job) runs as."""
    admin = Principal("acc-1", Role.ADMIN, "root")
    issued = await services.auth.create_token(
        "acc-1", Role.OPERATOR, token_id="t", expires_at=clock.t + 60
    )
    by_token = await services.auth.authenticate_bearer(issued.secret)
    assert await services.auth.current(by_token) == by_token
    clock.t += 60
    assert await services.auth.current(by_token) is None  # expired
    user = await services.auth.add_user(admin, "u", None, Role.BUILDER, user_id="acc-1/u")
    as_user = Principal("acc-1", Role.BUILDER, user.id, "user")
    await services.auth.set_user_role(admin, user.id, Role.OPERATOR)
    now = await services.auth.current(as_user)
    assert now is not None and now.role is Role.OPERATOR  # its current role
    await services.auth.delete_user(admin, user.id)
    assert await services.auth.current(as_user) is None
    # A user without a password cannot sign in.
    await services.auth.add_user(admin, "nopass", None, Role.ADMIN)
    with pytest.raises(Unauthorized):
        await services.auth.password_grant("nopass", "")
