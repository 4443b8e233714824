"""Ioto products: made by an admin of the whole account, tokens stored hashed and shown once,
revoked products register nothing more."""

from __future__ import annotations

import pytest

from thinghub.domain.errors import Forbidden, Invalid, NotFound, Unauthorized
from thinghub.domain.model import Principal, Role
from thinghub.ports import Stores
from thinghub.services.core import Services

ACCOUNT = "acc-products"
ADMIN = Principal(ACCOUNT, Role.ADMIN, "admin")


async def test_a_product_token_authenticates_until_the_product_is_revoked(
    services: Services, stores: Stores
) -> None:
    product, token = await services.products.create(ADMIN, "line")
    assert token.startswith("thpt_")
    stored = await stores.products.get(product.id)
    assert stored is not None and token not in repr(stored)  # only its hash is kept
    assert (await services.products.authenticate(token)).id == product.id
    assert [p.id for p in await services.products.list_products(ADMIN)] == [product.id]
    revoked = await services.products.revoke(ADMIN, product.id)
    assert revoked.revoked_at is not None
    with pytest.raises(Unauthorized):
        await services.products.authenticate(token)


@pytest.mark.parametrize("token", [None, "", "thpt_unknown", "x" * 300])
async def test_unknown_tokens_are_unauthorized(services: Services, token: str | None) -> None:
    with pytest.raises(Unauthorized):
        await services.products.authenticate(token)


async def test_only_an_admin_of_the_whole_account_manages_products(services: Services) -> None:
    for principal in (
        Principal(ACCOUNT, Role.OPERATOR, "operator"),
        Principal(ACCOUNT, Role.ADMIN, "limited", project="p1"),
    ):
        with pytest.raises(Forbidden):
            await services.products.create(principal, "line")
        with pytest.raises(Forbidden):
            await services.products.list_products(principal)
    product, _ = await services.products.create(ADMIN, "line")
    with pytest.raises(NotFound):  # another account's product does not exist for it
        await services.products.revoke(Principal("acc-other", Role.ADMIN, "b"), product.id)
    with pytest.raises(Invalid):
        await services.products.create(ADMIN, "")
