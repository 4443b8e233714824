"""Wire schemas of the IoT Central face (pydantic, at the edge only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic.config import JsonDict

from thinghub.domain.dtdl import TEMPLATE_ID
from thinghub.faces.central.roles import ROLES

__all__ = [
    "READ_ONLY_DEVICE_FIELDS",
    "ApiTokenCreate",
    "DeviceCreate",
    "DevicePatch",
    "PropertyPatch",
    "RoleAssignment",
]


# The services check these (with messages naming the rule); the document states the rule.
TEMPLATE_ID_SCHEMA: JsonDict = {"pattern": "^" + TEMPLATE_ID.pattern + "$"}
ROLE_SCHEMA: JsonDict = {
    "enum": [name for role in ROLES for name in (role.id, role.name, *role.aliases)]
}


class _Body(BaseModel):
    # A field this face does not apply is a 400 naming it, never silently ignored (the
    # read-only fields of an object as GET shows it are declared where they may come back).
    model_config = ConfigDict(extra="forbid")


class RoleAssignment(_Body):
    role: StrictStr = Field(
        description="An IoT Central role id, or its name (App Builder)",
        json_schema_extra=ROLE_SCHEMA,
    )
    organization: None = Field(
        default=None, description="Organizations are not supported: only null is taken"
    )


class ApiTokenCreate(_Body):
    id: StrictStr | None = Field(default=None, description="Read-only: the path's id")
    roles: list[RoleAssignment] = Field(min_length=1, max_length=1)
    expiry: StrictStr | None = Field(
        default=None,
        description="ISO-8601 expiry time; default one year from now",
        json_schema_extra={"format": "date-time"},
    )


class _DeviceBody(BaseModel):
    """A device as GET shows it may come back: its read-only fields are taken when they hold
    what the device has (the face checks), `etag` is an If-Match, and any other field is a
    400 naming it (nothing is silently ignored)."""

    model_config = ConfigDict(extra="forbid")

    id: StrictStr | None = None
    etag: StrictStr | None = Field(default=None, description="As If-Match")
    provisioned: StrictBool | None = Field(default=None, description="Read-only")
    lastSeen: StrictStr | None = Field(default=None, description="Read-only")
    firmwareVersion: StrictStr | None = Field(default=None, description="Read-only")


# What a device body may hold only as it is (read-only), with GET's names.
READ_ONLY_DEVICE_FIELDS = ("id", "provisioned", "lastSeen", "firmwareVersion")


class DeviceCreate(_DeviceBody):
    displayName: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    template: StrictStr | None = Field(
        default=None, min_length=1, max_length=256, json_schema_extra=TEMPLATE_ID_SCHEMA
    )
    simulated: StrictBool = False
    enabled: StrictBool = True


class DevicePatch(_DeviceBody):
    displayName: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    template: StrictStr | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="null unassigns the template",
        json_schema_extra=TEMPLATE_ID_SCHEMA,
    )
    simulated: StrictBool | None = None
    enabled: StrictBool | None = None


class PropertyPatch(_Body):
    # GET's shape may come back: lastReportedTime describes that moment (any value is taken).
    lastReportedTime: StrictStr | None = None
    value: Any = Field(
        description="The new desired value (not null)", json_schema_extra={"not": {"type": "null"}}
    )
