"""Wire schemas of the IoT Central face (pydantic, at the edge only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

__all__ = [
    "ApiTokenCreate",
    "DeviceCreate",
    "DevicePatch",
    "PropertyPatch",
    "RoleAssignment",
]


class _Body(BaseModel):
    # IoT Central objects carry fields we do not model (etag, organizations, ...): ignore them.
    model_config = ConfigDict(extra="ignore")


class RoleAssignment(_Body):
    role: StrictStr = Field(description="An IoT Central role id, or its name (App Builder)")
    organization: StrictStr | None = None


class ApiTokenCreate(_Body):
    roles: list[RoleAssignment] = Field(min_length=1, max_length=1)
    expiry: StrictStr | None = Field(
        default=None, description="ISO-8601 expiry time; default one year from now"
    )


class DeviceCreate(_Body):
    displayName: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    template: StrictStr | None = Field(default=None, min_length=1, max_length=256)
    simulated: StrictBool = False
    enabled: StrictBool = True


class DevicePatch(_Body):
    displayName: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    template: StrictStr | None = Field(
        default=None, min_length=1, max_length=256, description="null unassigns the template"
    )
    simulated: StrictBool | None = None
    enabled: StrictBool | None = None


class PropertyPatch(_Body):
    value: Any = Field(description="The new desired value")
