"""Provisioning (DPS): individual enrollments and enrollment groups, authentication, assignment.

An individual enrollment is a device registered through an API: its registration id is the
device id, in its account's id scope, signed with the device key. An enrollment group holds a
group key; a device's key is HMAC-SHA256(group key, registration id) and the device is created
in the group's project and deployment on its first registration.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from thinghub.domain.clock import format_ts
from thinghub.domain.errors import Conflict, Invalid, NotFound, Unauthorized
from thinghub.domain.ids import ID_PATTERN, parse_id
from thinghub.domain.model import Account, Device, DeviceKind, Principal
from thinghub.domain.roles import Permission
from thinghub.ports import Clock, Stores
from thinghub.security import sas
from thinghub.services.authz import Located, NewIn, authorize, visible
from thinghub.services.device_auth import DUMMY_KEYS
from thinghub.services.registry import Registry
from thinghub.services.templates import TemplateService

__all__ = ["Enrollment", "ProvisioningService", "dps_resource"]

GROUPS = "enrollmentGroup"

logger = logging.getLogger(__name__)


def dps_resource(id_scope: str, registration_id: str) -> str:
    """The SAS resource URI of a registration: `{idScope}/registrations/{registrationId}`
    (docs/faces/device-mqtt.md, "Wire details")."""
    return f"{id_scope}/registrations/{registration_id}"


@dataclass(frozen=True, slots=True)
class Enrollment:
    """Who is registering: an account plus the device (individual) or the group."""

    account: Account
    registration_id: str
    device: Device | None = None
    group: dict[str, Any] | None = None
    derived_keys: tuple[str, str] | None = None


class ProvisioningService:
    def __init__(
        self, stores: Stores, clock: Clock, registry: Registry, templates: TemplateService
    ) -> None:
        self.stores = stores
        self.clock = clock
        self.registry = registry
        self.templates = templates

    # -- enrollment groups ---------------------------------------------------------------

    async def create_group(
        self,
        principal: Principal,
        group_id: str,
        *,
        project: str,
        deployment: str,
        is_edge: bool = False,
    ) -> dict[str, Any]:
        """Create an enrollment group (Permission.PROVISIONING_ADMIN) in `project`, which a
        project-limited caller must name as its own."""
        authorize(principal, Permission.PROVISIONING_ADMIN, NewIn(project))
        parse_id(group_id, "enrollmentGroupId")
        parse_id(project, "project")
        parse_id(deployment, "deployment")
        if await self.stores.documents.get(principal.account_id, GROUPS, group_id) is not None:
            raise Conflict(
                f"enrollment group {group_id!r} already exists", field="enrollmentGroupId"
            )
        group = {
            "enrollmentGroupId": group_id,
            "project": project,
            "deployment": deployment,
            "isIoTEdgeCapable": is_edge,
            "attestation": {
                "type": "symmetricKey",
                "symmetricKey": {
                    "primaryKey": sas.generate_key(),
                    "secondaryKey": sas.generate_key(),
                },
            },
            "provisioningStatus": "enabled",
            "createdDateTimeUtc": format_ts(self.clock.now()),
        }
        await self.stores.documents.put(
            principal.account_id, GROUPS, group_id, group, self.clock.now()
        )
        return group

    async def list_groups(self, principal: Principal) -> list[dict[str, Any]]:
        """The account's enrollment groups (Permission.PROVISIONING_ADMIN: they hold group
        keys); a project-limited caller sees its project's."""
        authorize(principal, Permission.PROVISIONING_ADMIN)
        groups = await self.stores.documents.all(principal.account_id, GROUPS)
        return [g for _, g in groups if visible(principal, _located(principal, g))]

    async def get_group(self, principal: Principal, group_id: str) -> dict[str, Any]:
        """An enrollment group within the caller's reach (Permission.PROVISIONING_ADMIN)."""
        authorize(principal, Permission.PROVISIONING_ADMIN)
        missing = NotFound(f"enrollment group {group_id!r} not found", field="enrollmentGroupId")
        group = await self.stores.documents.get(principal.account_id, GROUPS, group_id)
        if group is None:
            raise missing
        authorize(
            principal, Permission.PROVISIONING_ADMIN, _located(principal, group), absent=missing
        )
        return dict(group)

    async def delete_group(self, principal: Principal, group_id: str) -> None:
        """Delete an enrollment group (Permission.PROVISIONING_ADMIN); the devices it made
        stay."""
        await self.get_group(principal, group_id)
        await self.stores.documents.delete(principal.account_id, GROUPS, group_id)

    # -- registration --------------------------------------------------------------------

    async def authenticate(
        self,
        id_scope: str,
        registration_id: str,
        token: str | None,
        certificate_cn: str | None = None,
        certificate_ou: str | None = None,
    ) -> Enrollment:
        """Check a DPS SAS token (signed with the device or derived group key), or a client
        certificate: CN the registration id, OU the account (CertificateService.issue).

        A group assigns only a registration id that names no device yet, or the device that
        group created itself: never an individual device, another group's, or another
        account's (issue 12). An id that names no usable device of this account is refused
        after the same key checks as a wrong token for one that does (issue 11).
        """
        account = await self.stores.accounts.get_by_scope(id_scope)
        if account is None or not ID_PATTERN.fullmatch(registration_id):
            raise Unauthorized("unknown id scope or registration id", field="username")
        device = await self.stores.devices.get(registration_id)
        own = device if device is not None and device.account_id == account.id else None
        if token is None:
            if (
                certificate_cn == registration_id
                and certificate_ou == account.id
                and own is not None
                and own.enabled
            ):
                return Enrollment(account, registration_id, device=own)
            raise Unauthorized("a SAS token or a client certificate is required", field="password")
        try:
            parsed = sas.parse(token)
        except sas.SasError as exc:
            raise Unauthorized(f"bad SAS token: {exc.reason}", field="password") from exc
        resource = dps_resource(id_scope, registration_id)
        now = self.clock.now()
        usable = own is not None and own.enabled
        keys = (own.primary_key, own.secondary_key) if own is not None else DUMMY_KEYS
        if _verifies(parsed, keys, resource, now) and usable:
            return Enrollment(account, registration_id, device=own)
        for _, group in await self.stores.documents.all(account.id, GROUPS):
            if group.get("provisioningStatus") != "enabled":
                continue
            group_keys = group["attestation"]["symmetricKey"]
            derived = (
                sas.derive_group_key(group_keys["primaryKey"], registration_id),
                sas.derive_group_key(group_keys["secondaryKey"], registration_id),
            )
            if not _verifies(parsed, derived, resource, now):
                continue
            made_here = own is not None and own.created_by == _made_by(group)
            if device is None or (usable and made_here):
                return Enrollment(
                    account, registration_id, device=own, group=group, derived_keys=derived
                )
            logger.info(
                "dps %s: enrollment group %s may not assign an existing device it did not create",
                registration_id,
                group.get("enrollmentGroupId"),
            )
            break
        if own is not None and not own.enabled:
            raise Unauthorized(f"device {own.id!r} is disabled", field="username")
        raise Unauthorized("SAS token rejected", field="password")

    async def register(self, enrollment: Enrollment, payload: Any) -> Device:
        """Assign the registration: create the device of a group on first use, note its model."""
        model_id = payload.get("modelId") if isinstance(payload, dict) else None
        if model_id is not None and not isinstance(model_id, str):
            raise Invalid("payload.modelId must be a string", field="payload.modelId")
        device = enrollment.device
        if device is None:
            group = enrollment.group
            if group is None or enrollment.derived_keys is None:
                raise Unauthorized("not enrolled", field="registrationId")
            try:
                device = await self.registry.register(
                    enrollment.account.id,
                    name=enrollment.registration_id,
                    device_id=enrollment.registration_id,
                    project=group["project"],
                    deployment=group["deployment"],
                    kind=DeviceKind.GATEWAY if group.get("isIoTEdgeCapable") else DeviceKind.DEVICE,
                    primary_key=enrollment.derived_keys[0],
                    secondary_key=enrollment.derived_keys[1],
                    provisioned=True,
                    model_id=model_id,
                    created_by=_made_by(group),
                )
            except Conflict:
                # Made meanwhile (a concurrent registration, or another face): it is this
                # registration's only if it is the group's device, i.e. in the group's account
                # with the keys derived from the group key. Anything else is not ours to
                # assign (device ids are global, another account may hold this one).
                found = await self.stores.devices.get(enrollment.registration_id)
                if found is None:
                    raise
                if found.account_id != enrollment.account.id or (
                    found.primary_key,
                    found.secondary_key,
                ) != tuple(enrollment.derived_keys):
                    raise Unauthorized(
                        "registration id is taken by another device", field="registrationId"
                    ) from None
                device = found
        changes = await self.templates.announced(device, model_id) if model_id else {}
        if not device.provisioned:
            changes["provisioned"] = True
        if changes:
            device = await self.registry.save(device, **changes)
        return device


def _located(principal: Principal, group: dict[str, Any]) -> Located:
    """Where a group (read from the caller's account) belongs."""
    project = group.get("project")
    return Located(principal.account_id, project if isinstance(project, str) else None)


def _made_by(group: dict[str, Any]) -> str:
    """`created_by` of the devices an enrollment group creates."""
    return f"enrollmentGroup:{group['enrollmentGroupId']}"


def _verifies(token: sas.SasToken, keys: tuple[str, str], resource: str, now: float) -> bool:
    for key in keys:
        try:
            sas.verify(token, key_b64=key, expected_resource=resource, now=now)
        except sas.SasError:
            continue
        return True
    return False


def new_operation_id() -> str:
    return "4.0000000000000000." + secrets.token_hex(16)
