"""Ioto device registrations (claims) in memory."""

from __future__ import annotations

from thinghub.domain.claims import Registration
from thinghub.storage.memory._tables import MemoryArea
from thinghub.storage.sql._rows import as_registration, registration_params

__all__ = ["MemoryClaimStore"]


class MemoryClaimStore(MemoryArea):
    async def get(self, claim_id: str) -> Registration | None:
        row = self.tables.registrations.get(claim_id)
        return None if row is None else as_registration(row)

    async def put(self, registration: Registration) -> None:
        self.tables.registrations[registration.id] = registration_params(registration)

    async def find(
        self,
        account_id: str,
        *,
        product_id: str | None = None,
        after: str | None = None,
        before: str | None = None,
        limit: int,
    ) -> list[Registration]:
        rows = sorted(
            (
                r
                for r in self.tables.registrations.values()
                if r[7] == account_id and (product_id is None or r[1] == product_id)
            ),
            key=lambda r: _order(r[0]),
        )
        if before is not None:
            rows = [r for r in rows if _order(r[0]) < _order(before)][-limit:] if limit else []
        else:
            rows = [r for r in rows if after is None or _order(r[0]) > _order(after)][:limit]
        return [as_registration(r) for r in rows]


def _order(key: str) -> bytes:
    """Ids sort as the databases sort them: by their bytes."""
    return key.encode("utf-8", "surrogatepass")
