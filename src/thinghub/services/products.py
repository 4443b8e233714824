"""Ioto products: create, list and revoke them (account admins), and find one by its token.

The product token is the register bearer of the Ioto agent (``device.json5`` ``product``). It
is shown once, at creation; only its SHA-256 is stored (security.secrets.hash_secret: the
token is 256 random bits, so a fast hash is right).
"""

from __future__ import annotations

import hmac
import logging

from thinghub.domain.errors import NotFound, Unauthorized
from thinghub.domain.ids import new_uuid
from thinghub.domain.model import Principal
from thinghub.domain.products import Product, new_product_token, parse_product_name
from thinghub.domain.roles import Permission
from thinghub.ports import Clock, Stores
from thinghub.security.secrets import hash_secret
from thinghub.services.authz import authorize

__all__ = ["MAX_PRODUCT_TOKEN_CHARS", "ProductService"]

logger = logging.getLogger(__name__)

# Longer bearer values are not product tokens (ours are 48 characters): refused unhashed.
MAX_PRODUCT_TOKEN_CHARS = 256


class ProductService:
    def __init__(self, stores: Stores, clock: Clock) -> None:
        self.stores = stores
        self.clock = clock

    async def create(self, principal: Principal, name: str) -> tuple[Product, str]:
        """A new product in the caller's account (admin of the whole account); returns it and
        its token, shown this once."""
        _require_account_admin(principal)
        return await self.create_in(principal.account_id, name)

    async def create_in(self, account_id: str, name: str) -> tuple[Product, str]:
        """As `create`, with no principal (the command line)."""
        name = parse_product_name(name)
        token = new_product_token()
        product = Product(new_uuid(), account_id, name, hash_secret(token), self.clock.now())
        await self.stores.products.insert(product)
        logger.info("ioto product %s (%s) created in account %s", product.id, name, account_id)
        return product, token

    async def list_products(self, principal: Principal) -> list[Product]:
        _require_account_admin(principal)
        return await self.stores.products.in_account(principal.account_id)

    async def list_in(self, account_id: str) -> list[Product]:
        return await self.stores.products.in_account(account_id)

    async def revoke(self, principal: Principal, product_id: str) -> Product:
        """Revoke a product: its token registers no more devices (claimed ones keep working).

        Raises:
            NotFound: no such product in the caller's account.
        """
        _require_account_admin(principal)
        return await self.revoke_in(principal.account_id, product_id)

    async def revoke_in(self, account_id: str, product_id: str) -> Product:
        product = await self.stores.products.get(product_id)
        if product is None or product.account_id != account_id:
            raise NotFound(f"product {product_id!r} not found", field="productId")
        now = self.clock.now()
        if await self.stores.products.revoke(product.id, now):
            logger.info("ioto product %s revoked", product.id)
            return Product(
                product.id, product.account_id, product.name, product.token_hash,
                product.created_at, now,
            )  # fmt: skip
        return await self.get(product.id) or product

    async def get(self, product_id: str) -> Product | None:
        return await self.stores.products.get(product_id)

    async def authenticate(self, token: str | None) -> Product:
        """The product a register call's bearer token names.

        Raises:
            Unauthorized: no token, an unknown one, or a revoked product's.
        """
        if not token or len(token) > MAX_PRODUCT_TOKEN_CHARS:
            raise Unauthorized("a product token is required", field="Authorization")
        digest = hash_secret(token)
        product = await self.stores.products.get_by_token_hash(digest)
        if product is None or not hmac.compare_digest(product.token_hash, digest):
            raise Unauthorized("unknown product token", field="Authorization")
        if product.is_revoked:
            raise Unauthorized("the product was revoked", field="Authorization")
        return product


def _require_account_admin(principal: Principal) -> None:
    """Products belong to the whole account: an admin's, never a project-limited token's
    (Forbidden naming the role or the project)."""
    authorize(principal, Permission.ACCOUNT_ADMIN)
