"""Ioto device registrations (claims) in SQL."""

from __future__ import annotations

from typing import Any

from thinghub.domain.claims import Registration
from thinghub.storage.database import Step
from thinghub.storage.sql._area import SqlArea
from thinghub.storage.sql._rows import REGISTRATION_COLUMNS, as_registration, registration_params

__all__ = ["SqlClaimStore"]

_UPDATE = ", ".join(f"{c} = excluded.{c}" for c in REGISTRATION_COLUMNS.split(", ")[1:])


class SqlClaimStore(SqlArea):
    async def get(self, claim_id: str) -> Registration | None:
        row = await self.db.fetch_one(
            f"SELECT {REGISTRATION_COLUMNS} FROM ioto_registrations WHERE id = ?", (claim_id,)
        )
        return None if row is None else as_registration(row)

    async def put(self, registration: Registration) -> None:
        await self._write(
            Step(
                "exec",
                f"INSERT INTO ioto_registrations ({REGISTRATION_COLUMNS}) VALUES "
                f"({','.join('?' * 14)}) ON CONFLICT (id) DO UPDATE SET {_UPDATE}",
                registration_params(registration),
            )
        )

    async def find(
        self,
        account_id: str,
        *,
        product_id: str | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> list[Registration]:
        sql = f"SELECT {REGISTRATION_COLUMNS} FROM ioto_registrations WHERE account_id = ?"
        params: list[Any] = [account_id]
        if product_id is not None:
            sql += " AND product_id = ?"
            params.append(product_id)
        if before is not None:
            sql += " AND id < ? ORDER BY id DESC LIMIT ?"
            params += [before, limit]
            rows = await self.db.fetch_all(sql, params)
            return [as_registration(r) for r in reversed(rows)]
        if after is not None:
            sql += " AND id > ?"
            params.append(after)
        rows = await self.db.fetch_all(sql + " ORDER BY id LIMIT ?", [*params, limit])
        return [as_registration(r) for r in rows]
