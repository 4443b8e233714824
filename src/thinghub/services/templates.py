"""Device templates: the TemplateService (stored per account, looked up, checked at ingest).

A template is stored whole as a per-account document (kind DOCUMENT_KIND); what it is and how
it is parsed is the domain's (domain/dtdl: the DTDL parser, model and schema checks; JSON
merge patch in domain/merge_patch.py). This service keeps them in the store, caches parsed
templates for the telemetry hot path, and refuses to delete a template a device uses.

TemplatePolicy plugs the telemetry check into ingest, so telemetry of a templated device that
does not match is recorded as rejected whichever adapter it came through.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from thinghub.domain.dtdl import TEMPLATE_ID, DeviceTemplate, Interface, parse_template
from thinghub.domain.dtdl.well_known import well_known_model
from thinghub.domain.errors import Conflict, Invalid, NotFound
from thinghub.domain.etags import check_if_match, document_etag
from thinghub.domain.merge_patch import merge_patch
from thinghub.domain.model import Device, Principal
from thinghub.domain.roles import Permission
from thinghub.domain.telemetry import TelemetryMessage
from thinghub.ports import Clock, Stores
from thinghub.services.authz import authorize
from thinghub.services.registry import Registry
from thinghub.services.ttl_cache import TtlCache

__all__ = [
    "DOCUMENT_KIND",
    "TEMPLATE_CACHE_MAX",
    "TEMPLATE_CACHE_S",
    "TemplatePolicy",
    "TemplateService",
]

logger = logging.getLogger(__name__)

DOCUMENT_KIND = "device_template"
# Parsed templates are cached per process for the telemetry hot path; writes here invalidate
# at once, writes on another node are seen within this many seconds.
TEMPLATE_CACHE_S = 5.0
# Templates cached at most (a full cache drops its oldest entries first).
TEMPLATE_CACHE_MAX = 10_000


class TemplatePolicy:
    """The ingest TelemetryPolicy: telemetry of a templated device must match the template."""

    def __init__(self, templates: TemplateService) -> None:
        self.templates = templates

    async def check(self, device: Device, message: TelemetryMessage) -> str | None:
        template = await self.templates.for_device(device)
        return None if template is None else _check(template, message)

    async def may_refuse(self, device: Device) -> bool:
        """Only a templated device's messages are checked."""
        return await self.templates.for_device(device) is not None

    async def check_many(
        self, device: Device, messages: Sequence[TelemetryMessage]
    ) -> list[str | None]:
        """check() of each message; the device's template looked up once."""
        template = await self.templates.for_device(device)
        if template is None:
            return [None] * len(messages)
        return [_check(template, message) for message in messages]


def _check(template: DeviceTemplate, message: TelemetryMessage) -> str | None:
    if message.depth_limit is not None:  # kept as text, unparsed: it cannot match
        return (
            f"telemetry nests deeper than {message.depth_limit} levels of arrays and "
            "objects (max_json_depth)"
        )
    try:
        template.check_telemetry(message.body, message.component)
    except Invalid as exc:
        return exc.message
    return None


