"""Device groups: named, saved filters over an account's devices.

A group is stored as a per-account document (kind DOCUMENT_KIND). Its `filter` is text in the
filter language of the face that saved it; this service keeps it, and the face evaluates it
against the devices the caller may see (so a group never shows a caller more than its list
of devices would). Groups belong to the whole account: a caller limited to one project may
not see or change them (authz WHOLE_ACCOUNT).
"""

from __future__ import annotations

from dataclasses import dataclass

from thinghub.domain.errors import Invalid, NotFound
from thinghub.domain.etags import check_if_match, document_etag
from thinghub.domain.ids import parse_id
from thinghub.domain.model import Principal
from thinghub.domain.roles import Permission
from thinghub.ports import Clock, Stores
from thinghub.services.authz import WHOLE_ACCOUNT, authorize

__all__ = ["DOCUMENT_KIND", "MAX_FILTER_CHARS", "DeviceGroup", "DeviceGroupService"]

DOCUMENT_KIND = "device_group"
# A group's filter is typed by a person; longer is a mistake.
MAX_FILTER_CHARS = 4096


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    id: str
    display_name: str
    filter: str
    description: str | None
    created_at: float
    updated_at: float

    @property
    def etag(self) -> str:
        return document_etag([self.display_name, self.filter, self.description])


def _text(value: object, field: str, most: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > most:
        raise Invalid(f"{field} must be a string of 1 to {most} characters", field=field)
    return value


class DeviceGroupService:
    def __init__(self, stores: Stores, clock: Clock) -> None:
        self.stores = stores
        self.clock = clock

    async def put(
        self,
        principal: Principal,
        group_id: str,
        *,
        display_name: object,
        filter_text: object,
        description: object = None,
        if_match: str | None = None,
    ) -> DeviceGroup:
        """Create or replace a group (Permission.DEVICES_WRITE); the face has checked that
        `filter_text` parses.

        Raises:
            Invalid: a bad id, name, filter or description.
            PreconditionFailed: `if_match` names another state of the group.
        """
        authorize(principal, Permission.DEVICES_WRITE, WHOLE_ACCOUNT)
        parse_id(group_id, "deviceGroupId")
        name = _text(display_name, "displayName", 200)
        text = _text(filter_text, "filter", MAX_FILTER_CHARS)
        about = None if description is None else _text(description, "description", 2000)
        prior = await self._find(principal.account_id, group_id)
        if if_match is not None:
            check_if_match(if_match, prior.etag if prior else "", f"device group {group_id!r}")
        now = self.clock.now()
        group = DeviceGroup(group_id, name, text, about, prior.created_at if prior else now, now)
        await self.stores.documents.put(
            principal.account_id,
            DOCUMENT_KIND,
            group_id,
            {
                "displayName": name,
                "filter": text,
                "description": about,
                "createdAt": group.created_at,
                "updatedAt": now,
            },
            now,
        )
        return group

    async def get(self, principal: Principal, group_id: str) -> DeviceGroup:
        authorize(principal, Permission.READ, WHOLE_ACCOUNT)
        group = await self._find(principal.account_id, group_id)
        if group is None:
            raise NotFound(f"device group {group_id!r} not found", field="deviceGroupId")
        return group

    async def list(self, principal: Principal) -> list[DeviceGroup]:
        authorize(principal, Permission.READ, WHOLE_ACCOUNT)
        rows = await self.stores.documents.all(principal.account_id, DOCUMENT_KIND)
        return [_load(key, row) for key, row in rows]

    async def delete(
        self, principal: Principal, group_id: str, *, if_match: str | None = None
    ) -> None:
        authorize(principal, Permission.DEVICES_WRITE, WHOLE_ACCOUNT)
        group = await self.get(principal, group_id)
        check_if_match(if_match, group.etag, f"device group {group_id!r}")
        await self.stores.documents.delete(principal.account_id, DOCUMENT_KIND, group_id)

    async def _find(self, account_id: str, group_id: str) -> DeviceGroup | None:
        row = await self.stores.documents.get(account_id, DOCUMENT_KIND, group_id)
        return None if row is None else _load(group_id, row)


def _load(group_id: str, row: dict[str, object]) -> DeviceGroup:
    description = row.get("description")
    return DeviceGroup(
        group_id,
        str(row["displayName"]),
        str(row["filter"]),
        description if isinstance(description, str) else None,
        float(row.get("createdAt", 0.0)),  # type: ignore[arg-type]
        float(row.get("updatedAt", 0.0)),  # type: ignore[arg-type]
    )
