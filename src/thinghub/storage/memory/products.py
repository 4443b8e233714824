"""Ioto products in memory."""

from __future__ import annotations

from thinghub.domain.products import Product
from thinghub.storage.memory._tables import MemoryArea, unique
from thinghub.storage.sql._rows import as_product, product_params, to_us

__all__ = ["MemoryProductStore"]


class MemoryProductStore(MemoryArea):
    async def insert(self, product: Product) -> None:
        rows = self.tables.products
        unique(
            product.id in rows or any(r[3] == product.token_hash for r in rows.values()),
            f"product {product.id!r} already exists",
        )
        rows[product.id] = product_params(product)

    async def get(self, product_id: str) -> Product | None:
        row = self.tables.products.get(product_id)
        return None if row is None else as_product(row)

    async def get_by_token_hash(self, token_hash: str) -> Product | None:
        rows = self.tables.products.values()
        return next((as_product(r) for r in rows if r[3] == token_hash), None)

    async def in_account(self, account_id: str) -> list[Product]:
        rows = sorted(
            (r for r in self.tables.products.values() if r[1] == account_id),
            key=lambda r: (r[4], r[0]),
        )
        return [as_product(r) for r in rows]

    async def revoke(self, product_id: str, now: float) -> bool:
        row = self.tables.products.get(product_id)
        if row is None or row[5] is not None:
            return False
        self.tables.products[product_id] = (*row[:5], to_us(now))
        return True
