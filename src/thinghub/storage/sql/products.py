"""Ioto products in SQL."""

from __future__ import annotations

from thinghub.domain.products import Product
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import PRODUCT_COLUMNS, as_product, product_params, to_us

__all__ = ["SqlProductStore"]


class SqlProductStore(SqlArea):
    async def insert(self, product: Product) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO ioto_products ({PRODUCT_COLUMNS}) VALUES (?,?,?,?,?,?)",
                product_params(product),
            ),
            conflict=f"product {product.id!r} already exists",
        )

    async def get(self, product_id: str) -> Product | None:
        row = await self.db.fetch_one(
            f"SELECT {PRODUCT_COLUMNS} FROM ioto_products WHERE id = ?", (product_id,)
        )
        return None if row is None else as_product(row)

    async def get_by_token_hash(self, token_hash: str) -> Product | None:
        row = await self.db.fetch_one(
            f"SELECT {PRODUCT_COLUMNS} FROM ioto_products WHERE token_hash = ?", (token_hash,)
        )
        return None if row is None else as_product(row)

    async def in_account(self, account_id: str) -> list[Product]:
        rows = await self.db.fetch_all(
            f"SELECT {PRODUCT_COLUMNS} FROM ioto_products WHERE account_id = ? "
            "ORDER BY created_at, id",
            (account_id,),
        )
        return [as_product(r) for r in rows]

    async def revoke(self, product_id: str, now: float) -> bool:
        (count,) = await self._write(
            Step(
                "exec",
                "UPDATE ioto_products SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (to_us(now), product_id),
            )
        )
        return bool(count)