class TemplateService:
    def __init__(self, stores: Stores, clock: Clock, registry: Registry) -> None:
        self.stores = stores
        self.clock = clock
        self.registry = registry
        self.policy = TemplatePolicy(self)
        # (account, template id) -> the parsed template, or None: "no such template" is
        # cached too, since telemetry of a device naming a deleted template asks each time.
        self._cache: TtlCache[tuple[str, str], DeviceTemplate | None] = TtlCache(
            clock, ttl_s=TEMPLATE_CACHE_S, max_entries=TEMPLATE_CACHE_MAX
        )

    async def put(
        self, principal: Principal, template_id: str, body: Any, *, if_match: str | None = None
    ) -> DeviceTemplate:
        """Create the template, or replace it (devices that use it keep using it).
        Permission.TEMPLATES_WRITE: templates belong to the whole account. `if_match` (an
        If-Match header) must name the stored template's etag (PreconditionFailed)."""
        authorize(principal, Permission.TEMPLATES_WRITE)
        document, model = parse_template(template_id, body)
        now = self.clock.now()
        prior = await self.stores.documents.get(principal.account_id, DOCUMENT_KIND, template_id)
        if if_match is not None:
            current = document_etag(prior["document"]) if isinstance(prior, dict) else ""
            check_if_match(if_match, current, f"device template {template_id!r}")
        created = prior["createdAt"] if isinstance(prior, dict) else now
        await self.stores.documents.put(
            principal.account_id,
            DOCUMENT_KIND,
            template_id,
            {"document": document, "createdAt": created, "updatedAt": now},
            now,
        )
        self._cache.invalidate((principal.account_id, template_id))
        logger.info("device template %s saved (account %s)", template_id, principal.account_id)
        return DeviceTemplate(template_id, document["displayName"], document, model, created, now)

    async def patch(
        self, principal: Principal, template_id: str, patch: Any, *, if_match: str | None = None
    ) -> DeviceTemplate:
        """Apply a JSON merge patch (RFC 7386) to the stored document, then re-check it."""
        authorize(principal, Permission.TEMPLATES_WRITE)
        if not isinstance(patch, dict):
            raise Invalid("the body must be a JSON object (a merge patch)", field="body")
        current = await self.get(principal, template_id)
        check_if_match(if_match, current.etag, f"device template {template_id!r}")
        return await self.put(principal, template_id, merge_patch(current.document, patch))

    async def get(self, principal: Principal, template_id: str) -> DeviceTemplate:
        authorize(principal, Permission.READ)
        template = await self.find(principal.account_id, template_id)
        if template is None:
            raise NotFound(f"device template {template_id!r} not found", field="deviceTemplateId")
        return template

    async def list(self, principal: Principal) -> list[DeviceTemplate]:
        authorize(principal, Permission.READ)
        rows = await self.stores.documents.all(principal.account_id, DOCUMENT_KIND)
        return [self._load(key, row) for key, row in rows]

    async def delete(
        self, principal: Principal, template_id: str, *, if_match: str | None = None
    ) -> None:
        """Delete a template no device uses (409 Conflict while one does)."""
        authorize(principal, Permission.TEMPLATES_WRITE)
        current = await self.get(principal, template_id)
        check_if_match(if_match, current.etag, f"device template {template_id!r}")
        users = [
            d.id for d in await self.registry.list_devices(principal) if d.template == template_id
        ]
        if users:
            raise Conflict(
                f"device template {template_id!r} is used by {len(users)} "
                f"device(s), e.g. {users[0]!r}",
                field="deviceTemplateId",
            )
        await self.stores.documents.delete(principal.account_id, DOCUMENT_KIND, template_id)
        self._cache.invalidate((principal.account_id, template_id))

    async def find(self, account_id: str, template_id: str) -> DeviceTemplate | None:
        """A template of an account, or None (cached for TEMPLATE_CACHE_S)."""
        key = (account_id, template_id)
        hit = self._cache.lookup(key)
        if hit is not None:
            return hit.value
        row = await self.stores.documents.get(account_id, DOCUMENT_KIND, template_id)
        template = None if row is None else self._load(template_id, row)
        self._cache.put(key, template)
        return template

    async def for_device(self, device: Device) -> DeviceTemplate | None:
        if device.template is None:
            return None
        return await self.find(device.account_id, device.template)

    async def announced(self, device: Device, model_id: str) -> dict[str, Any]:
        """What to save of a device that announced `model_id` (connecting or registering):
        the model id when new, and, for a device without a template, the account's template of
        that id when there is one (IoT Central's automatic association: a template's id is
        the model id its devices announce). {} when nothing changes."""
        changes: dict[str, Any] = {}
        if model_id != device.model_id:
            changes["model_id"] = model_id
        if (
            device.template is None
            and TEMPLATE_ID.fullmatch(model_id)
            and await self.find(device.account_id, model_id) is not None
        ):
            changes["template"] = model_id
        return changes

    async def model_for(self, device: Device) -> Interface | None:
        """The capability model a device's data follows: its device template's; else that of
        a template of its account named by the model id it announced; else the well-known
        public model of that id (services/models.py); else None."""
        template = await self.for_device(device)
        if template is not None:
            return template.model
        if not device.model_id:
            return None
        if TEMPLATE_ID.fullmatch(device.model_id):
            named = await self.find(device.account_id, device.model_id)
            if named is not None:
                return named.model
        return well_known_model(device.model_id)

    @staticmethod
    def _load(template_id: str, row: Any) -> DeviceTemplate:
        document = row["document"]
        _, model = parse_template(template_id, document)
        return DeviceTemplate(
            template_id,
            document["displayName"],
            document,
            model,
            row.get("createdAt", 0.0),
            row.get("updatedAt", 0.0),
        )
